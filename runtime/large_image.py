"""Save Large Image's machinery: a latent decoded tile by tile (runtime.vae.decode_tiles) straight
into a tiled, pyramidal, compressed BigTIFF, and optionally a Deep Zoom picture (.dzi and a folder
of tiles), never holding the picture whole.

The decode's tiles go into raw files as they come (core.large_image.RowSpill): a row of decode
tiles is as wide as the picture (48 MiB at 16384 px), so it waits in the system's page cache, not
in this process. Every 256 rows complete are read back as a row of TIFF tiles, a few tiles at a
time, and handed to tifffile, which compresses and writes them in a thread of its own while the
decode goes on. The same rows, read back in runs of a few MiB, are halved level by level; each
lower level goes to a raw file of its own with plain writes (the smaller levels are a third of
the picture's size in all) and into the TIFF once the full-size level is written. What the save
holds in memory is so the same whatever the picture's width, but for Deep Zoom, whose levels
each keep a row of their tiles (256 rows as wide as the level: about 24 MiB in all at 16384 px).
Deep Zoom tiles are written as soon as their rows are in, at every level. Everything is written
into a hidden folder beside the final files and moved into place at the end, so a cancelled or
failed save leaves neither a half-written file under the final name nor anything else behind.

The TIFF's levels are its pages, full size first, each lower one marked reduced-resolution
(NewSubfileType 1), down to an overview whose longest side is at most OVERVIEW_PX: tifffile reads
them as one series with levels, Pillow as frames (its last frame is the overview), and viewers
that know pyramidal TIFF (QuPath, OpenSlide, libvips) as a pyramid.

tifffile is optional (pyproject's `large` extra): it is imported when a save runs.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from typing import Callable

import folder_paths
import numpy as np
import torch
from PIL import Image

from ..core.large_image import (Halver, RowSpill, RowWindows, deep_zoom_levels, pyramid_sizes, read_rows,
                                tile_spans)
from ..core.tiling import Box
from . import vae as runtime_vae
from .host import progress_ticker

log = logging.getLogger("expanse")

TIFF_TILE = 256
TIFF_GROUP = 8  # TIFF tiles read back from a spilled row at once (a 1.5 MiB block)
TIFF_QUEUE = 32  # TIFF tiles waiting for tifffile's thread at most (6 MiB)
TIFF_BATCH = 16  # TIFF tiles tifffile gathers before compressing them (3 MiB)
ROW_RUN_BYTES = 4 << 20  # rows read back for the pyramid at once, at most (but two)
OVERVIEW_PX = 1024  # the smallest level's longest side is at most this
DEEP_ZOOM_TILE, DEEP_ZOOM_OVERLAP = 254, 1  # 256 px tiles with their overlap, as Deep Zoom's tools make them
DEEP_ZOOM_FORMAT, DEEP_ZOOM_QUALITY = "jpg", 90
# What each compression choice asks of tifffile: all of them work with tifffile and numpy alone
# (zlib and lzma from Python's standard library), and Pillow (libtiff) reads them all.
COMPRESSIONS = {
    "deflate": {"compression": "zlib", "predictor": "horizontal", "compressionargs": {"level": 6}},
    "lzma": {"compression": "lzma", "predictor": "horizontal"},
    "none": {},
}
INSTALL_HINT = "pip install tifffile (into the Python that runs ComfyUI)"


def require_tifffile(node: str):
    """The tifffile module, or an error that says how to install it."""
    try:
        import tifffile
    except ImportError as e:
        raise RuntimeError(f"{node}: writing a large TIFF needs the tifffile package, which is not installed: "
                           f"{INSTALL_HINT}, then restart ComfyUI") from e
    return tifffile


def save_target(node: str, filename_prefix: str, width: int, height: int) -> tuple[str, str, int, str]:
    """(folder, file name stem, first counter, subfolder) under ComfyUI's output folder, by its
    filename-prefix conventions (subfolders, %width% and the like, counters); a prefix that leads
    outside the output folder, or to a folder that cannot be made, is refused."""
    output_dir = folder_paths.get_output_directory()
    named = isinstance(filename_prefix, str) and os.path.basename(os.path.normpath(filename_prefix or "."))
    if named in (False, ".", ".."):
        raise ValueError(f"{node}: filename_prefix {filename_prefix!r} names no file; end it with a name, "
                         "e.g. Expanse/large")
    if "\x00" in filename_prefix:
        raise ValueError(f"{node}: filename_prefix {filename_prefix!r} holds a null character, which no file name "
                         "can; pick another filename_prefix")
    try:
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir,
                                                                                   width, height)
        os.makedirs(folder, exist_ok=True)
    except Exception as e:
        if "outside the output folder" in str(e):
            raise ValueError(f"{node}: filename_prefix {filename_prefix!r} leads outside ComfyUI's output folder "
                             f"({output_dir}); files are written only inside it: use a prefix like "
                             "Expanse/large") from e
        if not isinstance(e, (OSError, ValueError)):
            raise
        raise ValueError(f"{node}: cannot write under filename_prefix {filename_prefix!r}: "
                         f"{getattr(e, 'strerror', None) or e}; pick another filename_prefix") from e
    return folder, filename, counter, subfolder


def _write_page(writer, tiles, height: int, width: int, options: dict, **extra) -> None:
    """One page of tiles (rows of tiles, top to bottom) written by tifffile. It gathers buffersize
    bytes of tiles before compressing them (256 MB by default): here TIFF_BATCH tiles."""
    writer.write(tiles, shape=(height, width, 3), dtype=np.uint8, tile=(TIFF_TILE, TIFF_TILE), photometric="rgb",
                 maxworkers=2, buffersize=TIFF_TILE * TIFF_TILE * 3 * TIFF_BATCH, **options, **extra)


def _row_of_tiles(read: Callable[[Box], np.ndarray], y0: int, y1: int, width: int):
    """The TIFF tiles of rows y0..y1 of a picture `width` wide, read TIFF_GROUP tiles at a time."""
    group = TIFF_TILE * TIFF_GROUP
    for g0 in range(0, width, group):
        block = read(Box(y0, y1, g0, min(width, g0 + group)))
        for x0 in range(0, block.shape[1], TIFF_TILE):
            yield block[:, x0:x0 + TIFF_TILE]


class _Aborted(Exception):
    pass


_ABORT = object()


class _StreamedPage:
    """One TIFF page written by tifffile in a thread of its own, from tiles handed over with put()
    in the file's order (rows of tiles, top to bottom). At most TIFF_QUEUE tiles wait."""

    def __init__(self, writer, height: int, width: int, options: dict):
        self.count = len(tile_spans(height, TIFF_TILE)) * len(tile_spans(width, TIFF_TILE))
        self.queue: queue.Queue = queue.Queue(maxsize=TIFF_QUEUE)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._write, name="expanse-tiff-writer", daemon=True,
                                       args=(writer, height, width, options))
        self.thread.start()

    def _tiles(self):
        for _ in range(self.count):
            item = self.queue.get()
            if item is _ABORT:
                raise _Aborted()
            yield item

    def _write(self, writer, height, width, options) -> None:
        try:
            _write_page(writer, self._tiles(), height, width, options)
        except BaseException as e:  # handed to the decode's thread, which raises it
            self.error = e

    def _raise_error(self) -> None:
        if self.error is not None and not isinstance(self.error, _Aborted):
            raise OSError(f"writing the TIFF failed: {self.error}") from self.error

    def put(self, tile: np.ndarray) -> None:
        while True:
            self._raise_error()
            try:
                self.queue.put(tile, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.thread.join()
        self._raise_error()

    def abort(self) -> None:
        while self.thread.is_alive():
            try:
                self.queue.put(_ABORT, timeout=0.1)
                break
            except queue.Full:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    pass
        self.thread.join()


class _Spool:
    """A pyramid level's rows in a raw file, written with plain writes, read back as TIFF tiles."""

    def __init__(self, path: str, height: int, width: int):
        self.path, self.height, self.width = path, height, width
        self.file = open(path, "wb")
        self.rows = 0

    def add(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows).data)
        self.rows += len(rows)

    def close(self) -> None:
        self.file.close()

    def tiles(self, tick: Callable[[], None]):
        with open(self.path, "rb", buffering=0) as f:
            def read(box: Box) -> np.ndarray:
                out = np.empty((box.height, box.width, 3), np.uint8)
                read_rows(f, 0, self.width, box, out)
                return out
            for y0, y1 in tile_spans(self.height, TIFF_TILE):
                yield from _row_of_tiles(read, y0, y1, self.width)
                tick()


class _DeepZoomLevel:
    """One Deep Zoom level's folder of tiles, each row of tiles written as soon as its rows are in."""

    def __init__(self, folder: str, height: int, width: int):
        os.makedirs(folder)
        self.folder = folder
        self.columns = tile_spans(width, DEEP_ZOOM_TILE, DEEP_ZOOM_OVERLAP)
        self.windows = RowWindows(height, tile_spans(height, DEEP_ZOOM_TILE, DEEP_ZOOM_OVERLAP), self._write_row)

    def add(self, rows: np.ndarray) -> None:
        self.windows.add(rows)

    def _write_row(self, row: int, rows: np.ndarray) -> None:
        for column, (x0, x1) in enumerate(self.columns):
            Image.fromarray(np.ascontiguousarray(rows[:, x0:x1])).save(
                os.path.join(self.folder, f"{column}_{row}.{DEEP_ZOOM_FORMAT}"), quality=DEEP_ZOOM_QUALITY)


def _dzi_xml(height: int, width: int) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{DEEP_ZOOM_FORMAT}" '
            f'Overlap="{DEEP_ZOOM_OVERLAP}" TileSize="{DEEP_ZOOM_TILE}">\n'
            f'  <Size Width="{width}" Height="{height}"/>\n</Image>\n')


class LargeImageFile:
    """One picture of height x width being written: add() its tiles (float pixels in 0..1, any
    order that completes rows from the top), then finish(); abort() on any failure. Files go to
    a hidden work folder in `folder` and are moved to `name`.tif (and `name`.dzi, `name`_files)
    by finish()."""

    def __init__(self, tifffile, folder: str, name: str, height: int, width: int, compression: str,
                 deep_zoom: bool):
        self.folder, self.name, self.height, self.width = folder, name, height, width
        self.options = COMPRESSIONS[compression]
        self.work = tempfile.mkdtemp(prefix=f".{name}", suffix=".partial", dir=folder)
        self.tiff_sizes = pyramid_sizes(height, width, OVERVIEW_PX)
        zoom_levels = deep_zoom_levels(height, width) if deep_zoom else 0
        self.deep_zoom = deep_zoom
        self.writer = None
        self.page: _StreamedPage | None = None
        self.spill: RowSpill | None = None
        self.spools: list[_Spool] = []
        self.overview: list[np.ndarray] = []
        try:
            self.writer = tifffile.TiffWriter(self._work_path(".tif"), bigtiff=True)
            self.page = _StreamedPage(self.writer, height, width, self.options)
            self.spill = RowSpill(height, width, 3, self.work)
            self.tiff_rows = tile_spans(height, TIFF_TILE)
            self.next_tiff_row = 0  # the first row of TIFF tiles not yet handed to the page
            self.run_rows = max(2, ROW_RUN_BYTES // (width * 3) // 2 * 2)
            self.emitted = 0  # rows above are read back for the pyramid
            # Level k's consumers: the TIFF (level 0 read from the spill, the others spooled), the overview
            # (the last TIFF level, kept for the preview), Deep Zoom's level, the next level's Halver.
            self.halvers: list[Halver] = []
            consumers: list[Callable[[np.ndarray], None]] = []
            levels = max(len(self.tiff_sizes), zoom_levels)
            size = (height, width)
            for k in range(levels):
                outs = []
                if 0 < k < len(self.tiff_sizes):
                    spool = _Spool(os.path.join(self.work, f"level{k}.raw"), *size)
                    self.spools.append(spool)
                    outs.append(spool.add)
                if k == len(self.tiff_sizes) - 1:
                    outs.append(self.overview.append)
                if deep_zoom:
                    outs.append(_DeepZoomLevel(os.path.join(self._work_path("_files"), str(zoom_levels - 1 - k)),
                                               *size).add)
                consumers.append(outs)
                size = ((size[0] + 1) // 2, (size[1] + 1) // 2)
            for k in range(levels - 1, -1, -1):
                outs = consumers[k]
                if k + 1 < levels:
                    halver = Halver(self._fan_out(consumers[k + 1]))
                    self.halvers.insert(0, halver)
                    outs = [*outs, halver.add]
                consumers[k] = outs
            self.emit_rows = self._fan_out(consumers[0])
        except BaseException:
            self.abort()
            raise

    @staticmethod
    def _fan_out(outs: list) -> Callable[[np.ndarray], None]:
        def emit(rows: np.ndarray) -> None:
            for out in outs:
                out(rows)
        return emit

    def _work_path(self, suffix: str) -> str:
        return os.path.join(self.work, self.name + suffix)

    def final_path(self, suffix: str) -> str:
        return os.path.join(self.folder, self.name + suffix)

    def add(self, box: Box, pixels: torch.Tensor) -> None:
        """A decoded tile: float (h, w, channels) in 0..1, converted to 8 bits as SaveImage does."""
        tile = (pixels[..., :3].float() * 255.0).clamp(0, 255).to(torch.uint8).cpu().numpy()
        self.spill.add(box, tile)
        self._hand_on()

    def _hand_on(self) -> None:
        """The complete rows not handed on yet, read back from the spill: rows of TIFF tiles to the
        page, runs of rows to the pyramid; then the spill lets go of what neither still needs."""
        complete = self.spill.complete
        while self.next_tiff_row < len(self.tiff_rows) and self.tiff_rows[self.next_tiff_row][1] <= complete:
            for tile in _row_of_tiles(self.spill.read, *self.tiff_rows[self.next_tiff_row], self.width):
                self.page.put(tile)
            self.next_tiff_row += 1
        while self.emitted < complete:
            end = min(complete, self.emitted + self.run_rows)
            self.emit_rows(self.spill.read(Box(self.emitted, end, 0, self.width)))
            self.emitted = end
        tiff_needs = self.tiff_rows[self.next_tiff_row][0] if self.next_tiff_row < len(self.tiff_rows) else self.height
        self.spill.release(min(tiff_needs, self.emitted))

    def finish(self) -> np.ndarray:
        """Writes the lower levels, moves the files into place; returns the overview (uint8 HWC)."""
        if self.spill.complete < self.height:
            raise RuntimeError(f"the decode delivered {self.spill.complete} of {self.height} rows")
        self.spill.close()
        for halver in self.halvers:
            halver.finish()
        self.page.finish()
        for spool in self.spools:
            spool.close()
        tick = progress_ticker(sum(len(tile_spans(s.height, TIFF_TILE)) for s in self.spools))
        for spool in self.spools:
            _write_page(self.writer, spool.tiles(tick), spool.height, spool.width, self.options, subfiletype=1)
            os.remove(spool.path)
        self.writer.close()
        if self.deep_zoom:
            with open(self._work_path(".dzi"), "w", encoding="utf-8") as f:
                f.write(_dzi_xml(self.height, self.width))
            os.rename(self._work_path("_files"), self.final_path("_files"))
            os.replace(self._work_path(".dzi"), self.final_path(".dzi"))
        os.replace(self._work_path(".tif"), self.final_path(".tif"))
        shutil.rmtree(self.work, ignore_errors=True)
        return np.concatenate(self.overview)

    def abort(self) -> None:
        """Stops the writer and removes everything this save wrote."""
        if self.page is not None:
            self.page.abort()
        if self.spill is not None:
            self.spill.close()
        for spool in self.spools:
            spool.file.close()
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # the file is half written and goes anyway
                pass
        shutil.rmtree(self.work, ignore_errors=True)


def save(node: str, vae, z: torch.Tensor, *, filename_prefix: str, mode: str, compression: str,
         deep_zoom: bool, tile_size: int = 0, padding: int | None = 96) -> tuple[torch.Tensor, list[str]]:
    """Each picture of a latent batch decoded tile by tile (mode, tile_size, padding as in
    runtime.vae.decode) into a file of its own (counters as SaveImage numbers them). Returns the
    overviews as an IMAGE (batch, h, w, RGB in 0..1) and the paths of the TIFF files."""
    tifffile = require_tifffile(node)
    if compression not in COMPRESSIONS:
        raise ValueError(f"{node}: compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    runtime_vae.check_latent(node, vae, z)
    height, width = runtime_vae.decoded_size(vae, z)
    folder, filename, counter, _ = save_target(node, filename_prefix, width, height)
    overviews, paths = [], []
    for b in range(z.shape[0]):
        name = f"{filename}_{counter + b:05}_"
        started = time.perf_counter()
        try:
            out = LargeImageFile(tifffile, folder, name, height, width, compression, deep_zoom)
        except (OSError, ValueError) as e:
            raise ValueError(f"{node}: cannot write in {folder}: {getattr(e, 'strerror', None) or e}; check the "
                             "folder or pick another filename_prefix") from e
        try:
            runtime_vae.decode_tiles(node, vae, z[b:b + 1], lambda _, box, pixels: out.add(box, pixels), mode=mode,
                                     tile_size=tile_size, padding=padding)
            overview = out.finish()
        except BaseException:
            out.abort()
            raise
        log.info("%s: saved %s (%dx%d px, %d levels%s) in %.1f s", node, out.final_path(".tif"), width, height,
                 len(out.tiff_sizes), ", with Deep Zoom" if deep_zoom else "", time.perf_counter() - started)
        overviews.append(torch.from_numpy(overview).float() / 255.0)
        paths.append(out.final_path(".tif"))
    return torch.stack(overviews), paths
