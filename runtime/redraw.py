"""Ultimate-SD-Upscale-style redraw as ComfyUI runs it (core.chess_redraw has the geometry): the
picture upscaled once and encoded once with the tiled VAE (a latent upscaled in latent space, or in
pixels tile by tile: core.pixel_upscale), then redrawn in latent space batch by batch. Each batch of tiles is one sampling run over the tiles' context regions, with the paste mask
as the noise mask (only the feathered tile changes) and the conditioning cut to each region
(tile_conds); each result is pasted back through its own region-sized mask.
"""
from __future__ import annotations

import torch
import comfy.model_management as mm
import comfy.sample

from ..core import chess_redraw as cr
from ..core.colour_match import matched_colours
from ..core import latent_resample as lr
from ..core import vae_runner
from ..core.pixel_upscale import PixelRoute
from ..core.vae_program import UnsupportedVAE
from ..core.tiling import snap, tile_batches
from . import vae as runtime_vae
from . import custom_sampling
from .noise_inversion import inverted_noise
from .host import progress_ticker
from .tile_conds import ConditioningTiles, ControlCache

# How a LATENT input is resized: appended, never reordered (saved workflows keep their values).
LATENT_LANCZOS, PIXELS = "latent lanczos", "pixels"
LATENT_RESIZES = [LATENT_LANCZOS, PIXELS]
# Source pixels an upscale model reads around each window on the pixel route (its context), and
# the context decoded and encoded around each window (the tiled VAE nodes' padding defaults).
MODEL_MARGIN_PX = 16
DECODE_PADDING_PX, ENCODE_PADDING_PX = 96, 64


def upscaled_canvas(node: str, image, latent, vae, upscale_by: float, upscale_model, vae_mode: str,
                    latent_resize: str = LATENT_LANCZOS, keep_pixels: bool = False):
    """(latent, pixels): the latent of the picture upscaled once, and with an IMAGE and keep_pixels
    the upscaled picture itself (B, C, H, W; else None). An IMAGE is resized in pixels (by the
    upscale model, or float lanczos) and encoded with the tiled VAE; a LATENT is resized with float
    lanczos, or, with an upscale model or latent_resize "pixels", in pixels tile by tile
    (pixel_route)."""
    if latent_resize not in LATENT_RESIZES:
        raise ValueError(f"{node}: latent_resize is {latent_resize!r}; it must be one of {', '.join(LATENT_RESIZES)}")
    ratio = vae.spacial_compression_encode()
    if image is not None:
        pixels = image.movedim(-1, 1)
        height, width = snap(pixels.shape[-2] * upscale_by, ratio), snap(pixels.shape[-1] * upscale_by, ratio)
        if upscale_model is not None:
            from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel

            pixels = ImageUpscaleWithModel.execute(upscale_model, image).result[0].movedim(-1, 1)
        if pixels.shape[-2:] != (height, width):
            pixels = lr.resample(pixels.float(), height, width, "lanczos").clamp(0, 1)
        return runtime_vae.encode(node, vae, pixels.movedim(1, -1), mode=vae_mode), pixels if keep_pixels else None
    z = latent["samples"]
    height, width = snap(z.shape[-2] * upscale_by, 1), snap(z.shape[-1] * upscale_by, 1)
    if upscale_model is not None or latent_resize == PIXELS:
        return pixel_route(node, z, vae, (height, width), upscale_model), None
    return lr.resample(z, height, width, "lanczos"), None


def _enlarge_with(upscale_model):
    """The upscale model as core.pixel_upscale's enlarge: (C, h, w) pixels in, scaled pixels out."""
    from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel

    def enlarge(pixels: torch.Tensor) -> torch.Tensor:
        image = pixels.movedim(0, -1).unsqueeze(0)
        return ImageUpscaleWithModel.execute(upscale_model, image).result[0][0].movedim(-1, 0).float().cpu()
    return enlarge


def pixel_route(node: str, z: torch.Tensor, vae, target_hw: tuple[int, int], upscale_model) -> torch.Tensor:
    """z upscaled to target_hw (latent pixels) in pixel space, tile by tile (core.pixel_upscale):
    never a picture of the whole canvas. Statistics from the sampled estimator, tiles and padding as
    the tiled VAE's sampled mode has them; an fp16 overflow is redone in float32."""
    if z.shape[1] != vae.latent_channels:
        raise ValueError(f"{node}: latent has {z.shape[1]} channels but the vae takes {vae.latent_channels}; "
                         "connect the VAE of the model the latent came from")
    try:
        decoder = runtime_vae.compile_program(vae, "decoder")
        encoder = runtime_vae.compile_program(vae, "encoder")
    except UnsupportedVAE as e:
        raise ValueError(f"{node}: a latent resized in pixels is decoded and encoded tile by tile, and this VAE's "
                         f"architecture is not one the tiled path understands ({e}); set latent_resize to "
                         f"{LATENT_LANCZOS!r} and disconnect upscale_model, or connect the image instead") from e
    factor = int(getattr(upscale_model, "scale", 1)) if upscale_model is not None else 1
    mm.load_models_gpu([vae.patcher])  # before the estimator's tile is chosen from free memory
    route = PixelRoute(decoder, encoder, to_pixels=lambda t: vae.process_output(t),
                       from_pixels=lambda t: vae.process_input(t),
                       enlarge=_enlarge_with(upscale_model) if upscale_model is not None else None,
                       factor=factor, margin_px=MODEL_MARGIN_PX if upscale_model is not None else 0,
                       decode_padding_px=DECODE_PADDING_PX, encode_padding_px=ENCODE_PADDING_PX,
                       tile_px=runtime_vae.SAMPLED_TILE_PX,
                       sample=runtime_vae.estimator_sample(vae, decoder, encoder))
    dtype = vae.vae_dtype
    source = z.to(mm.intermediate_device(), torch.float32)
    while True:
        tick = progress_ticker(z.shape[0] * route.steps(tuple(z.shape[-2:]), target_hw))
        try:
            return route.run(source, target_hw, device=vae.device, dtype=dtype, tick=tick)
        except vae_runner.NonFiniteActivation:
            dtype = runtime_vae.float32_after_overflow(node, dtype)


def checked_masks(node: str, mask, noise_mask, batch: int) -> list[torch.Tensor]:
    """The MASK input and the latent's noise_mask that are given, each as (batch or 1, 1, h, w)
    floats in 0..1, or a message naming the bad one (checked before any upscaling work)."""
    masks = []
    for name, m in (("mask", mask), ("the latent's noise_mask", noise_mask)):
        if m is None:
            continue
        if m.ndim in (2, 3, 4) and m.numel() > 0:
            m = m.float().reshape(-1, 1, *m.shape[-2:])
        if m.ndim != 4 or m.numel() == 0 or m.shape[1] != 1 or m.shape[0] not in (1, batch):
            raise ValueError(f"{node}: {name} has shape {tuple(m.shape)}; it must be one mask (height, width) or "
                             f"one per picture of the batch ({batch})")
        if not torch.isfinite(m).all():
            raise ValueError(f"{node}: {name} holds NaN or infinite values; connect a mask of values 0 to 1")
        masks.append(m.clamp(0, 1))
    return masks


def redraw_mask(masks: list[torch.Tensor], height: int, width: int) -> torch.Tensor | None:
    """Where the redraw may change the picture, (batch or 1, 1, height, width): checked_masks'
    masks stretched over the picture, multiplied (with both, only where both allow), or None when
    there are none. On the latent grid for the redraw, on the pixel grid for the composite of the
    image output."""
    allowed = None
    for m in masks:
        m = torch.nn.functional.interpolate(m, size=(height, width), mode="bilinear", align_corners=False,
                                            antialias=m.shape[-2] > height or m.shape[-1] > width)
        allowed = m if allowed is None else allowed * m
    return allowed


class Redraw:
    """One redraw run's settings and the sampling of a batch of patches."""

    def __init__(self, model, positive, negative, canvas, *, seed, steps, cfg, sampler_name, scheduler,
                 allowed: torch.Tensor | None = None, sampler=None, sigmas: torch.Tensor | None = None,
                 noise_inversion: bool = False, colour_sigma: float = 0.0):
        """allowed: where the picture may change, canvas-sized (batch or 1, 1, height, width), or
        None for everywhere (redraw_mask makes it from a MASK and a latent's noise_mask).
        sampler (a SAMPLER) replaces sampler_name; sigmas (SIGMAS) the schedule that steps,
        scheduler and each pass's denoise make: every tile runs exactly them, as SamplerCustom does.
        noise_inversion: each patch starts from the noise its own content inverts to
        (runtime.noise_inversion), not from seeded random noise. colour_sigma: above 0, each result's
        low frequencies (a Gaussian of that many latent px) are the region's as the pass read it
        (core.colour_match)."""
        self.model, self.canvas, self.allowed = model, canvas, allowed
        self.seed, self.steps, self.cfg = seed, steps, cfg
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.sampler, self.sigmas, self.noise_inversion = sampler, sigmas, noise_inversion
        self.colour_sigma = colour_sigma
        self.controls = ControlCache()
        self.conds = ConditioningTiles([positive, negative], canvas.shape[-2], canvas.shape[-1], self.controls)

    def run(self, redraws: list[list[cr.Patch]], seams: list[list[cr.Patch]], *, denoise: float,
            seam_fix_denoise: float, batch_size: int) -> None:
        """The redraw passes, then the seam-fix passes, on one progress bar."""
        tick = progress_ticker(sum(len(p) for p in redraws + seams))
        for patches in redraws:
            self.run_pass(patches, denoise, batch_size, tick)
        for patches in seams:
            self.run_pass(patches, seam_fix_denoise, batch_size, tick)

    def run_pass(self, patches: list[cr.Patch], denoise: float, batch_size: int, tick) -> None:
        """Redraws the patches of one pass, batch by batch. Every patch samples the canvas as the
        pass found it (a pass is one parallel step: the second chess pass sees all of the first),
        so how the patches are batched cannot change the picture (cr.PassSource keeps what a
        patch's context would read changed, not a copy of the canvas)."""
        if self.allowed is not None:
            limited = [cr.within(p, self.allowed) for p in patches]
            for _ in range(limited.count(None)):  # outside the mask: not sampled at all
                tick()
            patches = [p for p in limited if p is not None]
        batches = tile_batches(range(len(patches)), batch_size, key=lambda i: self.conds.signature(patches[i].region))
        per = self.canvas.shape[0]
        source = cr.PassSource(self.canvas, patches)
        for indices in batches:
            batch = [patches[i] for i in indices]
            crops = [source.read(i) for i in indices]
            result = self._sample(crops, batch, denoise)
            for k, patch in enumerate(batch):
                redrawn = result[k * per:(k + 1) * per]
                if self.colour_sigma > 0:
                    redrawn = matched_colours(redrawn, crops[k], self.colour_sigma)
                cr.paste(self.canvas, patch, redrawn)
                tick()

    def _sample(self, crops: list[torch.Tensor], batch: list[cr.Patch], denoise: float) -> torch.Tensor:
        per = self.canvas.shape[0]
        regions = [p.region for p in batch]
        latent = torch.cat(crops)
        mask = torch.cat([p.mask.expand(per, 1, *p.mask.shape[-2:]) for p in batch])
        positive, negative = self.conds.for_tiles(regions, per)
        sigmas = self.sigmas
        if self.noise_inversion:
            if sigmas is None:  # the schedule KSampler would run, made here so the inversion runs it too
                sigmas = custom_sampling.schedule(self.model, steps=self.steps, sampler_name=self.sampler_name,
                                                  scheduler=self.scheduler, denoise=denoise)
            if len(sigmas) < 2:  # denoise 0: nothing is sampled, so there is nothing to invert
                return latent
            # The whole region is inverted, context too: the sampler pins the context to the
            # source noised with this noise, so it must be the context's own.
            noise = inverted_noise(self.model, latent, positive, negative, sigmas, seed=self.seed)
        else:
            # Each patch's noise comes from the seed and its place on the grid, never from its batch.
            noise = torch.cat([comfy.sample.prepare_noise(c, cr.patch_seed(self.seed, p.key))
                               for c, p in zip(crops, batch)])
        return custom_sampling.sample(self.model, noise, latent, positive, negative, steps=self.steps, cfg=self.cfg,
                                      sampler_name=self.sampler_name, scheduler=self.scheduler, denoise=denoise,
                                      sampler=self.sampler, sigmas=sigmas, noise_mask=mask, disable_pbar=True,
                                      seed=self.seed)[0]
