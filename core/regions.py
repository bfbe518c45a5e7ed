"""Regional prompts: where a region paints on the canvas and how regions blend. Plain torch.

A region is a box given as fractions of the canvas (so a workflow survives a size change), with a
feathered edge, a strength and optionally a shape mask stretched over the box. Two kinds:

- background: its prediction is averaged with what lies under it, weighted by its mask; this is
  exactly ComfyUI's own mask conditioning, so it needs nothing from us at sampling time;
- foreground: its prediction replaces what lies under it, blended over by its feathered mask
  (later regions on top). ComfyUI averages conds by weight and has no "over"; a weight of
  a / (1 - a) against a main prompt of weight one gives the same blend, so a plain KSampler draws a
  foreground over the main prompt correctly, and TiledDiffusion composites it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FOREGROUND = "foreground"
BACKGROUND = "background"
KINDS = (FOREGROUND, BACKGROUND)

# The largest foreground weight written for ComfyUI's averaging: a foreground of alpha one takes
# 99.9% against a main prompt of weight one.
_MAX_OVER = 1.0 - 1e-3


@dataclass(frozen=True)
class Region:
    x: float
    y: float
    width: float
    height: float
    kind: str = FOREGROUND
    feather: float = 0.0
    strength: float = 1.0

    def check(self) -> None:
        """Raises ValueError naming the input and the fix for a region that cannot be drawn."""
        if self.kind not in KINDS:
            raise ValueError(f"RegionPrompt: type {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"RegionPrompt: the region has zero size (width {self.width}, height {self.height}); "
                             f"give width and height above 0 (fractions of the canvas)")
        for name, start, size in (("x", self.x, self.width), ("y", self.y, self.height)):
            extent = "width" if name == "x" else "height"
            if start < 0 or start >= 1:
                raise ValueError(f"RegionPrompt: {name} = {start} puts the region outside the canvas; "
                                 f"{name} is a fraction of the canvas, from 0 up to (not including) 1")
            if start + size > 1 + 1e-6:
                raise ValueError(f"RegionPrompt: {name} + {extent} = {start + size:.3f} reaches past the canvas "
                                 f"edge; keep {name} + {extent} at most 1 (lower {extent} to {1 - start:.3f})")
        if not 0 <= self.feather <= 1:
            raise ValueError(f"RegionPrompt: feather {self.feather} is out of range; give 0 (a hard edge) to 1 "
                             f"(a ramp reaching the region's centre)")
        if self.strength < 0:
            raise ValueError(f"RegionPrompt: strength {self.strength} is negative; give 0 or more")

    def pixel_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(y0, x0, h, w) on a height x width grid, rounded as ComfyUI rounds a percentage area."""
        h, w = max(1, round(self.height * height)), max(1, round(self.width * width))
        y0, x0 = min(round(self.y * height), height - 1), min(round(self.x * width), width - 1)
        return y0, x0, min(h, height - y0), min(w, width - x0)


def _edge_ramp(length: int, start: int, size: int, feather: float, soft_start: bool, soft_end: bool) -> torch.Tensor:
    """One axis of the feathered box: 0 outside [start, start + size), rising with a smoothstep over
    feather cells from each soft edge (an edge on the canvas border stays hard: the region should
    reach the border at full strength, not fade out there)."""
    centres = torch.arange(length, dtype=torch.float32) + 0.5
    inside = (centres >= start) & (centres < start + size)
    ramp = torch.ones(length)
    if feather > 0:
        inf = torch.tensor(float("inf"))
        to_start = centres - start if soft_start else inf.expand(length)
        to_end = start + size - centres if soft_end else inf.expand(length)
        t = (torch.minimum(to_start, to_end) / feather).clamp(0, 1)
        ramp = t * t * (3 - 2 * t)
    return ramp * inside


def region_alpha(region: Region, height: int, width: int, shape: torch.Tensor | None = None) -> torch.Tensor:
    """The region's coverage of a height x width canvas, (height, width) in 0..1: the feathered box,
    times the optional shape mask (any size, stretched over the box). Strength apart."""
    y0, x0, h, w = region.pixel_box(height, width)
    feather = region.feather * min(h, w) / 2  # 1 reaches the centre of the smaller side
    rows = _edge_ramp(height, y0, h, feather, y0 > 0, y0 + h < height)
    cols = _edge_ramp(width, x0, w, feather, x0 > 0, x0 + w < width)
    alpha = rows[:, None] * cols[None, :]
    if shape is not None:
        shape = shape.float().reshape(-1, *shape.shape[-2:])[:1]
        fitted = F.interpolate(shape[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        placed = torch.zeros(height, width)
        placed[y0:y0 + h, x0:x0 + w] = fitted.clamp(0, 1)
        alpha = alpha * placed
    return alpha


def over_alpha(alpha: torch.Tensor, strength: float) -> torch.Tensor:
    """A foreground's blend factor: coverage times strength, at most one."""
    return (alpha * strength).clamp(0, 1)


def averaging_weight(alpha: torch.Tensor, kind: str, strength: float) -> torch.Tensor:
    """The weight ComfyUI's cond averaging gives the region (its `mask`, against a main prompt of
    weight one): a background's coverage times strength; a foreground's a / (1 - a), so that the
    average is the foreground blended over the main prompt by a."""
    if kind == BACKGROUND:
        return alpha * strength
    a = over_alpha(alpha, strength).clamp(max=_MAX_OVER)
    return a / (1 - a)


def composite_over(base: torch.Tensor, layers) -> torch.Tensor:
    """base with each (prediction, alpha) of layers blended over it in order, later ones on top.
    alpha broadcasts against the predictions ((H, W) or (B, 1, H, W))."""
    out = base
    for prediction, alpha in layers:
        out = torch.lerp(out, prediction, alpha.to(out.dtype))
    return out
