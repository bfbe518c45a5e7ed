"""The stage plan of progressive growing: generate at a small size, then grow the latent in stages
to the final size, refining each stage with img2img at a denoise that falls from stage to stage
(composition from the small pass, detail from the large ones)."""
from __future__ import annotations

from dataclasses import dataclass

from .tiling import snap

GEOMETRIC = "geometric"
LINEAR = "linear"
SPACINGS = (GEOMETRIC, LINEAR)


@dataclass(frozen=True)
class Stage:
    height: int  # latent px
    width: int
    denoise: float  # 1.0 for the first stage (drawn from noise), the refine strength after it


def stage_scales(stages: int, min_scale: float, max_scale: float, spacing: str) -> list[float]:
    """The scale of each stage, from min_scale to max_scale. Geometric spacing grows every stage by
    the same factor (each refine sees the same relative change), linear by the same amount."""
    if stages < 1:
        raise ValueError(f"stages must be at least 1, got {stages}")
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got min_scale {min_scale} and max_scale {max_scale}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    if stages == 1:
        return [max_scale]
    steps = [i / (stages - 1) for i in range(stages)]
    if spacing == GEOMETRIC:
        return [min_scale * (max_scale / min_scale) ** t for t in steps]
    return [min_scale + (max_scale - min_scale) * t for t in steps]


def refine_denoise(index: int, stages: int, second: float, last: float) -> float:
    """Stage index's refine denoise: `second` at the first refine (stage 1), `last` at the final
    stage, linear between. With two stages the single refine uses `second`."""
    if index == 0:
        return 1.0
    if stages <= 2:
        return second
    return second + (last - second) * (index - 1) / (stages - 2)


def plan(height: int, width: int, *, stages: int = 4, min_scale: float = 0.25, max_scale: float = 1.0,
         spacing: str = GEOMETRIC, denoise_second: float = 0.55, denoise_last: float = 0.35,
         grid: int = 1) -> list[Stage]:
    """The stages for a final latent of height x width: sizes on the latent grid, at least one grid
    unit, never above the final size, growing; stages that round to the size of the one before are
    dropped (they would repeat a refine at the same size)."""
    for name, value in (("denoise_second", denoise_second), ("denoise_last", denoise_last)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within 0..1, got {value}")
    scales = stage_scales(stages, min_scale, min(max_scale, 1.0), spacing)
    sizes: list[tuple[int, int]] = []
    for s in scales:
        size = (_on_grid(height * s, grid, height), _on_grid(width * s, grid, width))
        if not sizes or size != sizes[-1]:
            sizes.append(size)
    count = len(sizes)
    return [Stage(h, w, refine_denoise(i, count, denoise_second, denoise_last)) for i, (h, w) in enumerate(sizes)]


def _on_grid(length: float, grid: int, limit: int) -> int:
    """length rounded to the grid, at least one unit, at most limit (itself when it is off the grid)."""
    return min(snap(length, grid), limit)
