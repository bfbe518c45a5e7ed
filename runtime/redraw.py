"""Ultimate-SD-Upscale-style redraw as ComfyUI runs it (core.chess_redraw has the geometry): the
picture upscaled once and encoded once with the tiled VAE, then redrawn in latent space batch by
batch. Each batch of tiles is one sampling run over the tiles' context regions, with the paste mask
as the noise mask (only the feathered tile changes) and the conditioning cut to each region
(tile_conds); each result is pasted back through its own region-sized mask.
"""
from __future__ import annotations

import torch
import comfy.sample

from ..core import chess_redraw as cr
from ..core import latent_resample as lr
from ..core.tiling import crop, snap, tile_batches
from . import vae as runtime_vae
from .host import progress_ticker
from .tile_conds import ConditioningTiles, ControlCache


def upscaled_canvas(node: str, image, latent, vae, upscale_by: float, upscale_model, vae_mode: str) -> torch.Tensor:
    """The latent of the picture upscaled once: an IMAGE is resized in pixels (by the upscale model,
    or float lanczos) and encoded with the tiled VAE; a LATENT is resized with float lanczos."""
    ratio = vae.spacial_compression_encode()
    if image is not None:
        pixels = image.movedim(-1, 1)
        height, width = snap(pixels.shape[-2] * upscale_by, ratio), snap(pixels.shape[-1] * upscale_by, ratio)
        if upscale_model is not None:
            from comfy_extras.nodes_upscale_model import ImageUpscaleWithModel

            pixels = ImageUpscaleWithModel.execute(upscale_model, image).result[0].movedim(-1, 1)
        if pixels.shape[-2:] != (height, width):
            pixels = lr.resample(pixels.float(), height, width, "lanczos").clamp(0, 1)
        return runtime_vae.encode(node, vae, pixels.movedim(1, -1), mode=vae_mode)
    z = latent["samples"]
    height, width = snap(z.shape[-2] * upscale_by, 1), snap(z.shape[-1] * upscale_by, 1)
    return lr.resample(z, height, width, "lanczos")


class Redraw:
    """One redraw run's settings and the sampling of a batch of patches."""

    def __init__(self, model, positive, negative, canvas, *, seed, steps, cfg, sampler_name, scheduler):
        self.model, self.canvas = model, canvas
        self.seed, self.steps, self.cfg = seed, steps, cfg
        self.sampler_name, self.scheduler = sampler_name, scheduler
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
