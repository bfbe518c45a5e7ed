"""A picture that arrives tile by tile, turned into boxes, rows, row windows and a pyramid of
halved levels without ever holding it whole: the geometry and the pixel work behind Save Large Image
(runtime.large_image writes the files). Pixels are uint8 numpy arrays (rows, width, channels).

- RowSpill takes finished tiles (boxes on the picture, in any order that completes rows from
  the top) into files, says how many rows from the top are complete, and reads back any box of
  them, so that a band of rows as wide as the picture never sits in memory.
- RowWindows cuts a stream of rows into windows (a file's tile rows; Deep Zoom's overlapping
  tile rows), keeping only the rows a window still needs.
- Halver makes the next pyramid level: 2x2 box averages, sides rounded up (an odd last row or
  column is averaged with itself), as the Deep Zoom format sizes its levels.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import numpy as np

from .tiling import Box

Rows = Callable[[np.ndarray], None]  # a run of complete rows, the next ones down


def _row_runs(first_row: int, row_width: int, box: Box, pixels: np.ndarray):
    """(byte offset, pixels) of each contiguous run of `box` in a file that holds a picture's rows
    from `first_row` on, each `row_width` pixels: one run for whole rows, else one per row."""
    pixel = pixels.shape[-1] * pixels.itemsize
    if box.width == row_width:
        yield (box.y0 - first_row) * row_width * pixel, pixels
    else:
        for i, y in enumerate(range(box.y0, box.y1)):
            yield ((y - first_row) * row_width + box.x0) * pixel, pixels[i:i + 1]


def write_rows(file, first_row: int, row_width: int, box: Box, pixels: np.ndarray) -> None:
    """Writes `pixels` (box-sized) at `box` (rows counted from the picture's top) into `file`, which
    holds the picture's rows from `first_row` on, each `row_width` pixels."""
    for offset, part in _row_runs(first_row, row_width, box, pixels):
        file.seek(offset)
        view = memoryview(np.ascontiguousarray(part)).cast("B")
        while view:
            view = view[file.write(view):]


def read_rows(file, first_row: int, row_width: int, box: Box, out: np.ndarray) -> None:
    """Reads `box` from such a file (write_rows) into `out` (box-sized, C-contiguous)."""
    for offset, part in _row_runs(first_row, row_width, box, out):
        file.seek(offset)
        view = memoryview(part).cast("B")
        end = offset + len(view)
        while view:
            got = file.readinto(view)
            if not got:
                raise OSError(f"{getattr(file, 'name', 'a file')} ends before byte {end}")
            view = view[got:]


class _RowFile:
    """A run of rows [start, start + rows) in a file of its own, and how many pixels of each are in."""

    def __init__(self, path: str, start: int, rows: int):
        self.path, self.start, self.rows = path, start, rows
        self.file = open(path, "w+b", buffering=0)
        self.filled = np.zeros(rows, np.int64)

    @property
    def end(self) -> int:
        return self.start + self.rows


class RowSpill:
    """Collects tiles of a height x width x channels picture (boxes in any order that completes
    rows from the top) in files in `folder`, one per run of rows as the tiles' rows first appear,
    until released. The rows in flight (with tiles that come in rows, a row of tiles as wide as the
    picture) so sit in the system's page cache, which it can write out, instead of in this
    process's memory, and what the process holds does not grow with the picture's width.
    `complete` rows from the top are in; read() gives back any box of them not yet released."""

    def __init__(self, height: int, width: int, channels: int, folder: str):
        self.height, self.width, self.channels, self.folder = height, width, channels, folder
        self.complete = 0  # rows above are in
        self.released = 0  # rows above are gone
        self.files: list[_RowFile] = []

    @property
    def _end(self) -> int:
        return self.files[-1].end if self.files else self.released

    def add(self, box: Box, tile: np.ndarray) -> None:
        if box.y0 < self.complete or box.y1 > self.height or box.x0 < 0 or box.x1 > self.width:
            raise ValueError(f"tile {box} lies outside rows {self.complete}..{self.height} of a picture "
                             f"{self.width} px wide")
        if tile.shape != (box.height, box.width, self.channels):
            raise ValueError(f"tile of shape {tile.shape} for box {box}")
        if box.y1 > self._end:
            start = self._end
            self.files.append(_RowFile(os.path.join(self.folder, f"rows{start}.raw"), start, box.y1 - start))
        for rows in self.files:
            y0, y1 = max(box.y0, rows.start), min(box.y1, rows.end)
            if y0 < y1:
                write_rows(rows.file, rows.start, self.width, Box(y0, y1, box.x0, box.x1),
                           tile[y0 - box.y0:y1 - box.y0])
                rows.filled[y0 - rows.start:y1 - rows.start] += box.width
        for rows in self.files:
            if rows.end <= self.complete:
                continue
            short = np.flatnonzero(rows.filled[self.complete - rows.start:] < self.width)
            self.complete = rows.end if not len(short) else self.complete + int(short[0])
            if len(short):
                break

    def read(self, box: Box) -> np.ndarray:
        if box.y0 < self.released or box.y1 > self.complete or box.x0 < 0 or box.x1 > self.width:
            raise ValueError(f"rows {box.y0}..{box.y1} are not held: rows {self.released}..{self.complete} are")
        out = np.empty((box.height, box.width, self.channels), np.uint8)
        for rows in self.files:
            y0, y1 = max(box.y0, rows.start), min(box.y1, rows.end)
            if y0 < y1:
                read_rows(rows.file, rows.start, self.width, Box(y0, y1, box.x0, box.x1),
                          out[y0 - box.y0:y1 - box.y0])
        return out

    def release(self, row: int) -> None:
        """Rows above `row` are no longer needed: files that hold only such rows go."""
        self.released = max(self.released, min(row, self.complete))
        while self.files and self.files[0].end <= self.released:
            self._remove(self.files.pop(0))

    def close(self) -> None:
        """Removes every file still held."""
        while self.files:
            self._remove(self.files.pop())

    @staticmethod
    def _remove(rows: _RowFile) -> None:
        rows.file.close()
        os.remove(rows.path)


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
