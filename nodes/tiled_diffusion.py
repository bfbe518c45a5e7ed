"""TiledDiffusion: patches a MODEL so any sampler denoises the canvas in tiles
(runtime.diffusion_patch, core.tiled_diffusion)."""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..core import tiled_diffusion as td
from ..core.tiling import snap
from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.diffusion_patch import TiledDiffusionPatch
from ..runtime.geometry import model_geometry
from ..runtime.host import CATEGORY

log = logging.getLogger("expanse")

METHOD_TOOLTIP = (
    "multidiffusion: overlapping tiles averaged evenly; the overlap hides the seams.\n"
    "mixture_of_diffusers: overlapping tiles blended with Gaussian weights (centres count most); "
    "smoother blends at the same cost.\n"
    "shifted: non-overlapping tiles whose grid moves every step (SpotDiffusion); the cost of one "
    "pass over the canvas, seams averaged away over the steps. Fastest; give it 20+ steps.")


# Pixel ranges of the inputs validate_inputs checks itself.
INPUT_RANGES = {"tile_width": (64, 16384), "tile_height": (64, 16384), "overlap": (0, 8192)}


def _overlap_error(method: str, overlap: int, tile_width: int, tile_height: int) -> str | None:
    """Why this overlap cannot be used with these tiles (in pixels), or None. shifted ignores it."""
    if method == td.SHIFTED:
        return None
    try:
        td.check_overlap(tile_height, tile_width, overlap)
    except ValueError as e:
        return str(e)
    return None


def _on_grid(name: str, value: int, grid: int) -> int:
    snapped = snap(value, grid)
    if snapped != value:
        log.warning("TiledDiffusion: %s %d px is not a multiple of this model's %d px grid; using %d",
                    name, value, grid, snapped)
    return snapped


class TiledDiffusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseTiledDiffusion",
            search_aliases=["multidiffusion", "mixture of diffusers", "spotdiffusion", "tiled sampling",
                            "panorama", "tiled ksampler"],
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
    def validate_inputs(cls, method=td.MULTIDIFFUSION, tile_width=768, tile_height=768, overlap=128):
        # No **kwargs: ComfyUI skips its own checks for every input this signature takes, and
        # checks the rest; the four named here are checked below (values from links come to
        # execute, where checked_entry holds them to the schema).
        if isinstance(method, str) and method not in td.METHODS:
            return f"method {method!r} is not one of {', '.join(td.METHODS)}"
        numbers = {"tile_width": tile_width, "tile_height": tile_height, "overlap": overlap}
        for name, value in numbers.items():
            low, high = INPUT_RANGES[name]
            if isinstance(value, int) and not low <= value <= high:
                return f"{name} {value} is out of range; give {low} to {high} pixels"
        if all(isinstance(v, int) for v in numbers.values()) and isinstance(method, str):
            return _overlap_error(method, overlap, tile_width, tile_height) or True
        return True

    @classmethod
    @checked_entry
    def execute(cls, model, method, tile_width, tile_height, overlap, tile_batch_size, seed) -> io.NodeOutput:
        _, downscale, unit = model_geometry(model)
        grid = downscale * unit
        tile_w = _on_grid("tile_width", tile_width, grid)
        tile_h = _on_grid("tile_height", tile_height, grid)
        overlap_px = 0 if method == td.SHIFTED else _on_grid("overlap", overlap, grid) if overlap else 0
        problem = _overlap_error(method, overlap_px, tile_w, tile_h)
        if problem:
            raise ValueError(f"TiledDiffusion: {problem}")
        patch = TiledDiffusionPatch(method, tile_h // downscale, tile_w // downscale, overlap_px // downscale,
                                    tile_batch_size, seed=seed, unit=unit)
        return io.NodeOutput(patch.install(model))
