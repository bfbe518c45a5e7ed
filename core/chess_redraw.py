"""Geometry of chess-order tile redraw (the Ultimate SD Upscale technique, batched): which tiles are
redrawn in which pass, the context region each is sampled in, the feathered mask through which its
result is pasted, and the seam-fix patches over the tile borders.

Plain Python and torch on latent-pixel coordinates; the sampler that redraws a batch of regions is
not here. Every mask is region-sized: pasting a tile touches its region only, never the canvas.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, replace

import torch

from .tiling import Box, crop, grid_rows

CHESS = "chess"
LINEAR = "linear"
NO_REDRAW = "none"
ORDERS = (CHESS, LINEAR, NO_REDRAW)

SEAMS_NONE = "none"
SEAMS_BAND = "band"
SEAMS_HALF_TILE = "half_tile"
SEAMS_HALF_TILE_INTERSECTIONS = "half_tile_intersections"
SEAM_MODES = (SEAMS_NONE, SEAMS_BAND, SEAMS_HALF_TILE, SEAMS_HALF_TILE_INTERSECTIONS)


@dataclass(frozen=True)
class Patch:
    """One piece of work: redraw `region` (the sampler's input, context included) and paste it
    back through `mask` (region-sized, (h, w) or per picture (batch, 1, h, w); 1 where the result
    replaces the canvas, 0 where the canvas is kept). `key` names the patch for its noise seed:
    (pass name, row, column)."""
    key: tuple
    target: Box
    region: Box
    mask: torch.Tensor


def region_for(target: Box, size_h: int, size_w: int, height: int, width: int) -> Box:
    """A size_h x size_w box centred on target, moved inside the canvas (and cut to it when the
    canvas is smaller): every region of a pass has one shape, so regions batch."""
    size_h, size_w = min(size_h, height), min(size_w, width)
    y0 = min(max(0, (target.y0 + target.y1 - size_h) // 2), height - size_h)
    x0 = min(max(0, (target.x0 + target.x1 - size_w) // 2), width - size_w)
    return Box(y0, y0 + size_h, x0, x0 + size_w)


def feathered_mask(target: Box, region: Box, feather: int, height: int, width: int, *,
                   inward: bool = False) -> torch.Tensor:
    """The region-sized paste mask of target: 1 on target, falling linearly to 0 over `feather`
    px. Outward (default): the ramp lies outside target's sides, in the region's context, so a
    tile's result blends into its side neighbours (not into diagonal ones, which share its pass). Inward: the ramp lies inside target (for seam patches,
    whose edges must fade out). No ramp where target meets the canvas edge: there is nothing to
    blend with."""
    rows = _profile(target.y0, target.y1, region.y0, region.y1, height, feather, inward)
    cols = _profile(target.x0, target.x1, region.x0, region.x1, width, feather, inward)
    mask = torch.outer(rows, cols)
    if not inward:
        # Diagonally off the target lies a tile of the same chess pass: leave it alone.
        mask[torch.outer(rows < 1, cols < 1)] = 0
    return mask


def _profile(lo: int, hi: int, start: int, end: int, full: int, feather: int, inward: bool) -> torch.Tensor:
    """feathered_mask along one axis, over positions start..end of a canvas `full` long."""
    pos = torch.arange(start, end, dtype=torch.float32) + 0.5
    if inward:
        no_edge = torch.full_like(pos, float("inf"))
        dist = torch.minimum(pos - lo if lo > 0 else no_edge, hi - pos if hi < full else no_edge)
        ramp = (dist / feather).clamp(0, 1) if feather > 0 else torch.ones_like(pos)
        return torch.where((pos > lo) & (pos < hi), ramp, torch.zeros_like(pos))
    outside = torch.clamp(torch.maximum(lo - pos, pos - hi), min=0)
    if feather <= 0:
        return (outside == 0).float()
    return torch.where(outside == 0, torch.ones_like(pos), (1 - (outside + 0.5) / (feather + 1)).clamp(0, 1))


class _SharedMasks:
    """Equal masks as one tensor: interior tiles all have the same mask, so a canvas of any size
    keeps a handful (its edges and corners) instead of one per tile, which at gigapixel sizes would
    add up to a third of the latent canvas itself."""

    def __init__(self):
        self._seen: dict[tuple, torch.Tensor] = {}

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        key = (tuple(mask.shape), hashlib.blake2b(mask.numpy().tobytes(), digest_size=16).digest())
        return self._seen.setdefault(key, mask)


def redraw_passes(height: int, width: int, tile_h: int, tile_w: int, padding: int, feather: int,
                  order: str) -> list[list[Patch]]:
    """The redraw passes: chess gives two (tiles whose row + column is even, then odd: no two tiles
    of a pass touch, so a pass can be batched and the second pass sees the first's results as
    context); linear one pass in reading order; none, no pass."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    if order == NO_REDRAW:
        return []
    grid = grid_rows(height, width, tile_h, tile_w)
    size_h = max(b.height for row in grid for b in row) + 2 * padding
    size_w = max(b.width for row in grid for b in row) + 2 * padding
    colours = (0, 1) if order == CHESS else (None,)
    shared = _SharedMasks()
    passes = []
    for colour in colours:
        patches = []
        for r, row in enumerate(grid):
            for c, target in enumerate(row):
                if colour is not None and (r + c) % 2 != colour:
                    continue
                region = region_for(target, size_h, size_w, height, width)
                mask = shared(feathered_mask(target, region, min(feather, padding), height, width))
                patches.append(Patch((f"redraw{colour or 0}", r, c), target, region, mask))
        passes.append(patches)
    return passes


def seam_passes(height: int, width: int, tile_h: int, tile_w: int, mode: str, band: int,
                feather: int) -> list[list[Patch]]:
    """Patches over the tile borders, in passes whose patches do not overlap.

    band: a strip `band` px wide centred on each border, one per tile side, ramped inward across
    its width. half_tile: tile-sized patches centred on each border's middle (vertical borders in
    one pass, horizontal in another), 1 on the border and falling to 0 at the patch sides.
    half_tile_intersections: those, and a pass of patches centred where borders cross."""
    if mode not in SEAM_MODES:
        raise ValueError(f"seam mode must be one of {', '.join(SEAM_MODES)}, got {mode!r}")
    grid = grid_rows(height, width, tile_h, tile_w)
    if mode == SEAMS_NONE or (len(grid) == 1 and len(grid[0]) == 1):
        return []
    shared = _SharedMasks()
    xs = [row_box.x0 for row_box in grid[0][1:]]  # vertical borders
    ys = [row[0].y0 for row in grid[1:]]  # horizontal borders
    rows = [(row[0].y0, row[0].y1) for row in grid]
    cols = [(b.x0, b.x1) for b in grid[0]]
    if mode == SEAMS_BAND:
        half = max(1, band // 2)
        vertical = [(("band_v", r, i), Box(y0, y1, max(0, x - half), min(width, x + half)))
                    for i, x in enumerate(xs) for r, (y0, y1) in enumerate(rows)]
        horizontal = [(("band_h", i, c), Box(max(0, y - half), min(height, y + half), x0, x1))
                      for i, y in enumerate(ys) for c, (x0, x1) in enumerate(cols)]
        size = (max([b.height for _, b in vertical + horizontal]), max([b.width for _, b in vertical + horizontal]))
        # Bands of one direction never overlap each other; the two directions cross, so two passes.
        return [p for p in (_patches(vertical, size, feather, height, width, (0, 1), shared),
                            _patches(horizontal, size, feather, height, width, (1, 0), shared)) if p]
    th, tw = max(b.height for row in grid for b in row), max(b.width for row in grid for b in row)
    vertical = [(("half_v", r, i), _centred(x, (y0 + y1) // 2, th, tw, height, width))
                for i, x in enumerate(xs) for r, (y0, y1) in enumerate(rows)]
    horizontal = [(("half_h", i, c), _centred((x0 + x1) // 2, y, th, tw, height, width))
                  for i, y in enumerate(ys) for c, (x0, x1) in enumerate(cols)]
    out = [_half_tile_pass(vertical, "v", feather, height, width, shared),
           _half_tile_pass(horizontal, "h", feather, height, width, shared)]
    if mode == SEAMS_HALF_TILE_INTERSECTIONS:
        crossings = [(("cross", j, i), _centred(x, y, th, tw, height, width))
                     for j, y in enumerate(ys) for i, x in enumerate(xs)]
        out.append(_half_tile_pass(crossings, "both", feather, height, width, shared))
    return [p for p in out if p]


def _centred(cx: int, cy: int, th: int, tw: int, height: int, width: int) -> Box:
    return region_for(Box(cy, cy, cx, cx), th, tw, height, width)


def _patches(items, size, feather, height, width, ramp_axes, shared: _SharedMasks) -> list[Patch]:
    patches = []
    for key, target in items:
        region = region_for(target, size[0], size[1], height, width)
        mask = feathered_mask(target, region, feather, height, width, inward=True)
        if ramp_axes == (0, 1):  # vertical band: ramp across x only, full height
            mask = _rows_full(mask, target, region)
        else:
            mask = _cols_full(mask, target, region)
        patches.append(Patch(key, target, region, shared(mask)))
    return patches


def _rows_full(mask, target, region):
    """Undo the inward ramp along a band's length: only its sides fade."""
    col_profile = mask.amax(dim=0)
    rows = torch.zeros(region.height)
    rows[target.y0 - region.y0:target.y1 - region.y0] = 1
    return torch.outer(rows, col_profile)


def _cols_full(mask, target, region):
    row_profile = mask.amax(dim=1)
    cols = torch.zeros(region.width)
    cols[target.x0 - region.x0:target.x1 - region.x0] = 1
    return torch.outer(row_profile, cols)


def _half_tile_pass(items, axis: str, feather: int, height: int, width: int, shared: _SharedMasks) -> list[Patch]:
    """Patches centred on borders: weight 1 at the patch's centre line(s), falling linearly to 0
    at its sides (across the border), and ramped over `feather` px along it."""
    patches = []
    for key, region in items:
        ys = torch.arange(region.y0, region.y1, dtype=torch.float32) + 0.5
        xs = torch.arange(region.x0, region.x1, dtype=torch.float32) + 0.5

        def tent(pos, lo, hi):
            centre, half = (lo + hi) / 2, max(1.0, (hi - lo) / 2)
            return (1 - (pos - centre).abs() / half).clamp(0, 1)

        across_x = tent(xs, region.x0, region.x1) if axis in ("v", "both") else \
            _profile(region.x0, region.x1, region.x0, region.x1, width, feather, inward=True)
        across_y = tent(ys, region.y0, region.y1) if axis in ("h", "both") else \
            _profile(region.y0, region.y1, region.y0, region.y1, height, feather, inward=True)
        patches.append(Patch(key, region, region, shared(torch.outer(across_y, across_x))))
    return patches


def within(patch: Patch, allowed: torch.Tensor) -> Patch | None:
    """The patch limited to where `allowed` (a canvas-sized (batch, 1, height, width) mask, 1 where
    the picture may change) lets it paste, or None where it allows nothing in the patch's reach:
    such a patch is not sampled at all."""
    mask = patch.mask * crop(allowed, patch.region)
    return replace(patch, mask=mask) if bool(mask.any()) else None


def footprint(patch: Patch) -> Box | None:
    """The part of the canvas that pasting the patch can change (its mask's nonzero box), or None
    when its mask is all zero."""
    nonzero = (patch.mask != 0).reshape(-1, *patch.mask.shape[-2:]).any(dim=0)
    rows, cols = nonzero.any(dim=1).nonzero(), nonzero.any(dim=0).nonzero()
    if len(rows) == 0:
        return None
    b = patch.region
    return Box(b.y0 + int(rows[0]), b.y0 + int(rows[-1]) + 1, b.x0 + int(cols[0]), b.x0 + int(cols[-1]) + 1)


def stale_boxes(patches: list[Patch]) -> list[list[Box]]:
    """For each patch of a pass, the boxes of its region that other patches of the pass paste over
    (their footprints, cut to the region): what a patch sampled after them would read changed.
    In a chess pass they are the corners of a tile's context, where its diagonal neighbours' paste
    ramps reach. Boxes are bucketed by region-sized cells: linear in the number of patches."""
    if len(patches) < 2:
        return [[] for _ in patches]
    cell_h, cell_w = max(p.region.height for p in patches), max(p.region.width for p in patches)

    def cells(b: Box):
        return ((cy, cx) for cy in range(b.y0 // cell_h, (b.y1 - 1) // cell_h + 1)
                for cx in range(b.x0 // cell_w, (b.x1 - 1) // cell_w + 1))

    pasted: dict[tuple[int, int], list[tuple[int, Box]]] = defaultdict(list)
    for i, patch in enumerate(patches):
        box = footprint(patch)
        if box is not None:
            for cell in cells(box):
                pasted[cell].append((i, box))
    stale = []
    for i, patch in enumerate(patches):
        r = patch.region
        found = {(j, f) for cell in cells(r) for j, f in pasted.get(cell, ()) if j != i}
        cut = (Box(max(r.y0, f.y0), min(r.y1, f.y1), max(r.x0, f.x0), min(r.x1, f.x1)) for _, f in sorted(found))
        stale.append([b for b in cut if b.y0 < b.y1 and b.x0 < b.x1])
    return stale


class PassSource:
    """The canvas as a pass found it, read region by region while the pass pastes into the canvas
    itself: the few boxes of each region that other patches paste over (stale_boxes) are kept
    aside when the pass starts and put back into the region when it is read. A chess pass at the
    usual settings keeps the corners of each context, 7% of the canvas, not a latent-sized copy."""

    def __init__(self, canvas: torch.Tensor, patches: list[Patch]):
        self.canvas, self.patches = canvas, patches
        self.kept = [[(box, crop(canvas, box).clone()) for box in boxes] for boxes in stale_boxes(patches)]

    def read(self, index: int) -> torch.Tensor:
        """Patch `index`'s region as the pass found it (a new tensor); each patch is read once, so
        its kept boxes are let go."""
        region = self.patches[index].region
        out = crop(self.canvas, region).clone()
        for box, pixels in self.kept[index]:
            crop(out, box.relative_to(region)).copy_(pixels)
        self.kept[index] = []
        return out


def patch_seed(seed: int, key: tuple) -> int:
    """A patch's noise seed from the run's seed and the patch's place: the same whatever the
    batch size or the order of work."""
    text = repr((int(seed), key)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") % 2 ** 63


def paste(canvas: torch.Tensor, patch: Patch, result: torch.Tensor) -> None:
    """canvas[region] blended towards result through the patch's mask (region-sized, in place)."""
    b = patch.region
    view = canvas[..., b.y0:b.y1, b.x0:b.x1]
    mask = patch.mask.to(view.device, view.dtype)
    view.mul_(1 - mask).add_(result.to(view.dtype) * mask)
