"""RegionPrompt: a prompt for one part of the canvas (core.regions), as ComfyUI conditioning.

The node appends the region's conds to the chain with ComfyUI's own keys (a percentage `area`
bounding the box, a `mask` holding the region's averaging weight), so it works on a plain KSampler,
and adds REGION_KEY, which the TiledDiffusion patch reads to composite foregrounds exactly
(ForegroundRegions) instead of averaging them.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..core import regions as rg
from .host import CATEGORY

log = logging.getLogger("expanse")

REGION_KEY = "expanse_region"
# The masks are drawn with the canvas's aspect ratio, this many cells on the longer side; ComfyUI
# resizes them to the latent (bilinear), and a feathered edge survives that unchanged.
MASK_SIDE = 512


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
        cond.update({"area": ("percentage", region.height, region.width, region.y, region.x),
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


class RegionPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RegionPrompt",
            display_name="Region Prompt (Expanse)",
            category=f"{CATEGORY}/conditioning",
            description="Puts a prompt in one part of the canvas. Chain several (conditioning out into the next "
                        "node's conditioning in) or join them with Conditioning Combine. Works with a plain "
                        "KSampler; through a TiledDiffusion model, foregrounds are composited exactly and each "
                        "tile evaluates only the regions it meets.",
            inputs=[
                io.Conditioning.Input("conditioning",
                                      tooltip="The main prompt (or the chain so far). It draws the canvas wherever "
                                              "no region is, so uncovered parts are not left blank."),
                io.Conditioning.Input("region_conditioning",
                                      tooltip="The region's own prompt, from a CLIP Text Encode."),
                io.Float.Input("x", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip="Left edge of the region, as a fraction of the canvas width (0 = left)."),
                io.Float.Input("y", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip="Top edge of the region, as a fraction of the canvas height (0 = top)."),
                io.Float.Input("width", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Region width as a fraction of the canvas width; x + width at most 1."),
                io.Float.Input("height", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Region height as a fraction of the canvas height; y + height at most 1."),
                io.Combo.Input("type", options=list(rg.KINDS), default=rg.FOREGROUND,
                               tooltip="foreground: replaces what is under it inside its feathered edge (a "
                                       "subject). background: blends with what is under it (a setting, a mood)."),
                io.Float.Input("feather", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Soft edge width as a fraction of the region's smaller side (0 hard, 1 "
                                       "fades all the way to the centre). Edges on the canvas border stay hard."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="How strongly the region's prompt counts: for a background its weight "
                                       "against the prompts under it, for a foreground its opacity (capped at 1)."),
                io.Int.Input("canvas_width", default=1024, min=64, max=65536, step=8,
                             tooltip="The canvas size the region editor shows and the feather is measured on. "
                                     "The region itself is stored as fractions and follows a size change."),
                io.Int.Input("canvas_height", default=1024, min=64, max=65536, step=8,
                             tooltip="See canvas_width."),
                io.Mask.Input("mask", optional=True,
                              tooltip="A shape for a non-rectangular region, stretched over the box "
                                      "(white = inside)."),
            ],
            outputs=[io.Conditioning.Output(tooltip="The chain with this region added.")],
        )

    @classmethod
    def validate_inputs(cls, x=0.25, y=0.25, width=0.5, height=0.5, feather=0.2):
        # No **kwargs: ComfyUI skips its own min/max check for every input this signature takes.
        # Region.check covers the ranges of the five it names.
        numbers = (x, y, width, height, feather)
        if all(isinstance(v, (int, float)) for v in numbers):
            try:
                rg.Region(x, y, width, height, rg.FOREGROUND, feather).check()
            except ValueError as e:
                return str(e)
        return True

    @classmethod
    def execute(cls, conditioning, region_conditioning, x, y, width, height, type, feather, strength,
                canvas_width, canvas_height, mask=None) -> io.NodeOutput:
        region = rg.Region(x, y, width, height, type, feather, strength)
        return io.NodeOutput(list(conditioning) + region_conds(region_conditioning, region, canvas_width,
                                                                canvas_height, mask))
