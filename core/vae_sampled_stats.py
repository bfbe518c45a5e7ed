"""Sampled mode's GroupNorm statistics: estimated from the picture at full resolution, for
canvases whose activations would not fit in memory whole.

A lattice of crops spread evenly over the canvas, each with context padding, runs pass by pass in
lockstep, and every GroupNorm's statistics are pooled over the inner parts (padding excluded) of
all crops (estimate_stats). A shrunken copy of the whole input runs beside them as a control
variate: the statistics are the copy's, corrected by how the crops differ from the copy at their
places, so the layout comes from the copy and the full-resolution detail from the crops. The
copy's keys and values (the whole canvas's, where that is the sample) fill the attention context
every crop and later tile attends to (attention_context). Where the passes before an attention are
cheap (a decoder's mid block, at the latent's resolution), they run on the whole input instead,
tile by tile (whole_input_moments): their statistics are exact and the context is the canvas's own,
refined where pooled (refine_context).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import torch

from .attention_context import REFINE_SHARE, AttentionContext, CellPool, Refinement, pooled_size
from .tiling import Box
from .vae_geometry import (attention_reach, buffer_scales, input_granularity, input_reach, padding_in, parked_bytes,
                           pass_ticks, prefix_share, shrunk, shrunk_size, tile_boxes)
from .vae_program import AttentionPass, Program
from .vae_runner import GroupStats, Parked, Runner, Tick, channel_sums, moment_stats


@dataclass(frozen=True)
class Sample:
    """Where sampled mode's statistics come from: the canvas in strata, sampled with crops at full
    resolution, each crop with the run's padding around it. The border_px bands along the four
    edges are strata of their own: a VAE's activations are often far larger within a few pixels of
    the picture's edge than inside it (with the demo VAE the outermost 1/32 holds about 90% of the
    late layers' variance), so a sample of the inside alone misses them. Along each axis the
    border bands are taken whole and per_side spans of crop_px are spread evenly over the rest
    (or partition it where they would cover it); the crops are the products of those spans, and
    each counts for the share of its stratum it stands for. Sizes are on the network's pixel side
    (the decoder's output, the encoder's input).

    guide_px: where the caller has the whole input, a copy of it shrunk to about guide_px x
    guide_px runs beside the crops as a control variate: every statistic is the copy's over the
    whole canvas, corrected by how the crops differ from the copy's same places (the mean by the
    difference, the variance by the ratio). The copy sees the whole layout (sky here, forest
    there) that a few crops miss; the crops see what a shrunk copy gets wrong (texture at full
    resolution). 0: the crops alone.

    pass_tile_px: the crops and the guide run pass by pass in tiles of this many pixels, as exact
    mode does, so no pass holds more than a tile's working set beside the parked activations
    (None: each pass whole, whose transient copies of a 1024 px guide take gigabytes with SD's
    VAE). The statistics do not depend on it."""

    per_side: int = 4
    crop_px: int = 256
    border_px: int = 64
    guide_px: int = 1024
    pass_tile_px: int | None = None


def _lattice(length: int, count: int, side: int) -> list[tuple[int, int]]:
    """count spans of `side` spread evenly over [0, length), or count spans partitioning it where
    they would cover it."""
    count = max(1, min(count, length))
    if count * side >= length:
        edges = [round(i * length / count) for i in range(count + 1)]
        return list(zip(edges[:-1], edges[1:]))
    starts = [min(max(0, round((i + 0.5) * length / count - side / 2)), length - side) for i in range(count)]
    return [(s, s + side) for s in starts]


def _axis_strata(length: int, count: int, side: int, border: int) -> list[tuple[int, int, float]]:
    """The sample's spans along one axis, each with the length of its stratum over the length
    sampled there: (start, end, weight)."""
    inside = length - 2 * border
    if border <= 0 or inside < 1:
        border, inside = 0, length
    spans = [(a + border, b + border) for a, b in _lattice(inside, count, side)]
    weight = inside / sum(b - a for a, b in spans)
    edges = [(0, border, 1.0), (length - border, length, 1.0)] if border else []
    return edges[:1] + [(a, b, weight) for a, b in spans] + edges[1:]


def sample_boxes(program: Program, height: int, width: int, sample: Sample) -> list[tuple[Box, float]]:
    """The inner boxes (input grid, on the input's granularity) of the crops a sample takes from
    an input of height x width, each with its weight: the area of its stratum over the area
    sampled in that stratum (1 where the sample covers it)."""
    g = input_granularity(program)

    def units(px: int) -> int:
        return round(px / float(program.pixel_scale) / g)

    side, border = max(1, units(sample.crop_px)), units(sample.border_px)
    rows = _axis_strata(height // g, sample.per_side, side, border)
    cols = _axis_strata(width // g, sample.per_side, side, border)
    return [(Box(y0, y1, x0, x1).scaled(g), wy * wx) for y0, y1, wy in rows for x0, x1, wx in cols]


def sample_crops(program: Program, height: int, width: int, sample: Sample, pad_in: int,
                 guided: bool = False) -> tuple[list[Box], list[Box], list[float]]:
    """(inner boxes, crops, weights) of a sample of an input of height x width, crops padded by
    pad_in (input grid). One crop, the whole input, instead (exact statistics, for less work and
    memory) where the padded crops would take more area than the input itself, or, guided, where
    the input is no larger than the guide would be."""
    whole = Box(0, height, 0, width)
    if guided and sample.guide_px and shrunk_size(height, width, program, sample.guide_px) == (height, width):
        return [whole], [whole], [1.0]
    inner, weights = zip(*sample_boxes(program, height, width, sample))
    crops = [box.grown(pad_in, height, width) for box in inner]
    if sum(c.height * c.width for c in crops) >= height * width:
        return [whole], [whole], [1.0]
    return list(inner), crops, list(weights)


@dataclass
class Guide:
    """A shrunk copy of the whole input (C, h, w) and each sample crop's inner box on its grid."""

    input: torch.Tensor
    boxes: list[Box]


def _takes_guide(sample: Sample, inner: Sequence[Box], height: int, width: int) -> bool:
    """Whether a sample with these inner boxes runs a guide: not where it is the whole input."""
    return bool(sample.guide_px) and list(inner) != [Box(0, height, 0, width)]


def guide_for(program: Program, x: torch.Tensor, inner: Sequence[Box], sample: Sample) -> Guide | None:
    """The guide of a sample of x (C, H, W) whose crops' inner boxes are `inner`; None where the
    sample is the whole input or sample.guide_px is 0."""
    height, width = x.shape[-2:]
    if not _takes_guide(sample, inner, height, width):
        return None
    copy = shrunk(x, program, sample.guide_px)
    h, w = copy.shape[-2:]
    g = input_granularity(program)

    def span(lo: int, hi: int, length: int, to: int) -> tuple[int, int]:
        a, b = (min(to, round(v * to / length / g) * g) for v in (lo, hi))
        return (a, b) if b > a else (min(a, to - g), min(a, to - g) + g)

    return Guide(copy, [Box(*span(b.y0, b.y1, height, h), *span(b.x0, b.x1, width, w)) for b in inner])


def _pooled_moments(buffers: Sequence[dict[str, Parked]], name: str, boxes: Sequence[Box], weights: Sequence[float],
                    scale: Fraction) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel means of x and x² of activation `name` over the boxes (input grid, scaled to
    the activation's), each box's pixels counting `weight` times."""
    sums = sumsq = 0
    pixels = 0.0
    for parked, box, weight in zip(buffers, boxes, weights):
        area = box.scaled(scale)
        s1, s2 = channel_sums(parked[name].data[:, area.y0:area.y1, area.x0:area.x1])
        sums, sumsq = sums + weight * s1, sumsq + weight * s2
        pixels += weight * area.height * area.width
    return sums / pixels, sumsq / pixels


# Where the passes before an attention cost at most this share of the whole program (prefix_share:
# 1.6% for SD's decoder's mid-block attention, 96% for its encoder's), the passes up to it run on
# the whole input at full resolution (whole_input_passes; 2.4% of SD's decoder in all): their
# statistics are exact and the attention's context is the canvas's own keys, not the guide's
# shrunk copy's (with SD1.5's VAE, random weights, the copy's keys left a 2048 px decode at 30 dB
# against exact).
FULL_CONTEXT_MAX_SHARE = 0.1
# The tiles (pixel side) the whole input runs in to such a pass, each with the reach of the passes
# before it; inside them the passes run in the sample's tiles (Sample.pass_tile_px). SD's decoder
# holds about 0.1 GB of activations for one.
FULL_CONTEXT_TILE_PX = 1024


def full_context_passes(program: Program) -> list[int]:
    """The attention passes whose context sampled mode takes from the whole input at full resolution."""
    return [i for i, p in enumerate(program.passes)
            if isinstance(p, AttentionPass) and prefix_share(program, i) <= FULL_CONTEXT_MAX_SHARE]


def whole_input_passes(program: Program) -> list[int]:
    """The passes whose input sampled mode computes over the whole input at full resolution, for
    exact statistics and, at attention, the context: every GroupNorm up to the last attention of
    full_context_passes. Each costs a run of the passes before it."""
    context = full_context_passes(program)
    return [i for i, p in enumerate(program.passes[:context[-1] + 1]) if p.norm is not None] if context else []


def _pass_size(program: Program, index: int, height: int, width: int) -> tuple[int, int]:
    """The size of pass `index`'s input for a program input of height x width."""
    scale = buffer_scales(program)[program.passes[index].src]
    return int(height * scale), int(width * scale)


def _whole_input_crops(program: Program, index: int, height: int, width: int) -> list[tuple[Box, Box]]:
    """(tile, crop) over an input of height x width: the tiles partition it, and each crop is its
    tile grown by the reach of pass `index`'s input (input_reach), so that input over the tile is
    the whole canvas's."""
    g = input_granularity(program)
    scale = buffer_scales(program)[program.passes[index].src]
    halo = math.ceil(input_reach(program)[index] / scale / g) * g
    return [(box, box.grown(halo, height, width)) for box in tile_boxes(program, height, width, FULL_CONTEXT_TILE_PX)]


def _whole_input_tiles(program: Program, index: int, whole: torch.Tensor, context: AttentionContext | None,
                       runner: Runner):
    """Pass `index`'s input over the whole input `whole` (C, H, W) at full resolution, a tile at a
    time: the passes before it run crop by crop (_whole_input_crops) with runner (its statistics so
    far) and only each crop's tile is kept, so memory is a crop's activations. Yields (the tile on
    the pass's grid, the input there)."""
    src = program.passes[index].src
    scale = buffer_scales(program)[src]
    height, width = whole.shape[-2:]
    for box, crop in _whole_input_crops(program, index, height, width):
        parked = {program.input: Parked(whole[:, crop.y0:crop.y1, crop.x0:crop.x1].to(runner.park_device), None, None)}
        # the attention passes on the way see the rest of the canvas through the context
        runner.advance(parked, index, context=context.of_crop(crop) if context is not None else None)
        inner = box.relative_to(crop).scaled(scale)
        yield box.scaled(scale), parked[src].data[:, inner.y0:inner.y1, inner.x0:inner.x1]


def whole_input_moments(program: Program, index: int, whole: torch.Tensor, context: AttentionContext | None,
                        runner: Runner, pool: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pass `index`'s input over the whole input `whole` (C, H, W) at full resolution
    (_whole_input_tiles): the per-channel means of x and x², and (pool) the input pooled to its
    context's size: pooling it pools an attention's keys and values, the GroupNorm and the key and
    value convolutions being affine."""
    height, width = _pass_size(program, index, *whole.shape[-2:])
    sums = sumsq = cells = None
    for at, x in _whole_input_tiles(program, index, whole, context, runner):
        s1, s2 = channel_sums(x)
        sums, sumsq = (s1, s2) if sums is None else (sums + s1, sumsq + s2)
        if pool:
            cells = cells or CellPool(x.shape[0], height, width, device=runner.device)
            cells.add(x, at)
    return sums / (height * width), sumsq / (height * width), cells.mean() if pool else None


def _refines(program: Program, index: int, height: int, width: int) -> bool:
    """Whether sampled mode refines the context of attention pass `index` (a full_context_passes
    one) of an input of height x width: where it is pooled."""
    size = _pass_size(program, index, height, width)
    return pooled_size(*size) != size


def refined_passes(program: Program, height: int, width: int) -> list[int]:
    """The full_context_passes whose context sampled mode refines for an input of height x width."""
    return [i for i in full_context_passes(program) if _refines(program, i, height, width)]


def refine_context(program: Program, index: int, whole: torch.Tensor, context: AttentionContext, runner: Runner,
                   stats: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Splits the cells of attention pass `index`'s pooled context where the whole input's keys
    differ most (attention_context.Refinement), from its keys and values at full resolution: the
    passes before it run again, tile by tile (_whole_input_tiles), now that its statistics are known."""
    p = program.passes[index]
    refinement = Refinement(*_pass_size(program, index, *whole.shape[-2:]))
    for at, x in _whole_input_tiles(program, index, whole, context, runner):
        refinement.add(*runner.key_value_maps(index, p, x, stats, pool=False), at)
    context.tokens[index] = refinement.apply(context.tokens[index])


def _estimate(buffers: Sequence[dict[str, Parked]], name: str, inner: Sequence[Box], weights: Sequence[float],
              scale: Fraction, groups: int, guide) -> tuple[torch.Tensor, torch.Tensor]:
    """A GroupNorm's statistics of activation `name` from the crops' inner boxes; with a guide
    (its activations, the crops' boxes on it and its own statistics there), the guide's corrected
    by how the crops differ from the guide at their places: the mean by the difference, the variance
    by the ratio."""
    mean, var = moment_stats(*_pooled_moments(buffers, name, inner, weights, scale), groups)
    if guide is None:
        return mean, var
    guide_parked, boxes, (guide_mean, guide_var) = guide
    there_mean, there_var = moment_stats(  # the copy at the crops' places, weighted as they are
        *_pooled_moments([guide_parked] * len(inner), name, boxes, weights, scale), groups)
    return guide_mean + (mean - there_mean), torch.where(there_var > 0, var * guide_var / there_var.clamp_min(1e-30),
                                                         var)


def estimate_stats(program: Program, crops: Sequence[torch.Tensor], inner: Sequence[Box], *, device, dtype,
                   weights: Sequence[float] | None = None, guide: Guide | None = None, park_device=None,
                   tick: Tick | None = None, context: AttentionContext | None = None,
                   crop_boxes: Sequence[Box] | None = None, pass_tile_px: int | None = None,
                   whole: torch.Tensor | None = None) -> GroupStats:
    """Every GroupNorm's statistics pooled over the inner parts of full-resolution crops.

    crops: input crops (C, h, w), each with context around its inner box; inner: each crop's inner
    box relative to the crop, on the input grid and its granularity; weights: how much each crop's
    pixels count (default 1 each: a plain pool). The crops run pass by pass in lockstep, each pass
    normalising with the statistics estimated so far, so pass i's statistics come from the inner
    parts of all crops as the network computed them. guide (Sample.guide_px): a shrunk copy of the
    whole input run beside them with its own statistics; each estimate is then the copy's, the
    mean shifted by the crops' difference from the copy's same boxes and the variance scaled by
    their ratio. Memory: the crops' and the guide's activations (exact mode's parked activations
    for a picture of their total area), on park_device (default: the compute device), and the
    working set of a tile of pass_tile_px (Sample.pass_tile_px).

    context: filled at every attention pass from the guide's keys and values (the one crop's, where
    it is the whole input). whole: the whole input, where the caller has it: the passes up to the
    cheap attentions (whole_input_passes) then take their statistics and context from it at full
    resolution instead."""
    if len(crops) != len(inner) or not crops:
        raise ValueError("estimate_stats needs one inner box per crop, and at least one crop")
    stats: GroupStats = {}
    guide_stats: GroupStats = {}
    park = park_device or device
    runner = Runner(program, device=device, dtype=dtype, park_device=park, tile_px=pass_tile_px, frozen=stats,
                    tick=tick)
    scale_of = buffer_scales(program)
    buffers = [{program.input: Parked(crop.to(park), None, None)} for crop in crops]
    runs = [(runner, parked) for parked in buffers]  # every activation set with the runner that advances it
    if guide is not None:
        guide_parked = {program.input: Parked(guide.input.to(park), None, None)}
        runs.append((Runner(program, device=device, dtype=dtype, park_device=park, tile_px=pass_tile_px,
                            frozen=guide_stats, tick=tick), guide_parked))
    weights = [1.0] * len(crops) if weights is None else weights
    crop_contexts = [None] * len(crops)
    if context is not None:
        if crop_boxes is None or len(crop_boxes) != len(crops):
            raise ValueError("estimate_stats needs every crop's box on the canvas to fill an attention context")
        crop_contexts = [context.of_crop(box) for box in crop_boxes]
    crop_contexts.append(None)  # the guide attends to the whole of itself
    from_whole = whole_input_passes(program) if guide is not None and whole is not None else []
    refined = refined_passes(program, *whole.shape[-2:]) if from_whole else []
    last = len(program.passes) - 1
    for index, p in enumerate(program.passes):
        attention_input = None
        if p.norm is not None:
            scale, groups = scale_of[p.src], p.norm.groups
            if guide is not None:  # the guide runs on with its own statistics
                copy = Box(0, guide.input.shape[-2], 0, guide.input.shape[-1])
                guide_stats[index] = moment_stats(*_pooled_moments([guide_parked], p.src, [copy], [1.0], scale), groups)
            if index in from_whole:
                first, second, attention_input = whole_input_moments(program, index, whole, context, runner,
                                                            pool=context is not None and isinstance(p, AttentionPass))
                stats[index] = moment_stats(first, second, groups)
            else:
                there = (guide_parked, guide.boxes, guide_stats[index]) if guide is not None else None
                stats[index] = _estimate(buffers, p.src, inner, weights, scale, groups, there)
        if index == last:
            break
        if context is not None and isinstance(p, AttentionPass):
            if attention_input is None:  # not from the whole input: the guide's (the one crop's where it is the whole)
                attention_input = (guide_parked if guide is not None else buffers[0])[p.src].data
            context.add(index, *runner.key_value_maps(index, p, attention_input, stats[index]))
            if index in refined:
                refine_context(program, index, whole, context, runner, stats[index])
        for (run, parked), crop_context in zip(runs, crop_contexts):
            dst = run.run_pass(index, p, parked, context=crop_context)
            for name in program.last_reads[index]:
                del parked[name]
            parked[p.dst] = dst
    return stats


def sampled_stats(program: Program, height: int, width: int, sample: Sample, pad_in: int,
                  crop_of: Callable[[Box], torch.Tensor], *, whole: torch.Tensor | None = None, device, dtype,
                  park_device=None, tick: Tick | None = None) -> tuple[GroupStats, AttentionContext | None]:
    """Sampled mode's statistics of an input of height x width: its sample's crops (padded by
    pad_in, made by crop_of) and, where the caller has the whole input, its guide; and the
    attention context its tiles see (None without a guide, unless the one crop is the whole)."""
    inner, crops, weights = sample_crops(program, height, width, sample, pad_in, guided=whole is not None)
    guide = guide_for(program, whole, inner, sample) if whole is not None else None
    context = None
    if guide is not None or crops == [Box(0, height, 0, width)]:
        context = attention_context(program, height, width)
    stats = estimate_stats(program, [crop_of(c) for c in crops], [box.relative_to(c) for box, c in zip(inner, crops)],
                           weights=weights, guide=guide, device=device, dtype=dtype, park_device=park_device,
                           tick=tick, context=context, crop_boxes=crops, pass_tile_px=sample.pass_tile_px,
                           whole=whole)
    return stats, context


def attention_context(program: Program, height: int, width: int) -> AttentionContext | None:
    """An empty AttentionContext for an input of height x width (None for a program without
    attention)."""
    scale_of = buffer_scales(program)
    scales = {i: scale_of[p.src] for i, p in enumerate(program.passes) if isinstance(p, AttentionPass)}
    return AttentionContext((height, width), scales, reach=attention_reach(program)) if scales else None


def sampled_ticks(program: Program, height: int, width: int, sample: Sample, pad_in: int, guided: bool) -> int:
    """Progress ticks sampled_stats gives: every pass but the last (which needs only its input's
    statistics) run on every crop and on the guide, in tiles of sample.pass_tile_px."""
    inner, crops, _ = sample_crops(program, height, width, sample, pad_in, guided)
    sizes = [(c.height, c.width) for c in crops]
    context = 0
    if guided and _takes_guide(sample, inner, height, width):
        sizes.append(shrunk_size(height, width, program, sample.guide_px))
        runs = whole_input_passes(program)  # and again for the contexts it refines
        runs += refined_passes(program, height, width)
        context = sum(pass_ticks(program, c.height, c.width, sample.pass_tile_px, index)
                      for index in runs for _, c in _whole_input_crops(program, index, height, width))
    return context + sum(pass_ticks(program, h, w, sample.pass_tile_px, len(program.passes) - 1) for h, w in sizes)


def sample_parked_bytes(program: Program, height: int, width: int, sample: Sample, padding_px: int,
                        dtype: torch.dtype) -> int:
    """The most memory run_sampled's statistics take at once for an input of height x width: the
    sample's crops and the guide, which run_sampled always has."""
    inner, crops, _ = sample_crops(program, height, width, sample, padding_in(program, padding_px), guided=True)
    total = sum(parked_bytes(program, c.height, c.width, dtype) for c in crops)
    if _takes_guide(sample, inner, height, width):
        total += parked_bytes(program, *shrunk_size(height, width, program, sample.guide_px), dtype)
        total += max([parked_bytes(program, c.height, c.width, dtype, passes=index)  # beside them, one at a time
                      for index in whole_input_passes(program)
                      for _, c in _whole_input_crops(program, index, height, width)], default=0)
    return total


def context_bytes(program: Program, height: int, width: int, dtype: torch.dtype) -> int:
    """At most what the attention context of an input of height x width takes: every attention
    pass's pooled keys and values (REFINE_SHARE more where refined), twice (a crop's attention joins
    a copy to its own)."""
    refined = refined_passes(program, height, width)
    total = 0
    for i, p in enumerate(program.passes):
        if isinstance(p, AttentionPass):
            size = _pass_size(program, i, height, width)
            share = REFINE_SHARE if i in refined else 0.0
            total += 2 * int(math.prod(pooled_size(*size)) * (1 + share)) * (p.k.out_channels + p.v.out_channels)
    return total * (torch.finfo(dtype).bits // 8)
