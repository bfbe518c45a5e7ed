"""ChessTileRedraw: upscale a picture, then redraw it tile by tile at low denoise, in chess order,
in batches, with seam-fix passes, the way Ultimate SD Upscale does, at a cost linear in the canvas
(runtime.redraw, core.chess_redraw).
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..core import chess_redraw as cr
from ..runtime import vae as runtime_vae
from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.custom_sampling import checked_sigmas, custom_sampling_inputs
from ..runtime.host import CATEGORY, output_read, sampling_inputs
from ..runtime.redraw import (LATENT_LANCZOS, LATENT_RESIZES, Redraw, checked_masks, redraw_mask,
                              upscaled_canvas)

NODE = "ChessTileRedraw"
# color_match's low frequencies: below a Gaussian of this many picture px (StableSR's wavelet colour
# fix, five levels of a dilated 3x3 blur, is one of about 13 px), in latent px for the redraw.
COLOUR_SIGMA_PX = 16

log = logging.getLogger("expanse")


class ChessTileRedraw(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseChessTileRedraw",
            search_aliases=["ultimate sd upscale", "tile upscale", "tiled upscale", "upscale", "tile redraw",
                            "usdu", "hires fix"],
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
                                              "float lanczos. With a latent, the latent is decoded, upscaled and "
                                              "encoded tile by tile (never a whole picture in memory)."),
                io.Combo.Input("vae_mode", options=list(runtime_vae.AUTO_MODES), default=runtime_vae.AUTO, optional=True,
                               tooltip="How the one encode and decode run (see Tiled VAE Decode). auto: exact on a GPU "
                                       "with room for its activations; otherwise exact up to 2048x2048 px while "
                                       "the VAE's global attention stays under a quarter of its work (SD's VAE: "
                                       "all of that range), else local_attention (linear time, close to exact) "
                                       "up to 4096x4096, sampled above (memory bounded by a full-resolution sample "
                                       "and the tile)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Where to redraw (white); elsewhere the picture is kept as upscaled, bit for "
                                      "bit, and tiles wholly outside are not sampled. Stretched over the picture. "
                                      "A latent's noise_mask counts too (with both, only where both allow)."),
                *custom_sampling_inputs("", "A schedule every tile runs exactly (BasicScheduler, a distilled "
                                            "model's few-step schedule, SplitSigmas...), as SamplerCustom takes it: "
                                            "it sets the steps and the strength, so steps, scheduler, denoise and "
                                            "seam_fix_denoise are not used."),
                io.Combo.Input("latent_resize", options=LATENT_RESIZES, default=LATENT_LANCZOS, optional=True,
                               tooltip="How a latent input is resized. latent lanczos: in latent space (fast). "
                                       "pixels: decoded, resized with float lanczos in pixels and encoded, tile by "
                                       "tile, never the whole picture (sharper; costs a decode and an encode). An "
                                       "upscale_model takes the pixel route either way."),
                io.Boolean.Input("noise_inversion", default=False, optional=True,
                                 tooltip="Start each tile from the noise the model inverts it to (its sampling "
                                         "run backwards with the tile's prompt), not from random noise: a redraw "
                                         "at 0.5-0.7 denoise then adds detail and keeps the composition. Costs "
                                         "one more model call per step and tile (the inversion runs unguided)."),
                io.Boolean.Input("color_match", default=True, optional=True,
                                 tooltip="Keep the picture's colours: each redrawn tile's low frequencies (its "
                                         "tint and shading, wider than about 40 px) are matched to the picture "
                                         "it was redrawn from, so colours do not drift from tile to tile; the "
                                         "detail the redraw adds stays. Turn off when the prompt should change "
                                         "colours."),
            ],
            outputs=[io.Image.Output("redrawn_image", display_name="image",
                                     tooltip="The redrawn picture, decoded only when something reads it (at poster "
                                             "sizes the decode takes minutes; chain the latent instead)."),
                     io.Latent.Output("redrawn_latent", display_name="latent", tooltip="Its latent, for chaining.")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],  # which outputs the prompt reads
        )

    @classmethod
    @checked_entry
    def execute(cls, model, positive, negative, vae, upscale_by=2.0, seed=0, steps=20, cfg=7.0,
                sampler_name="euler", scheduler="normal", denoise=0.35, tile_width=512, tile_height=512,
                padding=64, mask_feather=32, tile_batch_size=4, redraw_order=cr.CHESS, seam_fix=cr.SEAMS_NONE,
                seam_fix_denoise=0.3, seam_fix_width=64, seam_fix_feather=16, vae_mode=runtime_vae.AUTO, image=None,
                latent=None, upscale_model=None, latent_resize=LATENT_LANCZOS, mask=None, sampler=None,
                sigmas=None, noise_inversion=False, color_match=True) -> io.NodeOutput:
        if image is None and latent is None:
            raise ValueError(f"{NODE}: connect an image or a latent to upscale")
        if image is not None and latent is not None:
            raise ValueError(f"{NODE}: connect an image or a latent, not both")
        if latent is not None and latent["samples"].ndim != 4:
            raise ValueError(f"{NODE}: latent has shape {tuple(latent['samples'].shape)}; the redraw takes an image "
                             "latent (batch, channels, height, width), not a video's")
        sigmas = checked_sigmas(NODE, sigmas)
        noise_mask = latent.get("noise_mask") if latent is not None else None
        batch = (image if image is not None else latent["samples"]).shape[0]
        masks = checked_masks(NODE, mask, noise_mask, batch)
        limited = bool(masks)
        # The upscaled picture is kept only to put it back outside the mask in the image output.
        canvas, upscaled = upscaled_canvas(NODE, image, latent, vae, upscale_by, upscale_model, vae_mode,
                                           latent_resize, keep_pixels=limited and output_read(cls.hidden, 0))
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
        allowed = redraw_mask(masks, height, width)
        redraw = Redraw(model, positive, negative, canvas, seed=seed, steps=steps, cfg=cfg,
                        sampler_name=sampler_name, scheduler=scheduler, allowed=allowed, sampler=sampler,
                        sigmas=sigmas, noise_inversion=bool(noise_inversion),
                        colour_sigma=COLOUR_SIGMA_PX / ratio if color_match else 0.0)
        redraw.run(redraws, seams, denoise=denoise, seam_fix_denoise=seam_fix_denoise, batch_size=tile_batch_size)
        image_out = None
        if output_read(cls.hidden, 0):
            image_out = runtime_vae.decode(NODE, vae, canvas, mode=vae_mode)
            if upscaled is not None:  # outside the mask, the upscaled picture itself, not its VAE round trip
                inside = redraw_mask(masks, *upscaled.shape[-2:]).movedim(1, -1)
                image_out = upscaled.movedim(1, -1).to(image_out) * (1 - inside) + image_out * inside
        else:
            log.info("%s: nothing reads the image output; the latent is not decoded", NODE)
        # A latent's noise_mask goes on with it, as KSampler passes it on: the next redraw of a
        # chain keeps to the same part of the picture.
        return io.NodeOutput(image_out, dict(latent or {}, samples=canvas))
