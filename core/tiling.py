"""Cutting a canvas into tiles."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Iterator, NamedTuple


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


def grid(height: int, width: int, tile_h: int, tile_w: int) -> Iterator[Box]:
    """Non-overlapping boxes covering a height x width canvas, row by row."""
    for y0, y1 in spans(height, tile_h):
        for x0, x1 in spans(width, tile_w):
            yield Box(y0, y1, x0, x1)


def grid_count(height: int, width: int, tile_h: int, tile_w: int) -> int:
    return len(spans(height, tile_h)) * len(spans(width, tile_w))
