"""TiledDiffusion: a MODEL patch that denoises the canvas in tiles (core.tiled_diffusion).

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
from comfy_api.latest import io

from ..core import tiled_diffusion as td
from .host import CATEGORY
from .region_prompt import ForegroundRegions
from .tile_conds import ControlCache, TileConds

log = logging.getLogger("expanse")

WRAPPER_KEY = "expanse.tiled_diffusion"
WRAPPERS = comfy.patcher_extension.WrappersMP


def model_geometry(model) -> tuple[int, int, int]:
    """(latent channels, latent downscale ratio, patch grid in latent px) read from the model:
    SD1.x/SDXL are (4, 8, 1), SD3 and Flux.1 (16, 8, 2)."""
    base = model.model
    fmt = base.latent_format
    channels = int(getattr(fmt, "latent_channels", 4))
    downscale = getattr(fmt, "spacial_downscale_ratio", 8)
    patch = getattr(base.diffusion_model, "patch_size", 1)
    if isinstance(patch, (tuple, list)):
        patch = patch[-1]
    return channels, int(downscale), max(1, int(patch or 1))


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
        batches = td.tile_batches(plan.boxes, self.tile_batch_size, key=tiles.signature)

        def predict(boxes):
            x = torch.cat([td.crop(canvas, b) for b in boxes])
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
            self._layouts = {key: td.layout(self.method, height, width, self.tile_h, self.tile_w, self.overlap,
                                            unit=self.unit, dtype=x.dtype, device=x.device)}
        base = self._layouts[key]
        return td.Layout(base.boxes, shift, base.weight, base.total)


# --- the node -------------------------------------------------------------------------------------

METHOD_TOOLTIP = (
    "multidiffusion: overlapping tiles averaged evenly; the overlap hides the seams.\n"
    "mixture_of_diffusers: overlapping tiles blended with Gaussian weights (centres count most); "
    "smoother blends at the same cost.\n"
    "shifted: non-overlapping tiles whose grid moves every step (SpotDiffusion); the cost of one "
    "pass over the canvas, seams averaged away over the steps. Fastest; give it 20+ steps.")


# Pixel ranges of the inputs validate_inputs checks itself.
INPUT_RANGES = {"tile_width": (64, 16384), "tile_height": (64, 16384), "overlap": (0, 8192)}


def _overlap_error(overlap: int, tile_width: int, tile_height: int) -> str:
    return (f"overlap ({overlap} px) must be smaller than the tile ({tile_width}x{tile_height} px); "
            f"lower overlap or raise tile_width/tile_height")


def _on_grid(name: str, value: int, grid: int) -> int:
    snapped = max(grid, round(value / grid) * grid)
    if snapped != value:
        log.warning("TiledDiffusion: %s %d px is not a multiple of this model's %d px grid; using %d",
                    name, value, grid, snapped)
    return snapped


class TiledDiffusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiledDiffusion",
            display_name="Tiled Diffusion (Expanse)",
            category=f"{CATEGORY}/sampling",
            description="Patches a model so any sampler denoises the canvas in tiles: canvases larger "
                        "than the model was trained for or than the GPU holds. Connect the output "
                        "MODEL to KSampler (or any sampler). Canvases that fit in one tile run untiled.",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch. The original is left unchanged."),
                io.Combo.Input("method", options=list(td.METHODS), default=td.MULTIDIFFUSION,
                               tooltip=METHOD_TOOLTIP),
                io.Int.Input("tile_width", default=768, min=INPUT_RANGES["tile_width"][0],
                             max=INPUT_RANGES["tile_width"][1], step=8,
                             tooltip="Tile width in pixels. Near the model's training size (512-768 for "
                                     "SD1.5, 1024 for SDXL): smaller tiles lose the composition, larger "
                                     "ones cost memory."),
                io.Int.Input("tile_height", default=768, min=INPUT_RANGES["tile_height"][0],
                             max=INPUT_RANGES["tile_height"][1], step=8,
                             tooltip="Tile height in pixels; see tile_width."),
                io.Int.Input("overlap", default=128, min=INPUT_RANGES["overlap"][0], max=INPUT_RANGES["overlap"][1],
                             step=8,
                             tooltip="Pixels shared by neighbouring tiles (multidiffusion and "
                                     "mixture_of_diffusers). More overlap hides seams better and costs "
                                     "more tiles; 64-128 suits most pictures. Ignored by shifted."),
                io.Int.Input("tile_batch_size", default=4, min=1, max=64,
                             tooltip="Tiles evaluated in one model call (cond and uncond together). "
                                     "Higher is faster until the GPU is full."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the shifted method's per-step tile offsets."),
            ],
            outputs=[io.Model.Output(tooltip="The patched model: connect it to a sampler.")],
        )

    @classmethod
    def validate_inputs(cls, tile_width=768, tile_height=768, overlap=128):
        # No **kwargs: ComfyUI skips its own min/max check for every input this signature takes,
        # and checks it for the rest; the three named here are range-checked below.
        numbers = {"tile_width": tile_width, "tile_height": tile_height, "overlap": overlap}
        for name, value in numbers.items():
            low, high = INPUT_RANGES[name]
            if isinstance(value, int) and not low <= value <= high:
                return f"{name} {value} is out of range; give {low} to {high} pixels"
        if all(isinstance(v, int) for v in numbers.values()):
            if overlap >= min(tile_width, tile_height):
                return _overlap_error(overlap, tile_width, tile_height)
        return True

    @classmethod
    def execute(cls, model, method, tile_width, tile_height, overlap, tile_batch_size, seed) -> io.NodeOutput:
        if method not in td.METHODS:
            raise ValueError(f"TiledDiffusion: method {method!r} is not one of {', '.join(td.METHODS)}")
        _, downscale, unit = model_geometry(model)
        grid = downscale * unit
        tile_w = _on_grid("tile_width", tile_width, grid)
        tile_h = _on_grid("tile_height", tile_height, grid)
        overlap_px = 0 if method == td.SHIFTED else _on_grid("overlap", overlap, grid) if overlap else 0
        if overlap_px >= min(tile_w, tile_h):
            raise ValueError(f"TiledDiffusion: {_overlap_error(overlap, tile_width, tile_height)}")
        patch = TiledDiffusionPatch(method, tile_h // downscale, tile_w // downscale, overlap_px // downscale,
                                    tile_batch_size, seed=seed, unit=unit)
        return io.NodeOutput(patch.install(model))
