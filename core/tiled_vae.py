"""Running a compiled VAE program (``vae_program``) tile by tile.

Exact mode streams the network pass by pass. Each pass reads its input tile plus the halo its
convolution needs (1 px; around a 2x upsample, 1 px of the upsampled image) from an activation
parked in host memory, normalises it with the GroupNorm statistics pooled over the whole image,
convolves on the device and writes the tile back, adding the tile's per-channel sum and sum of
squares to the pooled statistics of the output. Every pixel is counted once and padding never
enters the statistics, so the result is the whole-image computation done in pieces: equal up to
rounding, with device memory bounded by the tile. Host memory holds the few full-resolution
activations a residual block keeps alive at once (parked_bytes); where they fit on the device
beside the tile, the caller may park them there instead.

Fast mode estimates every GroupNorm's statistics once, from a copy of the input shrunk to about
one tile, then runs each tile with some padding independently with those statistics frozen. Its
device and host memory are bounded by the tile, but it is an approximation: statistics are
estimated and convolutions near a tile's edge see padding instead of their neighbours.

Sampled mode estimates the statistics from the picture at full resolution instead: a lattice of
crops spread evenly over the canvas, each with context padding, runs pass by pass in lockstep, and
every GroupNorm's statistics are pooled over the inner parts (padding excluded) of all crops
(estimate_stats). A shrunken copy of the whole input runs beside them as a control variate: the
statistics are the copy's, corrected by how the crops differ from the copy at their places, so
the layout comes from the copy and the full-resolution detail from the crops. Then every tile
runs independently with those statistics frozen, as in fast mode (run_frozen). A global attention
layer would see only its crop or tile; instead it also attends to the copy (or the whole canvas,
where that is what the statistics came from), pooled to a few thousand tokens that each weigh as
the area they stand for (AttentionContext). Memory is bounded by the sample and the copy (as exact
mode on a picture of their total area) and the tile, whatever the canvas size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .attention_context import AttentionContext, ContextTokens, CropContext, pooled_size
from .tiling import Box, grid, grid_count
from .vae_program import AttentionPass, Conv, ConvPass, Norm, Program

# A write of one finished output tile: (sample index, box on the output grid, tile (C, h, w)).
Sink = Callable[[int, Box, torch.Tensor], None]
# Called after every unit of work; may raise to cancel (ComfyUI's interrupt does).
Tick = Callable[[], None]
# Per-pass group statistics: pass index -> (mean, variance), each float64 of shape (groups,).
GroupStats = dict[int, tuple[torch.Tensor, torch.Tensor]]

# Attention scores are computed for this many query x key pairs at a time at most.
_ATTENTION_CHUNK_ELEMENTS = 1 << 26


class NonFiniteActivation(ArithmeticError):
    """An activation overflowed (typically fp16); the caller recomputes in float32."""


@dataclass
class _Parked:
    """A full-resolution activation and the pooled statistics of everything written to it."""

    data: torch.Tensor  # (C, H, W)
    sums: torch.Tensor  # float64 (C,)
    sumsq: torch.Tensor  # float64 (C,)

    @staticmethod
    def empty(channels: int, height: int, width: int, *, device, dtype) -> "_Parked":
        data = torch.empty(channels, height, width, device=device, dtype=dtype)
        return _Parked(data, torch.zeros(channels, dtype=torch.float64, device=device),
                       torch.zeros(channels, dtype=torch.float64, device=device))

    @staticmethod
    def of(data: torch.Tensor) -> "_Parked":
        return _Parked(data, *_channel_sums(data))

    def accumulate(self, tile: torch.Tensor) -> None:
        sums, sumsq = _channel_sums(tile)
        self.sums += sums.to(self.sums.device)
        self.sumsq += sumsq.to(self.sumsq.device)

    def group_stats(self, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, height, width = self.data.shape
        return _group_stats(self.sums, self.sumsq, height * width, groups)


def _group_stats(sums: torch.Tensor, sumsq: torch.Tensor, pixels: int, groups: int):
    """A GroupNorm's (mean, variance) per group from per-channel sums over `pixels` pixels."""
    return _moment_stats(sums / pixels, sumsq / pixels, groups)


def _moment_stats(first: torch.Tensor, second: torch.Tensor, groups: int):
    """A GroupNorm's (mean, variance) per group from per-channel means of x and of x²."""
    mean = first.view(groups, -1).mean(1)
    var = (second.view(groups, -1).mean(1) - mean * mean).clamp_min(0)
    if not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
        raise NonFiniteActivation("an activation overflowed")
    return mean, var


def _channel_sums(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Rows in float32 (a tile's row is short enough to lose nothing that matters: ~1e-8), then
    # float64 across rows and tiles: 4x faster on a CPU than converting every value to float64.
    t = t.float()
    return t.sum(dim=2).double().sum(dim=1), (t * t).sum(dim=2).double().sum(dim=1)


def _norm_affine(norm: Norm, mean: torch.Tensor, var: torch.Tensor, channels: int, *, device, dtype):
    """GroupNorm as a per-channel scale and shift, given the group statistics."""
    per_group = channels // norm.groups
    inv = torch.rsqrt(var + norm.eps).repeat_interleave(per_group)
    mean = mean.repeat_interleave(per_group)
    weight = norm.weight.to(device=device, dtype=torch.float64) if norm.weight is not None else 1.0
    bias = norm.bias.to(device=device, dtype=torch.float64) if norm.bias is not None else 0.0
    scale = (inv.to(device) * weight)
    shift = bias - mean.to(device) * scale
    return (scale.to(dtype).view(-1, 1, 1), shift.to(dtype).view(-1, 1, 1))


@dataclass
class _DeviceConv:
    """A convolution's weights cast once per pass to the compute device and dtype; padding is
    applied by the caller, who knows which sides are image border and which are neighbours."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int

    @staticmethod
    def of(conv: Conv, device, dtype) -> "_DeviceConv":
        bias = conv.bias.to(device=device, dtype=dtype) if conv.bias is not None else None
        return _DeviceConv(conv.weight.to(device=device, dtype=dtype), bias, conv.stride)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.unsqueeze(0), self.weight, self.bias, stride=self.stride).squeeze(0)


def _axis_window(o0: int, o1: int, length: int, upsample: bool, stride: int, kernel: int,
                 pad_before: int) -> tuple[int, int, int, int, int]:
    """Which source rows an output span needs.

    Returns (source start, source end, offset into the resampled crop, zeros before, zeros after):
    the rows [start, end) of the source, resampled, cropped from the offset, and padded with the
    given zeros, are exactly the window the convolution reads for outputs [o0, o1).
    """
    virtual = length * 2 if upsample else length
    lo = o0 * stride - pad_before
    hi = (o1 - 1) * stride - pad_before + kernel
    va, vb = max(lo, 0), min(hi, virtual)
    if upsample:
        sa, sb = va // 2, (vb - 1) // 2 + 1
        return sa, sb, va - 2 * sa, va - lo, hi - vb
    return va, vb, 0, va - lo, hi - vb


def _out_length(length: int, conv: Conv, upsample: bool, before: int, after: int) -> int:
    virtual = length * 2 if upsample else length
    return (virtual + before + after - conv.kernel) // conv.stride + 1


def _out_size(p: ConvPass, height: int, width: int) -> tuple[int, int]:
    """A convolution pass's output size for an input of height x width."""
    top, bottom, left, right = p.conv.padding
    return (_out_length(height, p.conv, p.upsample, top, bottom),
            _out_length(width, p.conv, p.upsample, left, right))


def _pass_tile(program: Program, index: int, tile_px: int | None) -> int:
    """The tile side on pass `index`'s output grid for a tile of `tile_px` pixels (None: whole image)."""
    if tile_px is None:
        return 1 << 30
    return max(1, math.ceil(tile_px * program.scales[index] / program.pixel_scale))


class _Runner:
    def __init__(self, program: Program, *, device, dtype, park_device, tile_px: int | None,
                 frozen: GroupStats | None = None, record: GroupStats | None = None, tick: Tick | None = None,
                 attention_margin_px: int | None = None, context: CropContext | None = None):
        self.program = program
        self.context = context
        self.device, self.dtype, self.park_device = device, dtype, park_device
        self.tile_px = tile_px
        self.attention_margin_px = attention_margin_px
        self.frozen, self.record, self.tick = frozen, record, tick

    def _affine(self, index: int, norm: Norm, src: _Parked):
        if self.frozen is not None:
            mean, var = self.frozen[index]
        else:
            mean, var = src.group_stats(norm.groups)
        if self.record is not None:
            self.record[index] = (mean, var)
        return _norm_affine(norm, mean, var, src.data.shape[0], device=self.device, dtype=self.dtype)

    def _load(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self.device, dtype=self.dtype, non_blocking=True)

    def run(self, x: torch.Tensor, sink: Callable[[Box, torch.Tensor], None]) -> None:
        """Run the program on one sample x (C, H, W); every output tile goes to sink."""
        buffers = {self.program.input: _Parked.of(x.to(self.park_device))}
        last = len(self.program.passes) - 1
        for index, p in enumerate(self.program.passes):
            out_sink = sink if index == last else None
            if isinstance(p, ConvPass):
                dst = self._conv_pass(index, p, buffers, out_sink)
            else:
                dst = self._attention_pass(index, p, buffers, out_sink)
            for name in self.program.last_reads[index]:
                del buffers[name]
            if dst is not None:
                buffers[p.dst] = dst

    def _finish_tile(self, y: torch.Tensor, box: Box, dst: _Parked | None, sink) -> None:
        if dst is None:
            if not torch.isfinite(y).all():
                raise NonFiniteActivation("the output overflowed")
            sink(box, y)
        else:
            if self.frozen is None:  # frozen statistics (fast mode's tiles) need no new sums
                dst.accumulate(y)
            # Blocking: a non-blocking device-to-host copy may still be in flight when read.
            dst.data[:, box.y0:box.y1, box.x0:box.x1] = y.to(self.park_device)
        if self.tick is not None:
            self.tick()

    def _conv_pass(self, index: int, p: ConvPass, buffers: dict[str, _Parked], sink) -> _Parked | None:
        src = buffers[p.src]
        _, height, width = src.data.shape
        top, _, left, _ = p.conv.padding
        out_h, out_w = _out_size(p, height, width)
        dst = None if sink else _Parked.empty(p.out_channels, out_h, out_w, device=self.park_device, dtype=self.dtype)
        conv = _DeviceConv.of(p.conv, self.device, self.dtype)
        shortcut = _DeviceConv.of(p.shortcut, self.device, self.dtype) if p.shortcut is not None else None
        affine = self._affine(index, p.norm, src) if p.norm is not None else None
        residual = buffers[p.residual] if p.residual is not None else None
        tile = _pass_tile(self.program, index, self.tile_px)
        for box in grid(out_h, out_w, tile, tile):
            sy0, sy1, cy, zt, zb = _axis_window(box.y0, box.y1, height, p.upsample, p.conv.stride, p.conv.kernel, top)
            sx0, sx1, cx, zl, zr = _axis_window(box.x0, box.x1, width, p.upsample, p.conv.stride, p.conv.kernel, left)
            t = self._load(src.data[:, sy0:sy1, sx0:sx1])
            if affine is not None:
                t = torch.addcmul(affine[1], t, affine[0])
            if p.silu:
                t = F.silu(t, inplace=affine is not None)
            if p.upsample:
                rows = box.y1 - box.y0 + (p.conv.kernel - 1) - zt - zb
                cols = box.x1 - box.x0 + (p.conv.kernel - 1) - zl - zr
                t = F.interpolate(t.unsqueeze(0), scale_factor=2.0, mode="nearest").squeeze(0)
                t = t[:, cy:cy + rows, cx:cx + cols]
            if zt or zb or zl or zr:
                t = F.pad(t, (zl, zr, zt, zb))
            y = conv(t)
            del t
            if residual is not None:
                r = self._load(residual.data[:, box.y0:box.y1, box.x0:box.x1])
                y += shortcut(r) if shortcut is not None else r
            self._finish_tile(y, box, dst, sink)
        return dst

    def _attention_pass(self, index: int, p: AttentionPass, buffers: dict[str, _Parked], sink,
                        context: CropContext | None = None) -> _Parked | None:
        context = context or self.context
        src = buffers[p.src]
        channels, height, width = src.data.shape
        scale, shift = self._affine(index, p.norm, src)
        q, k, v, proj = (_DeviceConv.of(c, self.device, self.dtype) for c in (p.q, p.k, p.v, p.proj))
        keys = torch.empty(k.weight.shape[0], height, width, device=self.device, dtype=self.dtype)
        values = torch.empty(v.weight.shape[0], height, width, device=self.device, dtype=self.dtype)
        tile = _pass_tile(self.program, index, self.tile_px)
        boxes = list(grid(height, width, tile, tile))
        for box in boxes:
            h = torch.addcmul(shift, self._load(src.data[:, box.y0:box.y1, box.x0:box.x1]), scale)
            keys[:, box.y0:box.y1, box.x0:box.x1] = k(h)
            values[:, box.y0:box.y1, box.x0:box.x1] = v(h)
            if self.tick is not None:
                self.tick()
        dst = None if sink else _Parked.empty(p.out_channels, height, width, device=self.park_device, dtype=self.dtype)
        whole = Box(0, height, 0, width)
        margin = None if self.attention_margin_px is None else _pass_tile(self.program, index,
                                                                         self.attention_margin_px)
        # A window sees the rest of the canvas as context, as a lone tile does (attention_context).
        outside = ContextTokens.pooled(keys, values, height, width) if margin is not None else None
        for box in boxes:
            # Global attention (exact) costs the square of the area; a window keeps it linear.
            seen = whole if margin is None else box.grown(margin, height, width)
            k_seen, v_seen = (t[:, seen.y0:seen.y1, seen.x0:seen.x1].flatten(1).t().unsqueeze(0)
                              for t in (keys, values))
            bias = None
            if outside is not None:
                k_seen, v_seen, bias = outside.beside(seen, k_seen, v_seen)
            elif context is not None:
                k_seen, v_seen, bias = context.extend(index, k_seen, v_seen)
            chunk = max(1, _ATTENTION_CHUNK_ELEMENTS // k_seen.shape[1])
            x = self._load(src.data[:, box.y0:box.y1, box.x0:box.x1])
            queries = q(torch.addcmul(shift, x, scale))
            c, bh, bw = queries.shape
            queries = queries.flatten(1).t().unsqueeze(0)
            attended = torch.cat([F.scaled_dot_product_attention(queries[:, i:i + chunk], k_seen, v_seen,
                                                                 attn_mask=bias)
                                  for i in range(0, queries.shape[1], chunk)], dim=1)
            y = proj(attended.squeeze(0).t().reshape(c, bh, bw))
            y += x
            self._finish_tile(y, box, dst, sink)
        return dst


def steps_per_sample(program: Program, height: int, width: int, tile_px: int, fast: bool,
                     sample: "Sample | None" = None, padding_px: int = 0) -> int:
    """Units of work (progress ticks) for one sample of the given input size: exact mode's, fast
    mode's (fast) or sampled mode's (a sample given, with its padding)."""
    if sample is not None:
        return (sampled_ticks(program, height, width, sample, padding_in(program, padding_px), True)
                + len(tile_boxes(program, height, width, tile_px)))
    if fast:
        return 1 + len(tile_boxes(program, height, width, tile_px))
    total = 0
    h, w = height, width
    for index, p in enumerate(program.passes):
        if isinstance(p, ConvPass):
            h, w = _out_size(p, h, w)
        tile = _pass_tile(program, index, tile_px)
        total += grid_count(h, w, tile, tile) * (2 if isinstance(p, AttentionPass) else 1)
    return total


def global_attention_share(program: Program, height: int, width: int) -> float:
    """The share of the program's multiply-adds spent in global attention (scores and weighted
    sums) for an input of height x width: exact mode's one cost growing with the square of the area."""
    linear = quadratic = 0.0
    for index, p in enumerate(program.passes):
        px = float(program.scales[index]) ** 2 * height * width
        if isinstance(p, ConvPass):
            linear += px * p.conv.kernel ** 2 * p.conv.in_channels * p.conv.out_channels
        else:
            channels = p.out_channels
            linear += 4 * px * channels * channels  # q, k, v and the projection
            quadratic += 2 * px * px * channels
    return quadratic / (linear + quadratic)


def input_granularity(program: Program) -> int:
    """Input sizes must be multiples of this (the encoder's total downsampling)."""
    smallest = min([program.output_scale, *program.scales, 1])
    return smallest.denominator


def min_tile_px(program: Program) -> int:
    """The smallest tile that gives every pass at least a few pixels to work on."""
    smallest = min([*program.scales, 1])
    return int(4 * program.pixel_scale / smallest)


def tile_boxes(program: Program, height: int, width: int, tile_px: int) -> list[Box]:
    """Fast and sampled modes' tiles (and the pixel route's) on the input grid, their edges on the
    input's granularity so each tile's output lands on whole output pixels."""
    g = input_granularity(program)
    tile = max(1, int(tile_px / program.pixel_scale) // g)
    return [box.scaled(g) for box in grid(height // g, width // g, tile, tile)]


def _tile_bytes_per_px(program: Program, dtype: torch.dtype) -> float:
    """Device bytes a tile's working set takes per pixel of tile side squared (the largest pass)."""
    bytes_per_px = 0.0
    for index, p in enumerate(program.passes):
        area = float(program.scales[index] / program.pixel_scale) ** 2
        in_ch = p.conv.in_channels if isinstance(p, ConvPass) else p.out_channels
        bytes_per_px = max(bytes_per_px, (4 * in_ch + 2 * p.out_channels) * area)
    return bytes_per_px * (torch.finfo(dtype).bits // 8)


def tile_working_bytes(program: Program, tile_px: int, dtype: torch.dtype) -> int:
    """Device memory one tile of tile_px x tile_px pixels needs while it runs."""
    return int(_tile_bytes_per_px(program, dtype) * tile_px * tile_px)


def parked_bytes(program: Program, height: int, width: int, dtype: torch.dtype) -> int:
    """The most memory exact mode's parked full-resolution activations take at once for one sample
    of height x width (the program's input grid), input included."""
    itemsize = torch.finfo(dtype).bits // 8
    shapes = {program.input: (program.in_channels, height, width)}
    live = peak = program.in_channels * height * width
    last = len(program.passes) - 1
    for index, p in enumerate(program.passes):
        _, h, w = shapes[p.src]
        if isinstance(p, ConvPass):
            h, w = _out_size(p, h, w)
        if index < last:  # the last pass writes to the sink, not to a parked activation
            shapes[p.dst] = (p.out_channels, h, w)
            live += p.out_channels * h * w
            peak = max(peak, live)
        for name in program.last_reads[index]:
            c, bh, bw = shapes[name]
            live -= c * bh * bw
    return peak * itemsize


def auto_tile_px(program: Program, free_bytes: int, dtype: torch.dtype) -> int:
    """A tile size, in pixels, whose working set fits comfortably in `free_bytes` of device memory."""
    bytes_per_px = _tile_bytes_per_px(program, dtype)
    side = math.sqrt(max(free_bytes, 1) * 0.4 / max(bytes_per_px, 1.0))
    step = max(64, min_tile_px(program))
    return int(min(2048, max(step * 4, side // step * step)))


def _shrunk_size(height: int, width: int, program: Program, target_px: int) -> tuple[int, int]:
    """The input size of a copy whose pixel side covers about target_px x target_px (the input's
    own size where it is no larger)."""
    factor = math.sqrt(height * width) * float(program.pixel_scale) / target_px
    if factor <= 1:
        return height, width
    g = input_granularity(program)
    return max(g, round(height / factor / g) * g), max(g, round(width / factor / g) * g)


def _shrunk(x: torch.Tensor, program: Program, target_px: int) -> torch.Tensor:
    """x resized so its pixel side covers about target_px x target_px; nearest keeps each
    value's distribution, which is what the statistics are estimated from."""
    size = _shrunk_size(*x.shape[-2:], program, target_px)
    if size == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x.unsqueeze(0), size=size, mode="nearest-exact").squeeze(0)


def run_exact(program: Program, x: torch.Tensor, sink: Sink, *, tile_px: int, device, dtype,
              tick: Tick | None = None, attention_margin_px: int | None = None, park_device=None) -> None:
    """Exact tiled run of a batch x (B, C, H, W). Full-resolution activations are parked on
    park_device: host memory by default; the compute device itself when parked_bytes() fits there
    saves every pass a round trip through the host (on a GPU the round trips dominate).
    attention_margin_px: None for exact global attention; otherwise each tile attends to itself and
    this many pixels around it (GroupNorm statistics stay exact): linear time, a close result."""
    park_device = park_device or torch.device("cpu")
    for b in range(x.shape[0]):
        runner = _Runner(program, device=device, dtype=dtype, park_device=park_device, tile_px=tile_px,
                         tick=tick, attention_margin_px=attention_margin_px)
        runner.run(x[b], lambda box, y, b=b: sink(b, box, y))


# Fast mode estimates statistics on a copy at least this large (pixel side): a copy only a few
# latent pixels across is dominated by its zero-padded border and misleads every GroupNorm.
ESTIMATE_MIN_PX = 512


def padding_in(program: Program, padding_px: int) -> int:
    """padding_px pixels as input-grid units, rounded up to the input's granularity."""
    g = input_granularity(program)
    return math.ceil(padding_px / float(program.pixel_scale) / g) * g if padding_px > 0 else 0


def run_frozen(program: Program, crop: torch.Tensor, stats: GroupStats, *, device, dtype,
               context: AttentionContext | None = None, at: Box | None = None) -> torch.Tensor:
    """The program's output for one crop (C, h, w) run whole, every GroupNorm normalising with the
    given statistics instead of the crop's own (fast and sampled modes' tiles); where a context is
    given, its attention also sees the rest of the canvas from `at`, the crop's box on the input."""
    pieces: list[torch.Tensor] = []
    _Runner(program, device=device, dtype=dtype, park_device=device, tile_px=None, frozen=stats,
            context=context.of_crop(at) if context is not None else None).run(crop, lambda _, y: pieces.append(y))
    return pieces[0]


def _frozen_tiles(program: Program, sample: torch.Tensor, b: int, stats: GroupStats, sink: Sink, *, tile_px: int,
                  pad_in: int, device, dtype, tick: Tick | None, context: AttentionContext | None = None) -> None:
    """Every tile of one sample run with padding and frozen statistics; the inner part to the sink."""
    out_scale = program.output_scale
    height, width = sample.shape[-2:]
    for box in tile_boxes(program, height, width, tile_px):
        crop = box.grown(pad_in, height, width)
        y = run_frozen(program, sample[:, crop.y0:crop.y1, crop.x0:crop.x1], stats, device=device, dtype=dtype,
                       context=context, at=crop)
        local = box.relative_to(crop).scaled(out_scale)
        sink(b, box.scaled(out_scale), y[:, local.y0:local.y1, local.x0:local.x1])
        if tick is not None:
            tick()


def run_fast(program: Program, x: torch.Tensor, sink: Sink, *, tile_px: int, padding_px: int, device, dtype,
             tick: Tick | None = None) -> None:
    """Fast tiled run: statistics estimated from a shrunken copy, padded tiles run independently.
    Memory is bounded by max(tile, ESTIMATE_MIN_PX), whatever the canvas size."""
    pad_in = padding_in(program, padding_px)
    for b in range(x.shape[0]):
        sample = x[b]
        stats: GroupStats = {}
        estimate = _shrunk(sample, program, max(tile_px, ESTIMATE_MIN_PX)).to(device=device, dtype=dtype)
        _Runner(program, device=device, dtype=dtype, park_device=device, tile_px=None,
                record=stats).run(estimate, lambda box, y: None)
        del estimate
        if tick is not None:
            tick()
        _frozen_tiles(program, sample, b, stats, sink, tile_px=tile_px, pad_in=pad_in, device=device, dtype=dtype,
                      tick=tick)


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
    resolution). 0: the crops alone."""

    per_side: int = 4
    crop_px: int = 256
    border_px: int = 64
    guide_px: int = 1024


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
    if guided and sample.guide_px and _shrunk_size(height, width, program, sample.guide_px) == (height, width):
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
    shrunk = _shrunk(x, program, sample.guide_px)
    h, w = shrunk.shape[-2:]
    g = input_granularity(program)

    def span(lo: int, hi: int, length: int, to: int) -> tuple[int, int]:
        a, b = (min(to, round(v * to / length / g) * g) for v in (lo, hi))
        return (a, b) if b > a else (min(a, to - g), min(a, to - g) + g)

    return Guide(shrunk, [Box(*span(b.y0, b.y1, height, h), *span(b.x0, b.x1, width, w)) for b in inner])


def _pooled_moments(buffers: Sequence[dict[str, _Parked]], name: str, boxes: Sequence[Box], weights: Sequence[float],
                    scale: Fraction) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel means of x and x² of activation `name` over the boxes (input grid, scaled to
    the activation's), each box's pixels counting `weight` times."""
    sums = sumsq = 0
    pixels = 0.0
    for parked, box, weight in zip(buffers, boxes, weights):
        area = box.scaled(scale)
        s1, s2 = _channel_sums(parked[name].data[:, area.y0:area.y1, area.x0:area.x1])
        sums, sumsq = sums + weight * s1, sumsq + weight * s2
        pixels += weight * area.height * area.width
    return sums / pixels, sumsq / pixels


def _buffer_scales(program: Program) -> dict[str, Fraction]:
    """Every activation's resolution relative to the program's input, by name."""
    return {program.input: Fraction(1), **{p.dst: program.scales[i] for i, p in enumerate(program.passes)}}


def estimate_stats(program: Program, crops: Sequence[torch.Tensor], inner: Sequence[Box], *, device, dtype,
                   weights: Sequence[float] | None = None, guide: Guide | None = None, park_device=None,
                   tick: Tick | None = None, context: AttentionContext | None = None,
                   crop_boxes: Sequence[Box] | None = None) -> GroupStats:
    """Every GroupNorm's statistics pooled over the inner parts of full-resolution crops.

    crops: input crops (C, h, w), each with context around its inner box; inner: each crop's inner
    box relative to the crop, on the input grid and its granularity; weights: how much each crop's
    pixels count (default 1 each: a plain pool). The crops run pass by pass in lockstep, each pass
    normalising with the statistics estimated so far, so pass i's statistics come from the inner
    parts of all crops as the network computed them. guide (Sample.guide_px): a shrunk copy of the
    whole input run beside them with its own statistics; each estimate is then the copy's, the
    mean shifted by the crops' difference from the copy's same boxes and the variance scaled by
    their ratio. Memory: the crops' and the guide's activations (exact mode's parked activations
    for a picture of their total area), on park_device (default: the compute device)."""
    if len(crops) != len(inner) or not crops:
        raise ValueError("estimate_stats needs one inner box per crop, and at least one crop")
    stats: GroupStats = {}
    guide_stats: GroupStats = {}
    park = park_device or device
    runner = _Runner(program, device=device, dtype=dtype, park_device=park, tile_px=None, frozen=stats, tick=tick)
    scale_of = _buffer_scales(program)
    buffers = [{program.input: _Parked(crop.to(park), None, None)} for crop in crops]
    runs = [(runner, parked) for parked in buffers]  # every activation set with the runner that advances it
    if guide is not None:
        guide_parked = {program.input: _Parked(guide.input.to(park), None, None)}
        runs.append((_Runner(program, device=device, dtype=dtype, park_device=park, tile_px=None,
                             frozen=guide_stats, tick=tick), guide_parked))
    weights = [1.0] * len(crops) if weights is None else weights
    crop_contexts = [None] * len(crops)
    if context is not None:
        if crop_boxes is None or len(crop_boxes) != len(crops):
            raise ValueError("estimate_stats needs every crop's box on the canvas to fill an attention context")
        crop_contexts = [context.of_crop(box) for box in crop_boxes]
    crop_contexts.append(None)  # the guide attends to the whole of itself
    last = len(program.passes) - 1
    for index, p in enumerate(program.passes):
        if p.norm is not None:
            scale, groups = scale_of[p.src], p.norm.groups
            mean, var = _moment_stats(*_pooled_moments(buffers, p.src, inner, weights, scale), groups)
            if guide is not None:
                whole = guide.input.shape[-2:]
                guide_stats[index] = _moment_stats(
                    *_pooled_moments([guide_parked], p.src, [Box(0, whole[0], 0, whole[1])], [1.0], scale), groups)
                there_mean, there_var = _moment_stats(  # the copy at the crops' places, weighted as they are
                    *_pooled_moments([guide_parked] * len(inner), p.src, guide.boxes, weights, scale), groups)
                guide_mean, guide_var = guide_stats[index]
                mean = guide_mean + (mean - there_mean)
                var = torch.where(there_var > 0, var * guide_var / there_var.clamp_min(1e-30), var)
            stats[index] = (mean, var)
        if index == last:
            break
        if context is not None and isinstance(p, AttentionPass):
            whole = (guide_parked if guide is not None else buffers[0])[p.src].data
            context.add(index, *_key_value_maps(runner, index, p, whole, stats[index]))
        for (run, parked), crop_context in zip(runs, crop_contexts):
            if isinstance(p, ConvPass):
                dst = run._conv_pass(index, p, parked, None)
            else:
                dst = run._attention_pass(index, p, parked, None, context=crop_context)
            for name in program.last_reads[index]:
                del parked[name]
            parked[p.dst] = dst
    return stats


def _key_value_maps(runner: _Runner, index: int, p: AttentionPass, x: torch.Tensor,
                    stats: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """An attention pass's key and value maps of its input x (C, h, w), normalised with the given
    statistics, pooled to its context's size: the key and value convolutions are 1x1 (affine), so
    pooling their input first pools their outputs."""
    scale, shift = _norm_affine(p.norm, *stats, x.shape[0], device=runner.device, dtype=runner.dtype)
    side = pooled_size(*x.shape[1:])
    h = F.adaptive_avg_pool2d(torch.addcmul(shift, runner._load(x), scale).unsqueeze(0), side).squeeze(0)
    return tuple(_DeviceConv.of(c, runner.device, runner.dtype)(h) for c in (p.k, p.v))


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
                           tick=tick, context=context, crop_boxes=crops)
    return stats, context


def attention_context(program: Program, height: int, width: int) -> AttentionContext | None:
    """An empty AttentionContext for an input of height x width (None for a program without
    attention)."""
    scale_of = _buffer_scales(program)
    scales = {i: scale_of[p.src] for i, p in enumerate(program.passes) if isinstance(p, AttentionPass)}
    return AttentionContext((height, width), scales) if scales else None


def sampled_ticks(program: Program, height: int, width: int, sample: Sample, pad_in: int, guided: bool) -> int:
    """Progress ticks sampled_stats gives: one per pass run per crop and for the guide (two for
    attention); the last pass needs only its input's statistics."""
    inner, crops, _ = sample_crops(program, height, width, sample, pad_in, guided)
    runs = len(crops) + (1 if guided and _takes_guide(sample, inner, height, width) else 0)
    return runs * sum(2 if isinstance(p, AttentionPass) else 1 for p in program.passes[:-1])


def sample_parked_bytes(program: Program, height: int, width: int, sample: Sample, padding_px: int,
                        dtype: torch.dtype) -> int:
    """The most memory run_sampled's statistics take at once for an input of height x width: the
    sample's crops and the guide, which run_sampled always has."""
    inner, crops, _ = sample_crops(program, height, width, sample, padding_in(program, padding_px), guided=True)
    total = sum(parked_bytes(program, c.height, c.width, dtype) for c in crops)
    if _takes_guide(sample, inner, height, width):
        total += parked_bytes(program, *_shrunk_size(height, width, program, sample.guide_px), dtype)
    return total


def run_sampled(program: Program, x: torch.Tensor, sink: Sink, *, tile_px: int, padding_px: int, device, dtype,
                sample: Sample = Sample(), tick: Tick | None = None, park_device=None) -> None:
    """Sampled tiled run: statistics estimated from a spread sample of full-resolution crops guided
    by a shrunk copy of the whole (sampled_stats, activations on park_device, default the compute
    device), then padded tiles run independently with them frozen. Memory is bounded by the
    sample, the guide and the tile, whatever the canvas size."""
    pad_in = padding_in(program, padding_px)
    for b in range(x.shape[0]):
        s = x[b]
        stats, context = sampled_stats(program, *s.shape[-2:], sample, pad_in,
                                       lambda c, s=s: s[:, c.y0:c.y1, c.x0:c.x1], whole=s, device=device,
                                       dtype=dtype, park_device=park_device, tick=tick)
        _frozen_tiles(program, s, b, stats, sink, tile_px=tile_px, pad_in=pad_in, device=device, dtype=dtype,
                      tick=tick, context=context)
