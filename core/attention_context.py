"""What the rest of the canvas looks like to a tile's global attention, when the tile runs alone.

A VAE's mid-block attention mixes the whole picture into every pixel. A tile run on its own (sampled
mode's tiles and statistics crops, the pixel route's windows) or attending only to a window around
it (local_attention) misses all of that: with the demo VAE it was most of sampled mode's error, in
the statistics its crops give and in its tiles. Instead the tile attends to its own keys and to a
copy of the rest: the whole canvas's keys and values pooled to at most CONTEXT_SIDE tokens a side
(WINDOW_CONTEXT_SIDE for local_attention's windows), those outside what the tile already sees,
each weighted in the softmax by the area it stands for (its log added to the score). That is the
whole picture's softmax with its distant part coarsened; at full resolution (no pooling) it is
exact (tests/unit/test_tiled_vae.py). A cell's mean key is not its softmax where its keys differ,
so where the keys at full resolution pass by (a decoder's, vae_sampled_stats), the cells where they
differ most are split into smaller tokens (Refinement).

A tile's own keys near where it was cut from the canvas are not the canvas's: the convolutions
before the attention saw zeros beyond the cut instead of the neighbours (its reach,
vae_geometry.attention_reach). With SD's VAE (random weights) such keys can draw much of the
softmax and spoil the whole tile. So that band of the tile's own keys is left out and the context
stands in for it, as for the rest of the canvas.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn.functional as F

from .tiling import Box

# A lone tile's context (sampled mode, the pixel route) is the canvas's keys and values pooled to
# at most this many tokens a side: SD's 8x latent of a 2048 px picture whole, the 1024 px copy
# sampled mode takes of a larger one whole. Coarser tokens cost accuracy where the keys vary
# within a token's cell: SD1.5's VAE (random weights) with 2x2 latent px a token, 35 dB against
# exact at 1024 px, 47 dB unpooled (the trained demo VAE: 50 dB either way). The cost: a 1024 px
# tile attends to 23 000 keys of its own and up to 65 536 of the context.
CONTEXT_SIDE = 256
# A context taken from the canvas's keys at full resolution (a decoder's, vae_sampled_stats) splits
# the cells whose keys differ most into smaller ones (Refinement), adding this share of its tokens
# wherever it is pooled. A cell's mean key is not its softmax where its keys differ, and with
# SD1.5's VAE (random weights) few cells hold most of that: 5% of them hold 36% of the keys' spread
# within cells. A 2048 px decode with the 4x4 sample forced (bench/vae_stats_bench.py), the context
# pooled 2x2 as at 4096 px: 29.4 dB against exact, refined by 25% 39.2 dB; pooled 4x4 as at
# 8192 px: 23.7, refined by 25% 29.4, by 100% 39.1 dB (unpooled: 39.5 dB). One share at every
# size keeps the context's memory and cost the same from the first canvas it is pooled at (4096 px
# for SD) on: a share growing with the cells' area grew the save's peak with the canvas.
REFINE_SHARE = 1.0
# Exact mode's local_attention windows see their neighbours at full resolution already; the rest
# of the canvas, this coarse, keeps their attention linear in the area.
WINDOW_CONTEXT_SIDE = 64


def as_tokens(t: torch.Tensor, area: Box | None = None) -> torch.Tensor:
    """A map (C, h, w), or its part `area`, as attention tokens (1, n, C)."""
    if area is not None:
        t = t[:, area.y0:area.y1, area.x0:area.x1]
    return t.flatten(1).t().unsqueeze(0)


def pooled_size(height: int, width: int, side: int | None = None) -> tuple[int, int]:
    """The size a map of height x width is pooled to as context of at most `side` tokens a side
    (default CONTEXT_SIDE)."""
    side = side or CONTEXT_SIDE
    return min(height, side), min(width, side)


class CellPool:
    """A map (C, height, width) averaged over the cells of a context's tokens (pooled_size, at most
    `side` a side), added a tile at a time: the map of a canvas too large to hold whole. Row r lies in cell
    r * cells // height, so the cells' edges are ContextTokens.pooled's."""

    def __init__(self, channels: int, height: int, width: int, *, side: int | None = None, device=None):
        self.size = (height, width)
        self.cells = pooled_size(height, width, side)
        self.sums = torch.zeros(channels, *self.cells, device=device)
        self.counts = torch.zeros(self.cells, device=device)

    def _members(self, lo: int, hi: int, axis: int) -> tuple[int, torch.Tensor]:
        """The first cell rows [lo, hi) of an axis fall in, and which of the cells from it each
        one is in, one-hot (cells, rows)."""
        cell = torch.arange(lo, hi, device=self.sums.device) * self.cells[axis] // self.size[axis]
        first = int(cell[0])
        return first, F.one_hot(cell - first, int(cell[-1]) - first + 1).t().float()

    def add(self, tile: torch.Tensor, at: Box) -> None:
        """The map's part `at` (a box on its grid), (C, at.height, at.width)."""
        y, rows = self._members(at.y0, at.y1, 0)
        x, cols = self._members(at.x0, at.x1, 1)
        ny, nx = rows.shape[0], cols.shape[0]
        self.sums[:, y:y + ny, x:x + nx] += torch.einsum("yh,chw,xw->cyx", rows, tile.float().to(self.sums.device),
                                                         cols)
        self.counts[y:y + ny, x:x + nx] += rows.sum(1)[:, None] * cols.sum(1)[None]

    def mean(self) -> torch.Tensor:
        """The pooled map (C, cells); every cell must have been covered."""
        if not (self.counts > 0).all():
            raise ValueError("CellPool: part of the map was never added")
        return self.sums / self.counts


@dataclass
class ContextTokens:
    """One attention pass's context: pooled keys and values (n, C), the centres (2, n) on the pass's
    grid of the cells they lie in, each cell of size `cell` (height, width), and the log of the
    area (in the pass's pixels) each token stands for: added to its score, it weighs in the
    softmax as those pixels would. Default: its whole cell's (a refined context's smaller tokens
    stand for part of one, Refinement)."""

    keys: torch.Tensor
    values: torch.Tensor
    centres: torch.Tensor
    cell: tuple[float, float] = (1.0, 1.0)
    log_areas: torch.Tensor | None = None

    def __post_init__(self):
        if self.log_areas is None:
            self.log_areas = torch.full((self.keys.shape[0],), math.log(self.cell[0] * self.cell[1]),
                                        device=self.keys.device)

    @staticmethod
    def pooled(keys: torch.Tensor, values: torch.Tensor, height: float, width: float,
               side: int | None = None) -> "ContextTokens":
        """The context of key and value maps (C, h, w) covering a canvas of height x width on the
        pass's grid (the maps may be coarser: a shrunk copy's), pooled to `side` tokens a side
        (default CONTEXT_SIDE)."""
        side = pooled_size(*keys.shape[1:], side)
        k, v = (F.adaptive_avg_pool2d(t.unsqueeze(0), side).squeeze(0).flatten(1).t() for t in (keys, values))
        cy = (torch.arange(side[0], device=keys.device) + 0.5) * (height / side[0])
        cx = (torch.arange(side[1], device=keys.device) + 0.5) * (width / side[1])
        centres = torch.stack(torch.meshgrid(cy, cx, indexing="ij")).flatten(1)
        cell = (height / side[0], width / side[1])
        return ContextTokens(k, v, centres, cell)

    def select(self, index: torch.Tensor) -> "ContextTokens":
        """The tokens at `index` (a boolean mask or positions, repeats allowed)."""
        return ContextTokens(self.keys[index], self.values[index], self.centres[:, index], self.cell,
                             self.log_areas[index])

    def cells_within(self, box: Box) -> Box:
        """The largest box inside `box` whose edges lie on the cells' edges: a cell cut by the box's
        edge stays the context's, so no part of the canvas is counted twice or left out."""
        def span(lo: int, hi: int, size: float) -> tuple[int, int]:
            a = math.ceil(math.ceil(lo / size - 1e-6) * size - 1e-6)
            b = math.floor(math.floor(hi / size + 1e-6) * size + 1e-6)
            return (a, max(a, b))

        (y0, y1), (x0, x1) = span(box.y0, box.y1, self.cell[0]), span(box.x0, box.x1, self.cell[1])
        return Box(y0, y1, x0, x1)

    def beside(self, seen: Box, keys: torch.Tensor, values: torch.Tensor):
        """(keys, values, score bias) for an attention that sees `seen` (a box on the pass's grid)
        itself: its own keys and values (1, n, C) followed by the context's tokens outside it; the
        bias None where there are none."""
        cy, cx = self.centres
        outside = ~((cy >= seen.y0) & (cy < seen.y1) & (cx >= seen.x0) & (cx < seen.x1))
        if not outside.any():
            return keys, values, None
        rest = self.select(outside)
        k, v = rest.keys.to(keys.dtype), rest.values.to(values.dtype)
        bias = torch.zeros(1, 1, keys.shape[1] + k.shape[0], device=keys.device, dtype=keys.dtype)
        bias[..., keys.shape[1]:] = rest.log_areas.to(bias)
        return torch.cat([keys, k.unsqueeze(0)], 1), torch.cat([values, v.unsqueeze(0)], 1), bias


def _cell_starts(length: int, cells: int) -> list[int]:
    """Where CellPool's cells along an axis of `length` start (row r is in cell r * cells //
    length), and the axis's end."""
    return [-(-i * length // cells) for i in range(cells + 1)]


class Refinement:
    """Smaller tokens for the cells of a pooled context (ContextTokens.pooled, or CellPool's cells:
    the same) where their keys differ most, made tile by tile from full-resolution key and value
    maps: the canvas's too large to hold whole. In each tile, the cells wholly inside it are split
    in halves along each side (quadrants), the cell or part whose keys' summed squared distance from
    their mean is largest first, until the tile's tokens have grown by `share` (default
    REFINE_SHARE; with what earlier tiles left): that distance is what standing for them by their
    mean loses. A cell across a tile's edge stays whole."""

    def __init__(self, height: int, width: int, *, side: int | None = None, share: float | None = None):
        self.cells = pooled_size(height, width, side)
        self.starts = [_cell_starts(n, c) for n, c in zip((height, width), self.cells)]
        self.share = REFINE_SHARE if share is None else share
        self.credit = 0.0  # tokens a tile left unspent, for the next: small tiles split at all
        cells = self.cells[0] * self.cells[1]
        self.split = torch.zeros(cells, dtype=torch.bool)  # the cells replaced
        # The new tokens go into tensors made once, for as many as there can be: a split cell has
        # one token more than the tokens it added (at most share per cell in all), and no more
        # than its pixels. Tokens kept tile by tile in pieces of their own (hundreds of small
        # tensors at 16384 px) scattered the allocator's heap, which kept 0.1 GB after they went.
        # Pages never written are never resident, so the bound costs address space only.
        self.capacity = min(int(2 * self.share * cells) + 1, height * width)
        self.count = 0  # new tokens so far
        self.parents = torch.zeros(self.capacity, dtype=torch.long)  # each new token's cell
        self.shares = torch.zeros(self.capacity, dtype=torch.float64)  # its share of its cell's pixels
        self.keys: torch.Tensor | None = None  # (capacity, C), made at the first tile (C is its)
        self.values: torch.Tensor | None = None

    def _cells_inside(self, lo: int, hi: int, axis: int) -> list[int]:
        starts = self.starts[axis]
        return [i for i in range(len(starts) - 1) if starts[i] >= lo and starts[i + 1] <= hi]

    def add(self, keys: torch.Tensor, values: torch.Tensor, at: Box) -> None:
        """The key and value maps (C, at.height, at.width) of the canvas's part `at` (a box on the
        pass's grid)."""
        rows, cols = self._cells_inside(at.y0, at.y1, 0), self._cells_inside(at.x0, at.x1, 1)
        if not rows or not cols:
            return
        sums = _Integral(keys)
        rects = [(self.starts[0][r] - at.y0, self.starts[0][r + 1] - at.y0,
                  self.starts[1][c] - at.x0, self.starts[1][c + 1] - at.x0) for r in rows for c in cols]
        cells = [r * self.cells[1] + c for r in rows for c in cols]
        heap = [(-spread, n, rect, cell) for n, (spread, rect, cell)
                in enumerate(zip(sums.spread(rects).tolist(), rects, cells))]
        heapq.heapify(heap)
        budget, count = self.credit + self.share * len(rects), len(heap)
        while heap and heap[0][0] < 0:
            (y0, y1, x0, x1), cell = heap[0][2:]
            ys = [(y0, (y0 + y1) // 2), ((y0 + y1) // 2, y1)] if y1 - y0 > 1 else [(y0, y1)]
            xs = [(x0, (x0 + x1) // 2), ((x0 + x1) // 2, x1)] if x1 - x0 > 1 else [(x0, x1)]
            parts = [(a, b, c, d) for a, b in ys for c, d in xs]
            if len(parts) - 1 > budget:
                break
            heapq.heappop(heap)
            for spread, part in zip(sums.spread(parts).tolist(), parts):
                heapq.heappush(heap, (-spread, count, part, cell))
                count += 1
            budget -= len(parts) - 1
        self.credit = budget
        split = {cell for _, n, _, cell in heap if n >= len(rects)}  # the cells a part of which is in the heap
        leaves = [(rect, cell) for _, _, rect, cell in heap if cell in split]
        if not leaves:
            return
        parts = [rect for rect, _ in leaves]
        areas = [(b - a) * (d - c) for a, b, c, d in parts]
        cell_area = {cell: (c - a) * (d - b) for (a, b), (c, d), cell in
                     ((rect[::2], rect[1::2], cell) for rect, cell in zip(rects, cells))}
        if self.keys is None:
            self.keys, self.values = (torch.empty(self.capacity, t.shape[0]) for t in (keys, values))
        split = torch.tensor(sorted(split))
        if self.split[split].any():  # and the bound above would not hold
            raise ValueError("Refinement.add: a cell was split by two tiles; the tiles must not overlap")
        self.split[split] = True
        new = slice(self.count, self.count + len(leaves))
        self.parents[new] = torch.tensor([cell for _, cell in leaves])
        self.shares[new] = torch.tensor([area / cell_area[cell] for area, (_, cell) in zip(areas, leaves)],
                                        dtype=torch.float64)
        self.keys[new] = sums.means(parts, areas)
        self.values[new] = _Integral(values).means(parts, areas)
        self.count = new.stop

    def apply(self, tokens: ContextTokens) -> ContextTokens:
        """`tokens` (the pooled context of the whole canvas) with the split cells replaced by
        their parts, which share their cell's weight by their pixels."""
        if not self.count:
            return tokens
        device = tokens.keys.device
        keep = ~self.split.to(device)
        parents = self.parents[:self.count].to(device)
        shares = self.shares[:self.count].to(dtype=tokens.log_areas.dtype, device=device)
        return ContextTokens(torch.cat([tokens.keys[keep], self.keys[:self.count].to(tokens.keys)]),
                             torch.cat([tokens.values[keep], self.values[:self.count].to(tokens.values)]),
                             torch.cat([tokens.centres[:, keep], tokens.centres[:, parents]], 1), tokens.cell,
                             torch.cat([tokens.log_areas[keep], tokens.log_areas[parents] + shares.log()]))


class _Integral:
    """Summed-area tables of a map (C, h, w) and of its squared norm, in float64 on the CPU (sums
    over thousands of pixels), for the sums over many rectangles (y0, y1, x0, x1) at once."""

    def __init__(self, t: torch.Tensor):
        t = t.detach().to("cpu", torch.float64)
        self.sums = F.pad(t.cumsum(1).cumsum(2), (1, 0, 1, 0))
        self.squares = F.pad((t * t).sum(0).cumsum(0).cumsum(1), (1, 0, 1, 0))

    @staticmethod
    def _over(table: torch.Tensor, rects) -> torch.Tensor:
        y0, y1, x0, x1 = torch.tensor(rects, dtype=torch.long).t()
        return table[..., y1, x1] - table[..., y0, x1] - table[..., y1, x0] + table[..., y0, x0]

    def spread(self, rects) -> torch.Tensor:
        """Each rectangle's summed squared distance of the map from its mean there."""
        area = torch.tensor([(b - a) * (d - c) for a, b, c, d in rects], dtype=torch.float64)
        spread = self._over(self.squares, rects) - (self._over(self.sums, rects) ** 2).sum(0) / area
        return torch.where(area > 1, spread.clamp_min(0), 0)  # a pixel's is 0, whatever the rounding

    def means(self, rects, areas) -> torch.Tensor:
        """Each rectangle's mean (n, C), in float32."""
        return (self._over(self.sums, rects) / torch.tensor(areas, dtype=torch.float64)).t().float()


def window_context(keys: torch.Tensor, values: torch.Tensor) -> ContextTokens:
    """What local_attention's windows see of the rest of the canvas: its whole key and value maps
    (C, h, w) pooled to WINDOW_CONTEXT_SIDE a side."""
    return ContextTokens.pooled(keys, values, *keys.shape[1:], WINDOW_CONTEXT_SIDE)


@dataclass
class AttentionContext:
    """The whole canvas's context at each attention pass of a program, filled pass by pass as the
    statistics' estimate reaches them (vae_sampled_stats.estimate_stats)."""

    canvas: tuple[int, int]  # the input's height and width, on the input grid
    scales: dict[int, Fraction]  # attention pass index -> its input's scale relative to the input
    tokens: dict[int, ContextTokens] = field(default_factory=dict)
    # attention pass index -> how far in from a crop's cut edge its input is not the canvas's, on
    # the pass's grid (vae_geometry.attention_reach)
    reach: dict[int, int] = field(default_factory=dict)

    def add(self, index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Pass `index`'s context from the whole canvas's key and value maps (C, h, w), at any
        resolution."""
        height, width = (float(n * self.scales[index]) for n in self.canvas)
        self.tokens[index] = ContextTokens.pooled(keys, values, height, width)

    def of_crop(self, crop: Box) -> "CropContext":
        return CropContext(self, crop)


@dataclass
class CropContext:
    """An AttentionContext seen from one crop (a box on the input grid)."""

    context: AttentionContext
    crop: Box

    def extend(self, index: int, keys: torch.Tensor, values: torch.Tensor):
        """ContextTokens.beside for the crop's attention at pass `index`, given the crop's key and
        value maps (C, h, w): its own keys and values (1, n, C) less the band along its cut edges
        that the pass's reach spoils, then the context's tokens for the rest of the canvas (its
        own whole, and no bias, where the context has none)."""
        tokens = self.context.tokens.get(index)
        if tokens is None:
            return as_tokens(keys), as_tokens(values), None
        scale = self.context.scales[index]
        at = self.crop.scaled(scale)
        height, width = (int(n * scale) for n in self.context.canvas)
        reach = self.context.reach.get(index, 0)
        y0, y1, x0, x1 = at  # cut edges move in by the reach; the canvas's own edges stay
        trusted = tokens.cells_within(Box(y0 + reach * (y0 > 0), y1 - reach * (y1 < height),
                                          x0 + reach * (x0 > 0), x1 - reach * (x1 < width)))
        local = trusted.relative_to(at)
        return tokens.beside(trusted, as_tokens(keys, local), as_tokens(values, local))
