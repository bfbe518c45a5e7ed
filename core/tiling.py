"""Geometry: boxes, cutting a canvas into tiles, cropping, batching, snapping to a grid."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Callable, Iterator, NamedTuple, Sequence

import torch


class Box(NamedTuple):
    """A half-open rectangle [y0, y1) x [x0, x1) on some grid."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def scaled(self, factor: int | Fraction) -> "Box":
        """This box on a grid `factor` times finer (coordinates must land on whole pixels)."""
        return Box(*(int(v * factor) for v in self))

    def grown(self, margin: int, height: int, width: int) -> "Box":
        """This box with `margin` added on every side, clipped to a height x width canvas."""
        return Box(max(0, self.y0 - margin), min(height, self.y1 + margin),
                   max(0, self.x0 - margin), min(width, self.x1 + margin))

    def at_least(self, least: int, height: int, width: int) -> "Box":
        """This box grown about its centre to at least `least` on each side, inside a height x width
        canvas (as far as the canvas allows)."""
        def span(lo: int, hi: int, length: int) -> tuple[int, int]:
            size = min(max(hi - lo, least), length)
            start = min(max(0, (lo + hi - size) // 2), length - size)
            return start, start + size

        (y0, y1), (x0, x1) = span(self.y0, self.y1, height), span(self.x0, self.x1, width)
        return Box(y0, y1, x0, x1)

    def relative_to(self, outer: "Box") -> "Box":
        return Box(self.y0 - outer.y0, self.y1 - outer.y0, self.x0 - outer.x0, self.x1 - outer.x0)


def spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Cut [0, length) into the fewest consecutive spans of at most `tile`, sized as evenly as
    possible (a thin last span would waste a model call on a sliver)."""
    if length <= 0:
        return []
    count = math.ceil(length / max(1, tile))
    cuts = [round(i * length / count) for i in range(count + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(count)]


def grid_rows(height: int, width: int, tile_h: int, tile_w: int) -> list[list[Box]]:
    """Rows of non-overlapping boxes covering a height x width canvas, as even as the sizes allow
    (the tiled VAE's tiles, the chess redraw's)."""
    return [[Box(y0, y1, x0, x1) for x0, x1 in spans(width, tile_w)] for y0, y1 in spans(height, tile_h)]


def grid(height: int, width: int, tile_h: int, tile_w: int) -> Iterator[Box]:
    """grid_rows, row by row."""
    for row in grid_rows(height, width, tile_h, tile_w):
        yield from row


def grid_count(height: int, width: int, tile_h: int, tile_w: int) -> int:
    return len(spans(height, tile_h)) * len(spans(width, tile_w))


def tile_starts(length: int, tile: int, overlap: int, unit: int = 1) -> list[int]:
    """Starts of the fewest full-size tiles covering [0, length) with neighbours sharing at least
    `overlap`, spread evenly, each start on the `unit` grid where the canvas allows it.

    Tiles stay full size at the edges (a sliver tile would waste a model call and see too little
    context); when `tile` >= `length` one tile covers everything."""
    if tile >= length:
        return [0]
    if overlap >= tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    last = length - tile
    count = max(2, math.ceil((length - overlap) / (tile - overlap)))
    while True:
        starts = [min(last, unit * round(i * last / (count - 1) / unit)) for i in range(count)]
        starts[-1] = last  # the canvas edge wins over the grid when they disagree
        if all(b - a <= tile - overlap for a, b in zip(starts, starts[1:])):
            return starts
        count += 1  # snapping to the grid ate into an overlap: one more tile


def tile_boxes(height: int, width: int, tile_h: int, tile_w: int, overlap: int, unit: int = 1) -> list[Box]:
    """Full-size overlapping tiles covering a height x width canvas, row by row (tiled
    diffusion's); see tile_starts."""
    tile_h, tile_w = min(tile_h, height), min(tile_w, width)
    return [Box(y, y + tile_h, x, x + tile_w)
            for y in tile_starts(height, tile_h, overlap, unit)
            for x in tile_starts(width, tile_w, overlap, unit)]


def snap(length: float, grid: int) -> int:
    """length rounded to the nearest multiple of grid, halves up, at least one grid unit. (Python's
    round() would send 2.5 to 2 and 3.5 to 4: 72 px on a 16 px grid to 64, 88 to 96.)"""
    return max(grid, math.floor(length / grid + 0.5) * grid)


def crop(x: torch.Tensor, box: Box, scale: int = 1) -> torch.Tensor:
    """box of x's last two dims, on a grid `scale` times finer than the latent."""
    return x[..., box.y0 * scale:box.y1 * scale, box.x0 * scale:box.x1 * scale]


def tile_batches(boxes: Sequence[Box], size: int, key: Callable[[Box], object] = lambda b: None) -> list[list[Box]]:
    """boxes in batches of at most size; only boxes with equal key share a batch (tiles whose
    conditioning differs in shape cannot be stacked), first-seen key first."""
    groups: dict[object, list[Box]] = {}
    for b in boxes:
        groups.setdefault(key(b), []).append(b)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]
