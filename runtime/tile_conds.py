"""ComfyUI conditioning cut to tiles: what a tiled sampler hands the model for a batch of tiles.

At sampling time ComfyUI's conds are dicts holding `model_conds` (cross-attention, and spatial
ones such as an inpainting model's c_concat), optionally an `area` and a `mask` (already resized to
the latent), and a `control` chain (ControlNet, T2I-Adapter). For a batch of equal-sized tiles
stacked along the batch dimension (tile by tile, each tile's B samples together) this module
builds conds that:

- crop every spatial tensor (masks, noise-shaped conds, list-held reference latents, control
  hints) to each tile, instead of handing every tile the whole canvas squeezed;
- turn area and mask conds into the tile's part of their canvas weight (ComfyUI's edge ramp
  included), with the area narrowed to the part inside the tile, and skip a cond for a tile it
  misses;
- keep cond and uncond batchable together, as ComfyUI batches them.

TiledDiffusion uses it on the conds a sampler has already prepared for the canvas (TileConds);
ChessTileRedraw, which runs a sampler per batch of regions, on the CONDITIONING the user wired
(ConditioningTiles): the same cutting, plus fitting masks and percentage areas to the canvas
first, as ComfyUI's sampler would.
"""
from __future__ import annotations

from typing import Sequence

import torch
import comfy.conds
import comfy.utils

from ..core.tiled_diffusion import area_mult, nonzero_box, roll
from ..core.tiling import Box, crop
from .compat import copy_control
from .regions import REGION_KEY

SKIP = "skip"  # the signature of a cond that misses a tile
# The smallest area a cond may have within a tile, in latent px (regions.MIN_AREA_PX on SD's 8x
# VAE): ComfyUI crops the model's input to a cond's area, and SD1.5's UNet cannot convolve a crop
# under 8 latent px once it has halved it three times. The mask still weighs the cond inside it.
MIN_AREA = 8


def spatial_scale(t: torch.Tensor, height: int, width: int) -> int | None:
    """How many times finer than the latent canvas t's last two dims are (1 for latent-sized,
    8 for pixel-sized), or None when t is not laid out on the canvas."""
    if t.ndim < 3 or t.shape[-2] % height or t.shape[-1] % width:
        return None
    scale = t.shape[-2] // height
    return scale if scale >= 1 and t.shape[-1] == width * scale else None


def stack_tiles(t: torch.Tensor, boxes: Sequence[Box], batch: int, scale: int = 1) -> torch.Tensor:
    """t's crops for boxes, each repeated to the latent batch, stacked tile by tile."""
    return torch.cat([comfy.utils.repeat_to_batch_size(crop(t, b, scale), batch) for b in boxes])


class _Cond:
    """One of ComfyUI's cond dicts, prepared once per step for cutting into tiles. raw: a dict of
    the user's CONDITIONING (masks at any resolution, percentage areas, spatial values such as an
    inpainting model's concat_latent_image at the top level) rather than a sampler's prepared one."""

    def __init__(self, cond: dict, height: int, width: int, shift: tuple[int, int], device, raw: bool = False):
        # A raw cond is sampled on the tiles as if each were a canvas of its own: RegionPrompt's
        # whole-canvas compositing data would be misread there, and its averaging mask (cut
        # below like any mask) already draws the region.
        self.cond = _fit_to_canvas(cond, height, width) if raw else cond
        if raw:
            self.cond.pop(REGION_KEY, None)
        self.shift = shift
        self.weight = self._canvas_weight(self.cond, height, width, device)
        self.model_conds = {}
        for name, value in self.cond.get("model_conds", {}).items():
            self.model_conds[name] = _spatial_model_cond(value, height, width, shift)
        self.values = {}
        if raw:
            for name, value in self.cond.items():
                if name not in ("mask", "control"):
                    self.values[name] = _spatial_value(value, height, width, shift)

    def _canvas_weight(self, cond: dict, height: int, width: int, device) -> torch.Tensor | None:
        """The cond's (Bm, H, W) weight on the rolled canvas, strength apart; None for a cond that
        covers the whole canvas with weight one (the common case: nothing to cut)."""
        if "area" not in cond and "mask" not in cond:
            return None
        weight = None
        if "mask" in cond:
            weight = cond["mask"].float() * float(cond.get("mask_strength", 1.0))
            weight = weight.reshape(-1, *weight.shape[-2:])
        if "area" in cond:
            device = weight.device if weight is not None else device
            ramp = area_mult(_area_2d(cond["area"]), height, width, device=device)
            if weight is None:
                weight = ramp.unsqueeze(0)
            else:
                # ComfyUI puts no ramp on a masked area: the mask alone weighs it, cut to the area.
                inside = (ramp > 0).to(weight.dtype)
                weight = weight * inside
        return roll(weight, self.shift)

    def signature(self, box: Box):
        """What decides this cond's shape within a tile: SKIP, the area inside the tile, or None."""
        if self.weight is None:
            return None
        inside = nonzero_box(crop(self.weight, box))
        return SKIP if inside is None else inside.at_least(MIN_AREA, box.height, box.width)

    def for_tiles(self, boxes: Sequence[Box], batch: int, signature, controls: "ControlCache") -> dict:
        out = dict(self.cond)
        out.pop("area", None)
        if self.weight is not None:
            out["mask"] = stack_tiles(self.weight, boxes, batch)
            out["mask_strength"] = 1.0
            tile = boxes[0]
            if (signature.height, signature.width) != (tile.height, tile.width):
                out["area"] = [signature.height, signature.width, signature.y0, signature.x0]
        if self.model_conds:
            model_conds = dict(out["model_conds"])
            for name, spatial in self.model_conds.items():
                if spatial is not None:
                    model_conds[name] = spatial(boxes, batch)
            out["model_conds"] = model_conds
        for name, cut in self.values.items():
            if cut is not None:
                out[name] = cut(boxes, batch)
        if out.get("control") is not None:
            out["control"] = controls.for_tiles(out["control"], boxes, batch)
        return out


def _fit_to_canvas(cond: dict, height: int, width: int) -> dict:
    """A user's cond as ComfyUI's sampler would fit it to a height x width latent: percentage areas
    in latent px, masks resized (bilinear), set_area_to_bounds left to the cutting (which gives
    each tile the area of the mask within it)."""
    out = dict(cond)
    area = out.get("area")
    if area is not None and area[0] == "percentage":
        h, w, y, x = _area_2d(area[1:])
        out["area"] = (max(1, round(h * height)), max(1, round(w * width)), round(y * height), round(x * width))
    if isinstance(out.get("mask"), torch.Tensor):
        mask = out["mask"].float()
        mask = mask.reshape(-1, *mask.shape[-2:])
        if mask.shape[-2:] != (height, width):
            mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=(height, width), mode="bilinear").squeeze(1)
        out["mask"] = mask
    out.pop("set_area_to_bounds", None)
    return out


def _spatial_value(value, height: int, width: int, shift: tuple[int, int]):
    """For a raw cond value laid out on the canvas (a tensor, or a list holding such tensors), a
    function cutting it for a batch of tiles; None for anything else."""
    if isinstance(value, torch.Tensor):
        scale = spatial_scale(value, height, width) if value.ndim >= 4 else None
        if scale is None:
            return None
        rolled = roll(value, shift, scale=scale)
        return lambda boxes, batch: stack_tiles(rolled, boxes, batch, scale)
    if isinstance(value, list) and any(isinstance(v, torch.Tensor) and v.ndim >= 4 for v in value):
        cuts = [_spatial_value(v, height, width, shift) for v in value]
        if not any(cuts):
            return None
        return lambda boxes, batch: [cut(boxes, batch) if cut else v for v, cut in zip(value, cuts)]
    return None


def _area_2d(area) -> list[int]:
    """The spatial (h, w, y, x) of a ComfyUI area written for more dims (h..., y...)."""
    n = len(area) // 2
    return [area[n - 2], area[n - 1], area[2 * n - 2], area[2 * n - 1]]


def _spatial_model_cond(value, height: int, width: int, shift: tuple[int, int]):
    """For a model cond laid out on the canvas, a function cutting it for a batch of tiles;
    None for a cond that is the same for every tile (text embeddings, pooled vectors)."""
    if isinstance(value, comfy.conds.CONDList):
        items = value.cond
        scales = [spatial_scale(t, height, width) if isinstance(t, torch.Tensor) else None for t in items]
        if not any(scales):
            return None
        rolled = [roll(t, shift, scale=s) if s else t for t, s in zip(items, scales)]

        def cut_list(boxes, batch):
            return value._copy_with([stack_tiles(t, boxes, batch, s) if s else t for t, s in zip(rolled, scales)])
        return cut_list
    tensor = getattr(value, "cond", None)
    if not isinstance(tensor, torch.Tensor) or isinstance(value, comfy.conds.CONDConstant):
        return None
    scale = spatial_scale(tensor, height, width)
    if scale is None or (tensor.ndim < 4 and not isinstance(value, comfy.conds.CONDNoiseShape)):
        return None
    rolled = roll(tensor, shift, scale=scale)
    return lambda boxes, batch: value._copy_with(stack_tiles(rolled, boxes, batch, scale))


class ControlCache:
    """Tile copies of ControlNet / T2I-Adapter chains, each holding only its tiles' part of the
    hint. Kept for a sampling run: a ControlNet caches its resized (or VAE-encoded) hint, and the
    tiles of a step repeat every step."""

    def __init__(self):
        self._copies: dict[tuple, object] = {}

    def clear(self) -> None:
        self._copies.clear()

    def begin_step(self, height: int, width: int, shift: tuple[int, int]) -> None:
        self._canvas = (height, width)
        self._shift = shift

    def for_tiles(self, control, boxes: Sequence[Box], batch: int):
        key = (id(control), tuple(boxes), batch, self._canvas, self._shift)
        if key not in self._copies:
            previous = getattr(control, "previous_controlnet", None)
            tiled = copy_control(control, lambda clone: self.for_tiles(clone, boxes, batch))
            tiled.previous_controlnet = None if previous is None else self.for_tiles(previous, boxes, batch)
            self._cut_hint(control, tiled, boxes, batch)
            self._copies[key] = tiled
        return self._copies[key]

    def _cut_hint(self, control, tiled, boxes: Sequence[Box], batch: int) -> None:
        height, width = self._canvas
        ratio = int(getattr(control, "compression_ratio", 8))
        hint_ratio = ratio
        vae = getattr(control, "vae", None)
        if vae is not None:
            hint_ratio *= vae.spacial_compression_encode()
        method = getattr(control, "upscale_algorithm", "nearest-exact")
        hint = getattr(control, "cond_hint_original", None)
        if isinstance(hint, torch.Tensor):
            # The hint as the ControlNet would fit it to the whole canvas, then each tile's part.
            canvas_hint = comfy.utils.common_upscale(hint, width * hint_ratio, height * hint_ratio, method, "center")
            tiled.cond_hint_original = stack_tiles(roll(canvas_hint, self._shift, scale=hint_ratio),
                                                   boxes, batch, hint_ratio)
        extra = getattr(control, "extra_concat_orig", None)
        if extra:
            cut = []
            for c in extra:
                canvas_c = comfy.utils.common_upscale(c, width * ratio, height * ratio, method, "center")
                cut.append(stack_tiles(roll(canvas_c, self._shift, scale=ratio), boxes, batch, ratio))
            tiled.extra_concat_orig = cut


class TileConds:
    """All conds of one model evaluation (cond, uncond, ...) prepared for cutting into tiles."""

    raw = False

    def __init__(self, conds: list[list[dict] | None], height: int, width: int, shift: tuple[int, int],
                 controls: ControlCache, device=None):
        self.lists = [None if c is None else [_Cond(d, height, width, shift, device, self.raw) for d in c]
                      for c in conds]
        self.controls = controls
        controls.begin_step(height, width, shift)

    def signature(self, box: Box) -> tuple:
        """Tiles with equal signatures can share a batch."""
        return tuple(None if c is None else tuple(d.signature(box) for d in c) for c in self.lists)

    def _cut(self, boxes: Sequence[Box], batch: int) -> list[list[tuple[int, dict]] | None]:
        """Per list, (position in the list, cut dict) of each cond that meets these tiles."""
        signature = self.signature(boxes[0])
        out = []
        for conds, signs in zip(self.lists, signature):
            if conds is None:
                out.append(None)
                continue
            out.append([(i, d.for_tiles(boxes, batch, s, self.controls))
                        for i, (d, s) in enumerate(zip(conds, signs)) if s != SKIP])
        return out

    def for_tiles(self, boxes: Sequence[Box], batch: int) -> list[list[dict] | None]:
        return [None if cut is None else [d for _, d in cut] for cut in self._cut(boxes, batch)]


class ConditioningTiles(TileConds):
    """The user's CONDITIONING lists ([[embedding, dict], ...], positive, negative, ...) cut for
    batches of tiles of a height x width latent canvas, to hand a sampler run over those tiles."""

    raw = True

    def __init__(self, conditionings: list[list], height: int, width: int, controls: ControlCache, device=None):
        self.embeddings = [[pair[0] for pair in c] for c in conditionings]
        super().__init__([[pair[1] for pair in c] for c in conditionings], height, width, (0, 0), controls, device)

    def for_tiles(self, boxes: Sequence[Box], batch: int) -> list[list]:
        return [[[embeddings[i], d] for i, d in cut] for embeddings, cut in zip(self.embeddings, self._cut(boxes, batch))]
