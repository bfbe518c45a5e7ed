"""The TiledDiffusion MODEL patch: the canvas denoised in tiles (core.tiled_diffusion).

The patch sits on a clone of the model as keyed wrappers (comfy.patcher_extension), so it composes
with every sampler and with other packs' patches:
- CALC_COND_BATCH: where ComfyUI evaluates the model for cond and uncond on the whole canvas, we
  evaluate it on batches of tiles (cond and uncond still batched together) and fuse the results;
  CFG, post-CFG patches and the sampler itself see one canvas, as without us. RegionPrompt
  foregrounds are evaluated as lists of their own and blended over their list's result (also when
  the canvas fits in one tile);
- PREPARE_SAMPLING: ComfyUI sizes the model's memory for the whole canvas; the tiles need far less;
- OUTER_SAMPLE: per-run state (tile copies of ControlNets) starts and ends with each run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import comfy.model_management
import comfy.patcher_extension

from ..core import tiled_diffusion as td
from ..core.tiling import crop, tile_batches
from .regions import ForegroundRegions
from .tile_conds import ControlCache, TileConds

log = logging.getLogger("expanse")

WRAPPER_KEY = "expanse.tiled_diffusion"
WRAPPERS = comfy.patcher_extension.WrappersMP


@dataclass
class TiledDiffusionPatch:
    """The settings of one TiledDiffusion node, in latent px, and the wrappers that apply them."""
    method: str
    tile_h: int
    tile_w: int
    overlap: int
    tile_batch_size: int
    seed: int = 0
    unit: int = 1
    controls: ControlCache = field(default_factory=ControlCache, repr=False)
    _layouts: dict = field(default_factory=dict, repr=False)
    _said_untiled: bool = field(default=False, repr=False)
    _said_no_main: bool = field(default=False, repr=False)

    def install(self, model):
        """A clone of model with this patch (replacing an earlier TiledDiffusion's, not stacking)."""
        patched = model.clone()
        for kind, wrapper in ((WRAPPERS.CALC_COND_BATCH, self.calc_cond_batch),
                              (WRAPPERS.PREPARE_SAMPLING, self.prepare_sampling),
                              (WRAPPERS.OUTER_SAMPLE, self.outer_sample)):
            patched.remove_wrappers_with_key(kind, WRAPPER_KEY)
            patched.add_wrapper_with_key(kind, WRAPPER_KEY, wrapper)
        return patched

    def tiles_needed(self, height: int, width: int) -> bool:
        return self.tile_h < height or self.tile_w < width

    # --- wrappers -------------------------------------------------------------------------------

    def outer_sample(self, executor, *args, **kwargs):
        self.controls.clear()
        try:
            return executor(*args, **kwargs)
        finally:
            self.controls.clear()

    def prepare_sampling(self, executor, model, noise_shape, *args, **kwargs):
        _check_latent(model, noise_shape)
        if len(noise_shape) == 4 and self.tiles_needed(noise_shape[2], noise_shape[3]):
            tile_shape = (noise_shape[0] * self.tile_batch_size, noise_shape[1],
                          min(self.tile_h, noise_shape[2]), min(self.tile_w, noise_shape[3]))
            noise_shape = tile_shape
        return executor(model, noise_shape, *args, **kwargs)

    def calc_cond_batch(self, executor, model, conds, x_in, timestep, model_options):
        foregrounds = ForegroundRegions(conds) if x_in.ndim == 4 else None
        if not foregrounds:
            return self._calc_tiled(executor, model, conds, x_in, timestep, model_options)
        if foregrounds.missing_main and not self._said_no_main:  # once, not every step
            log.warning("RegionPrompt: a conditioning holds foreground regions but no main prompt; the canvas "
                        "outside them is left undrawn. Chain the regions from a prompt for the whole canvas")
            self._said_no_main = True
        outputs = self._calc_tiled(executor, model, foregrounds.evaluation_lists(), x_in, timestep, model_options)
        return foregrounds.composite(outputs, *x_in.shape[-2:])

    def _calc_tiled(self, executor, model, conds, x_in, timestep, model_options):
        if x_in.ndim != 4 or not self.tiles_needed(x_in.shape[-2], x_in.shape[-1]):
            if x_in.ndim == 4 and not self._said_untiled:
                log.info("TiledDiffusion: the %dx%d latent fits in one %dx%d tile; sampling it untiled",
                         x_in.shape[-1], x_in.shape[-2], self.tile_w, self.tile_h)
                self._said_untiled = True
            return executor(model, conds, x_in, timestep, model_options)
        height, width = x_in.shape[-2:]
        plan = self._layout(height, width, float(timestep.flatten()[0]), x_in)
        canvas = td.roll(x_in, plan.shift)
        tiles = TileConds(conds, height, width, plan.shift, self.controls, device=x_in.device)
        batches = tile_batches(plan.boxes, self.tile_batch_size, key=tiles.signature)

        def predict(boxes):
            x = torch.cat([crop(canvas, b) for b in boxes])
            t = timestep.repeat(len(boxes))
            out = executor(model, tiles.for_tiles(boxes, x_in.shape[0]), x, t, model_options)
            return [None if c is None else o for c, o in zip(conds, out)]

        fused = td.fuse(predict, batches, plan, len(conds), canvas,
                        tick=comfy.model_management.throw_exception_if_processing_interrupted)
        return [torch.zeros_like(x_in) if f is None else td.roll(f, plan.shift, back=True) for f in fused]

    def _layout(self, height: int, width: int, sigma: float, x: torch.Tensor) -> td.Layout:
        shift = (0, 0)
        if self.method == td.SHIFTED:
            shift = td.shift_for_step(self.seed, sigma, min(self.tile_h, height), min(self.tile_w, width), self.unit)
        key = (height, width, x.device, x.dtype)
        if key not in self._layouts:  # the boxes and weights do not change from step to step
            try:
                self._layouts = {key: td.layout(self.method, height, width, self.tile_h, self.tile_w, self.overlap,
                                                unit=self.unit, dtype=x.dtype, device=x.device)}
            except ValueError as e:  # a tile count past the bound, in latent px: say it in pixels' terms
                raise ValueError(f"TiledDiffusion: {e} (sizes in latent pixels)") from None
        base = self._layouts[key]
        return td.Layout(base.boxes, shift, base.weight, base.total)


def _check_latent(model, shape) -> None:
    """The latent the patched model is about to sample, checked before the first step: what would
    otherwise fail inside the model's first convolution, said in words."""
    latent_format = getattr(getattr(model, "model", None), "latent_format", None)
    dimensions = getattr(latent_format, "latent_dimensions", 2)
    if len(shape) - 2 != dimensions:
        raise ValueError(f"TiledDiffusion: the latent has shape {tuple(shape)} ({len(shape) - 2} spatial dimensions) "
                         f"but this model draws {dimensions}-dimensional latents; connect a latent made for this "
                         "model (Empty Latent Image, or VAE Encode of a picture)")
    if 0 in tuple(shape):
        raise ValueError(f"TiledDiffusion: the latent has shape {tuple(shape)}, which holds nothing; connect a "
                         "latent with at least one picture in its batch and a size above zero")
