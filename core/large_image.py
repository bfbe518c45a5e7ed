"""A picture that arrives tile by tile, turned into rows, row windows and a pyramid of halved
levels without ever holding it whole: the geometry and the pixel work behind Save Large Image
(runtime.large_image writes the files). Pixels are uint8 numpy arrays (rows, width, channels).

- RowAssembler takes finished tiles (boxes on the picture, in any order that completes rows from
  the top) and hands on runs of complete rows, top to bottom.
- RowWindows cuts that stream into windows of rows (a file's tile rows; Deep Zoom's overlapping
  tile rows), keeping only the rows a window still needs.
- Halver makes the next pyramid level: 2x2 box averages, sides rounded up (an odd last row or
  column is averaged with itself), as the Deep Zoom format sizes its levels.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .tiling import Box

Rows = Callable[[np.ndarray], None]  # a run of complete rows, the next ones down


class RowAssembler:
    """Collects tiles of a height x width x channels picture; every run of rows that is complete
    from the top goes to `emit` (a view, not a copy). Holds only rows that are not complete yet
    (for tiles that come in rows, one row of tiles), in chunks as the tiles' rows first appear."""

    def __init__(self, height: int, width: int, channels: int, emit: Rows):
        self.height, self.width, self.channels, self.emit = height, width, channels, emit
        self.top = 0  # rows above are emitted
        self.end = 0  # rows above have a chunk
        self.chunks: list[tuple[int, np.ndarray, np.ndarray]] = []  # (first row, pixels, pixels written per row)

    def add(self, box: Box, tile: np.ndarray) -> None:
        if box.y0 < self.top or box.y1 > self.height or box.x0 < 0 or box.x1 > self.width:
            raise ValueError(f"tile {box} lies outside rows {self.top}..{self.height} of a picture "
                             f"{self.width} px wide")
        if tile.shape != (box.height, box.width, self.channels):
            raise ValueError(f"tile of shape {tile.shape} for box {box}")
        if box.y1 > self.end:
            rows = box.y1 - self.end
            self.chunks.append((self.end, np.empty((rows, self.width, self.channels), np.uint8),
                                np.zeros(rows, np.int64)))
            self.end = box.y1
        for start, pixels, filled in self.chunks:
            y0, y1 = max(box.y0, start), min(box.y1, start + len(pixels))
            if y0 < y1:
                pixels[y0 - start:y1 - start, box.x0:box.x1] = tile[y0 - box.y0:y1 - box.y0]
                filled[y0 - start:y1 - start] += box.width
        while self.chunks:
            start, pixels, filled = self.chunks[0]
            done = int(np.argmin(filled >= self.width)) if (filled < self.width).any() else len(filled)
            if done == 0:
                break
            if done == len(filled):
                self.chunks.pop(0)
            else:
                self.chunks[0] = (start + done, pixels[done:], filled[done:])
            self.top += done
            self.emit(pixels[:done])

    @property
    def complete(self) -> bool:
        return self.top == self.height


class RowWindows:
    """Cuts a stream of rows (top to bottom, of a picture `height` rows high) into the windows
    `spans` names ((y0, y1) pairs, sorted, possibly overlapping): on_window(index, rows) for each
    as soon as its rows are in. Keeps (as views) only rows that a later window still needs."""

    def __init__(self, height: int, spans: Sequence[tuple[int, int]], on_window: Callable[[int, np.ndarray], None]):
        self.height, self.spans, self.on_window = height, list(spans), on_window
        self.next = 0  # the next window to hand on
        self.end = 0  # rows received
        self.chunks: list[tuple[int, np.ndarray]] = []  # (first row, rows) kept

    @property
    def kept_rows(self) -> int:
        return self.end - self.chunks[0][0] if self.chunks else 0

    def add(self, rows: np.ndarray) -> None:
        self.chunks.append((self.end, rows))
        self.end += len(rows)
        while self.next < len(self.spans) and self.spans[self.next][1] <= self.end:
            y0, y1 = self.spans[self.next]
            parts = [rows[max(y0, start) - start:min(y1, start + len(rows)) - start]
                     for start, rows in self.chunks if start < y1 and start + len(rows) > y0]
            self.on_window(self.next, parts[0] if len(parts) == 1 else np.concatenate(parts))
            self.next += 1
            keep_from = self.spans[self.next][0] if self.next < len(self.spans) else self.height
            while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= keep_from:
                self.chunks.pop(0)
            if self.chunks and self.chunks[0][0] < keep_from:
                start, kept = self.chunks[0]
                self.chunks[0] = (keep_from, kept[keep_from - start:])


def halved_size(height: int, width: int) -> tuple[int, int]:
    return (height + 1) // 2, (width + 1) // 2


def _halve_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows a and b (same shape, even count each pairing row i of a with row i of b) averaged 2x2."""
    s = a.astype(np.uint16) + b
    if s.shape[1] % 2:
        s = np.concatenate([s, s[:, -1:]], axis=1)
    s = s[:, 0::2] + s[:, 1::2]
    return ((s + 2) >> 2).astype(np.uint8)


class Halver:
    """The next pyramid level of a stream of rows: each pair of rows becomes one, averaged 2x2;
    an odd row waits for its partner, and finish() averages a last odd row with itself."""

    def __init__(self, emit: Rows):
        self.emit = emit
        self.carry: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> None:
        if self.carry is not None:
            rows = np.concatenate([self.carry, rows])
            self.carry = None
        if len(rows) % 2:
            self.carry, rows = rows[-1:].copy(), rows[:-1]
        if len(rows):
            self.emit(_halve_pairs(rows[0::2], rows[1::2]))

    def finish(self) -> None:
        if self.carry is not None:
            carry, self.carry = self.carry, None
            self.emit(_halve_pairs(carry, carry))


def pyramid_sizes(height: int, width: int, smallest: int) -> list[tuple[int, int]]:
    """(height, width) of each level, full size first, halving (sides rounded up) until the longest
    side is at most `smallest`."""
    sizes = [(height, width)]
    while max(sizes[-1]) > smallest:
        sizes.append(halved_size(*sizes[-1]))
    return sizes


def tile_spans(length: int, tile: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Tiles of `tile` along a side of `length`, each grown by `overlap` on both sides where the
    picture goes on (Deep Zoom's layout; overlap 0: a TIFF's tile rows)."""
    return [(max(0, start - overlap), min(length, start + tile + overlap)) for start in range(0, length, tile)]


def deep_zoom_levels(height: int, width: int) -> int:
    """The number of Deep Zoom levels: level 0 is 1x1, the last is the full picture."""
    return math.ceil(math.log2(max(height, width, 1))) + 1
