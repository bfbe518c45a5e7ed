"""ChessTileRedraw: upscale a picture, then redraw it tile by tile at low denoise, in chess order,
in batches, with seam-fix passes, the way Ultimate SD Upscale does, at a cost linear in the canvas.

The picture is upscaled once, encoded once with the tiled VAE, redrawn in latent space, and
decoded once. Each batch of tiles is one sampling run over the tiles' context regions, with the
paste mask as the noise mask (only the feathered tile changes) and the conditioning cut to each
region (nodes.tile_conds); each result is pasted back through its own region-sized mask.
"""
from __future__ import annotations

import torch
import comfy.sample
from comfy_api.latest import io

from ..core import chess_redraw as cr
from ..core import latent_resample as lr
from ..core import tiled_vae
from ..core.tiled_diffusion import crop, tile_batches
from ..core.vae_program import UnsupportedVAE
from .host import CATEGORY, progress_ticker, sampling_inputs
from .tile_conds import ConditioningTiles, ControlCache
from .tiled_vae import (MODES as TILED_VAE_MODES, TiledVAEDecode, TiledVAEEncode, compile_program,
                        exact_parks_on_device)

NODE = "ChessTileRedraw"

VAE_AUTO = "auto"
VAE_MODES = (VAE_AUTO, *TILED_VAE_MODES)
# auto picks the tiled VAE mode by the upscaled picture's size. Exact mode runs the VAE's mid-block
# attention over the whole latent, a share of the work that grows with the area (SD's decoder: 5%
# at 1024 px, 18% at 2048, 47% at 4096; the demo VAE's: 22%, 53%, 82%), and parks full-resolution
# activations in RAM (about 10 GB at 2048x2048 px for SD's VAE in float32). local_attention keeps
# the exact statistics with windowed attention (linear time, the same RAM); fast bounds the RAM.
# On a GPU that holds those activations, attention is a small cost and exact is both the fastest
# and the best: auto takes it whatever the size.
AUTO_EXACT_MAX_PIXELS = 2048 * 2048
AUTO_EXACT_MAX_ATTENTION_SHARE = 0.25
AUTO_LOCAL_MAX_PIXELS = 4096 * 4096
# local_attention: 256 px tiles each attending to a 768 px window (36.7 dB against exact with the
# demo VAE, at 0.6x exact's time at 1024 px on a CPU); fast: 1024 px tiles (its memory bound) with
# the VAE nodes' default padding.
LOCAL_ATTENTION_TILE_PX, LOCAL_ATTENTION_MARGIN_PX = 256, 256
FAST_TILE_PX = 1024


def vae_mode_for(mode: str, vae, height_px: int, width_px: int, which: str) -> str:
    """The tiled VAE mode for the encode or decode (`which`: "encoder" or "decoder") of a picture
    of this size. auto is exact on a GPU that holds exact mode's activations at that moment (the
    UNet may hold some of its memory at one and not the other); elsewhere exact while the picture
    is at most AUTO_EXACT_MAX_PIXELS and global attention at most AUTO_EXACT_MAX_ATTENTION_SHARE
    of the decoder's work, local_attention up to AUTO_LOCAL_MAX_PIXELS, fast above."""
    if mode != VAE_AUTO:
        return mode
    try:
        if exact_parks_on_device(vae, height_px, width_px, which):
            return "exact"
        area = height_px * width_px
        if area > AUTO_LOCAL_MAX_PIXELS:
            return "fast"
        if area > AUTO_EXACT_MAX_PIXELS:
            return "local_attention"
        decoder = compile_program(vae, "decoder")
    except UnsupportedVAE:
        return "exact"  # the VAE nodes fall back to ComfyUI's own tiled path, whatever the mode
    ratio = vae.spacial_compression_decode()
    share = tiled_vae.global_attention_share(decoder, height_px // ratio, width_px // ratio)
    return "exact" if share <= AUTO_EXACT_MAX_ATTENTION_SHARE else "local_attention"


def _vae_settings(vae_mode: str, vae, height_px: int, width_px: int, which: str) -> dict:
    """TiledVAEEncode/TiledVAEDecode's settings for a picture of this size."""
    mode = vae_mode_for(vae_mode, vae, height_px, width_px, which)
    if mode == "local_attention":
        return {"mode": mode, "tile_size": LOCAL_ATTENTION_TILE_PX, "padding": LOCAL_ATTENTION_MARGIN_PX}
    return {"mode": mode, "tile_size": FAST_TILE_PX if mode == "fast" else 0}


def upscaled_canvas(image, latent, vae, upscale_by: float, upscale_model, vae_mode: str) -> torch.Tensor:
    """The latent of the picture upscaled once: an IMAGE is resized in pixels (by the upscale model,
    or float lanczos) and encoded with the tiled VAE; a LATENT is resized with float lanczos."""
    ratio = vae.spacial_compression_encode()
    if image is not None:
        pixels = image.movedim(-1, 1)
        height = max(ratio, round(pixels.shape[-2] * upscale_by / ratio) * ratio)
        width = max(ratio, round(pixels.shape[-1] * upscale_by / ratio) * ratio)
        if upscale_model is not None:
            from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel

            pixels = ImageUpscaleWithModel.execute(upscale_model, image).result[0].movedim(-1, 1)
        if pixels.shape[-2:] != (height, width):
            pixels = lr.resample(pixels.float(), height, width, "lanczos").clamp(0, 1)
        return TiledVAEEncode.execute(pixels=pixels.movedim(1, -1), vae=vae,
                                      **_vae_settings(vae_mode, vae, height, width, "encoder")).result[0]["samples"]
    z = latent["samples"]
    height, width = max(1, round(z.shape[-2] * upscale_by)), max(1, round(z.shape[-1] * upscale_by))
    return lr.resample(z, height, width, "lanczos")


class Redraw:
    """One redraw run's settings and the sampling of a batch of patches."""

    def __init__(self, model, positive, negative, canvas, *, seed, steps, cfg, sampler_name, scheduler):
        self.model, self.canvas = model, canvas
        self.seed, self.steps, self.cfg = seed, steps, cfg
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.controls = ControlCache()
        self.conds = ConditioningTiles([positive, negative], canvas.shape[-2], canvas.shape[-1], self.controls)

    def run_pass(self, patches: list[cr.Patch], denoise: float, batch_size: int, tick) -> None:
        """Redraws the patches of one pass, batch by batch. Every patch samples the canvas as the
        pass found it (a pass is one parallel step: the second chess pass sees all of the first),
        so how the patches are batched cannot change the picture."""
        batches = tile_batches(range(len(patches)), batch_size, key=lambda i: self.conds.signature(patches[i].region))
        per = self.canvas.shape[0]
        source = self.canvas.clone()  # one latent-sized copy per pass, not per tile
        for indices in batches:
            batch = [patches[i] for i in indices]
            result = self._sample(source, batch, denoise)
            for k, patch in enumerate(batch):
                cr.paste(self.canvas, patch, result[k * per:(k + 1) * per])
                tick()

    def _sample(self, source: torch.Tensor, batch: list[cr.Patch], denoise: float) -> torch.Tensor:
        per = source.shape[0]
        regions = [p.region for p in batch]
        latent = torch.cat([crop(source, r) for r in regions])
        # Each patch's noise comes from the seed and its place on the grid, never from its batch.
        noise = torch.cat([comfy.sample.prepare_noise(crop(source, p.region), cr.patch_seed(self.seed, p.key))
                           for p in batch])
        mask = torch.cat([p.mask.expand(per, 1, *p.mask.shape) for p in batch])
        positive, negative = self.conds.for_tiles(regions, per)
        return comfy.sample.sample(self.model, noise, self.steps, self.cfg, self.sampler_name, self.scheduler,
                                   positive, negative, latent, denoise=denoise, noise_mask=mask,
                                   disable_pbar=True, seed=self.seed)


class ChessTileRedraw(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Chess Tile Redraw (Expanse)",
            category=f"{CATEGORY}/upscale",
            description="Upscales a picture and redraws it tile by tile at low denoise (Ultimate SD Upscale's "
                        "technique): tiles in chess order and in batches, seams fixed in batched passes, the "
                        "picture encoded and decoded once with the tiled VAE. Cost grows linearly with the canvas.",
            inputs=[
                io.Model.Input("model", tooltip="The model that redraws the tiles."),
                io.Conditioning.Input("positive", tooltip="What the picture shows; cut to each tile (regions, "
                                                          "masks and ControlNet hints included)."),
                io.Conditioning.Input("negative", tooltip="What to avoid."),
                io.Vae.Input("vae", tooltip="Encodes the upscaled picture once and decodes the result once, tiled."),
                io.Float.Input("upscale_by", default=2.0, min=1.0, max=8.0, step=0.05,
                               tooltip="Resize factor before the redraw; 2 per run is the usual step."),
                *sampling_inputs("Each tile's noise comes from this and its place on the grid.",
                                 "Sampling steps per tile."),
                io.Float.Input("denoise", default=0.35, min=0.0, max=1.0, step=0.01,
                               tooltip="How much each tile is redrawn: 0.2-0.4 adds detail and keeps the picture."),
                io.Int.Input("tile_width", default=512, min=64, max=8192, step=8,
                             tooltip="Tile width in pixels (512 for SD1.5, 768-1024 for SDXL)."),
                io.Int.Input("tile_height", default=512, min=64, max=8192, step=8, tooltip="Tile height in pixels."),
                io.Int.Input("padding", default=64, min=0, max=1024, step=8,
                             tooltip="Context in pixels sampled around each tile (kept, not redrawn)."),
                io.Int.Input("mask_feather", default=32, min=0, max=512, step=8,
                             tooltip="Pixels over which a tile's result fades into its neighbours (at most padding)."),
                io.Int.Input("tile_batch_size", default=4, min=1, max=64,
                             tooltip="Tiles sampled together. Higher is faster until the GPU is full; the "
                                     "result does not depend on it."),
                io.Combo.Input("redraw_order", options=list(cr.ORDERS), default=cr.CHESS,
                               tooltip="chess: alternate tiles, then the others (no two touching tiles in one "
                                       "batch). linear: reading order. none: only the seam fix."),
                io.Combo.Input("seam_fix", options=list(cr.SEAM_MODES), default=cr.SEAMS_NONE,
                               tooltip="Redraw the tile borders afterwards: band (a strip on each border), "
                                       "half_tile (tiles centred on the borders), half_tile_intersections (and "
                                       "on the corners)."),
                io.Float.Input("seam_fix_denoise", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Denoise of the seam-fix passes."),
                io.Int.Input("seam_fix_width", default=64, min=8, max=1024, step=8,
                             tooltip="Width in pixels of the band seam fix."),
                io.Int.Input("seam_fix_feather", default=16, min=0, max=512, step=8,
                             tooltip="Pixels over which a seam patch fades out."),
                io.Image.Input("image", optional=True, tooltip="The picture to upscale (or connect a latent)."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Or a latent to upscale, e.g. from Progressive Grow Sampler."),
                io.UpscaleModel.Input("upscale_model", optional=True,
                                      tooltip="An upscale model (ESRGAN...) for the pixel resize; without it, "
                                              "float lanczos."),
                io.Combo.Input("vae_mode", options=list(VAE_MODES), default=VAE_AUTO, optional=True,
                               tooltip="How the one encode and decode run (see Tiled VAE Decode). auto: exact on a GPU "
                                       "with room for its activations; otherwise exact up to 2048x2048 px while "
                                       "the VAE's global attention stays under a quarter of its work (SD's VAE: "
                                       "all of that range), else local_attention (linear time, close to exact) "
                                       "up to 4096x4096, fast above (bounded memory)."),
            ],
            outputs=[io.Image.Output("IMAGE", tooltip="The redrawn picture."),
                     io.Latent.Output("LATENT", tooltip="Its latent, for chaining.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, upscale_by=2.0, seed=0, steps=20, cfg=7.0,
                sampler_name="euler", scheduler="normal", denoise=0.35, tile_width=512, tile_height=512,
                padding=64, mask_feather=32, tile_batch_size=4, redraw_order=cr.CHESS, seam_fix=cr.SEAMS_NONE,
                seam_fix_denoise=0.3, seam_fix_width=64, seam_fix_feather=16, vae_mode=VAE_AUTO, image=None,
                latent=None, upscale_model=None) -> io.NodeOutput:
        if image is None and latent is None:
            raise ValueError(f"{NODE}: connect an image or a latent to upscale")
        if image is not None and latent is not None:
            raise ValueError(f"{NODE}: connect an image or a latent, not both")
        if vae_mode not in VAE_MODES:
            raise ValueError(f"{NODE}: vae_mode must be one of {', '.join(VAE_MODES)}, got {vae_mode!r}")
        canvas = upscaled_canvas(image, latent, vae, upscale_by, upscale_model, vae_mode)
        if canvas.shape[1] != vae.latent_channels:
            raise ValueError(f"{NODE}: the latent has {canvas.shape[1]} channels but the vae takes "
                             f"{vae.latent_channels}; connect the VAE of the model the latent came from")
        ratio = vae.spacial_compression_encode()
        height, width = canvas.shape[-2:]
        tile_h, tile_w = max(1, tile_height // ratio), max(1, tile_width // ratio)
        if tile_h > height and tile_w > width:
            raise ValueError(f"{NODE}: the tile ({tile_width}x{tile_height} px) is larger than the upscaled picture "
                             f"({width * ratio}x{height * ratio} px); lower tile_width/tile_height")
        pad, feather = padding // ratio, min(mask_feather, padding) // ratio
        redraws = cr.redraw_passes(height, width, tile_h, tile_w, pad, feather, redraw_order)
        seams = cr.seam_passes(height, width, tile_h, tile_w, seam_fix, seam_fix_width // ratio,
                               seam_fix_feather // ratio)
        tick = progress_ticker(sum(len(p) for p in redraws + seams))
        redraw = Redraw(model, positive, negative, canvas, seed=seed, steps=steps, cfg=cfg,
                        sampler_name=sampler_name, scheduler=scheduler)
        for patches in redraws:
            redraw.run_pass(patches, denoise, tile_batch_size, tick)
        for patches in seams:
            redraw.run_pass(patches, seam_fix_denoise, tile_batch_size, tick)
        image_out = TiledVAEDecode.execute(samples={"samples": canvas}, vae=vae,
                                           **_vae_settings(vae_mode, vae, height * ratio, width * ratio,
                                                           "decoder")).result[0]
        out_latent = dict(latent or {}, samples=canvas)
        out_latent.pop("noise_mask", None)
        return io.NodeOutput(image_out, out_latent)
