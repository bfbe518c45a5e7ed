"""Regional prompts as ComfyUI conditioning (core.regions does the masks and the blending).

region_conds appends a region's conds with ComfyUI's own keys (a percentage `area` bounding the
box, a `mask` holding the region's averaging weight), so they work on a plain KSampler, and adds
REGION_KEY, which the TiledDiffusion patch reads to composite foregrounds exactly
(ForegroundRegions) instead of averaging them.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..core import regions as rg

log = logging.getLogger("expanse")

REGION_KEY = "expanse_region"
# The masks are drawn with the canvas's aspect ratio, this many cells on the longer side; ComfyUI
# resizes them to the latent (bilinear), and a feathered edge survives that unchanged.
MASK_SIDE = 512
# The smallest area ComfyUI may crop for a region's model call, in pixels: SD1.5's UNet halves the
# latent three times, so a crop under 8 latent px (64 px) leaves it nothing to convolve ("Kernel
# size can't be greater than actual input size"). A smaller region keeps its own mask; only the
# crop the model sees around it grows.
MIN_AREA_PX = 64


def _span(start: float, length: float, least: float) -> tuple[float, float]:
    """[start, start + length) grown about its centre to at least `least`, kept inside [0, 1]."""
    if length >= least:
        return start, length
    least = min(1.0, least)
    start = min(max(0.0, start + length / 2 - least / 2), 1.0 - least)
    return start, least


def model_area(region: rg.Region, canvas_width: int, canvas_height: int) -> tuple:
    """ComfyUI's percentage `area` for the region: its box, at least MIN_AREA_PX on each side."""
    y, height = _span(region.y, region.height, MIN_AREA_PX / canvas_height)
    x, width = _span(region.x, region.width, MIN_AREA_PX / canvas_width)
    return ("percentage", height, width, y, x)


def mask_size(canvas_width: int, canvas_height: int) -> tuple[int, int]:
    longer = max(canvas_width, canvas_height)
    return (max(1, round(MASK_SIDE * canvas_height / longer)), max(1, round(MASK_SIDE * canvas_width / longer)))


def region_conds(region_conditioning: list, region: rg.Region, canvas_width: int, canvas_height: int,
                 shape: torch.Tensor | None = None) -> list:
    """The region's CONDITIONING entries, each with the area, mask and REGION_KEY of region."""
    region.check()
    height, width = mask_size(canvas_width, canvas_height)
    alpha = rg.region_alpha(region, height, width, shape)
    if float(alpha.max()) <= 0:
        raise ValueError("RegionPrompt: the region covers nothing (its mask is empty inside the box); "
                         "check the mask input or enlarge the region")
    weight = rg.averaging_weight(alpha, region.kind, region.strength)
    info = {"type": region.kind, "box": (region.x, region.y, region.width, region.height),
            "feather": region.feather, "strength": region.strength,
            "alpha": rg.over_alpha(alpha, region.strength)[None]}
    out = []
    for embedding, cond in region_conditioning:
        if "area" in cond or "mask" in cond:
            log.warning("RegionPrompt: the region's conditioning already had an area or mask; the region replaces it")
        cond = dict(cond)
        cond.update({"area": model_area(region, canvas_width, canvas_height),
                     "mask": weight[None], "mask_strength": 1.0, "set_area_to_bounds": False,
                     REGION_KEY: info})
        out.append([embedding, cond])
    return out


class ForegroundRegions:
    """The foreground regions in one model evaluation's conds, pulled out of their lists to be
    evaluated on their own (each its own cond list, so ComfyUI still batches them with the rest) and
    blended over their list's result afterwards."""

    def __init__(self, conds: list):
        self.lists: list = []
        self.layers: list[tuple[int, dict]] = []  # (the list the region belongs to, its cond)
        for index, conds_of_list in enumerate(conds):
            if conds_of_list is None:
                self.lists.append(None)
                continue
            kept = []
            for cond in conds_of_list:
                info = cond.get(REGION_KEY)
                if info and info["type"] == rg.FOREGROUND:
                    alone = {k: v for k, v in cond.items() if k not in ("mask", "mask_strength")}
                    self.layers.append((index, alone))
                else:
                    kept.append(cond)
            self.lists.append(kept)
        # A list of foregrounds alone leaves the canvas outside them undrawn.
        self.missing_main = any(not self.lists[i] for i, _ in self.layers)

    def __bool__(self) -> bool:
        return bool(self.layers)

    def evaluation_lists(self) -> list:
        return self.lists + [[cond] for _, cond in self.layers]

    def composite(self, outputs: list, height: int, width: int) -> list:
        """outputs of evaluation_lists() back to one per original list, foregrounds blended over."""
        results = list(outputs[:len(self.lists)])
        for (index, cond), prediction in zip(self.layers, outputs[len(self.lists):]):
            alpha = cond[REGION_KEY]["alpha"].to(prediction.device, torch.float32)
            alpha = F.interpolate(alpha[None], size=(height, width), mode="bilinear", align_corners=False)
            results[index] = rg.composite_over(results[index], [(prediction, alpha)])
        return results
