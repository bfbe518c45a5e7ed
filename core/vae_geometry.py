"""Where a VAE program's passes read and write on a canvas, and what a run of it costs: output
sizes, the source window of a tile, the grids of tiles, the granularity of the input, memory and
work estimates. No tensors of the network are touched here."""
from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

from .tiling import Box, grid, grid_count
from .vae_program import AttentionPass, Conv, ConvPass, Pass, Program


def axis_window(o0: int, o1: int, length: int, upsample: bool, stride: int, kernel: int,
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


def out_size(p: ConvPass, height: int, width: int) -> tuple[int, int]:
    """A convolution pass's output size for an input of height x width."""
    top, bottom, left, right = p.conv.padding
    return (_out_length(height, p.conv, p.upsample, top, bottom),
            _out_length(width, p.conv, p.upsample, left, right))


def pass_tile(program: Program, index: int, tile_px: int | None) -> int:
    """The tile side on pass `index`'s output grid for a tile of `tile_px` pixels (None: whole image)."""
    if tile_px is None:
        return 1 << 30
    return max(1, math.ceil(tile_px * program.scales[index] / program.pixel_scale))


def _linear_macs(p: Pass, px: float) -> float:
    """A pass's multiply-adds over px output pixels, but for global attention's scores."""
    if isinstance(p, ConvPass):
        return px * p.conv.kernel ** 2 * p.conv.in_channels * p.conv.out_channels
    return 4 * px * p.out_channels * p.out_channels  # q, k, v and the projection


def global_attention_share(program: Program, height: int, width: int) -> float:
    """The share of the program's multiply-adds spent in global attention (scores and weighted
    sums) for an input of height x width: exact mode's one cost growing with the square of the area."""
    linear = quadratic = 0.0
    for index, p in enumerate(program.passes):
        px = float(program.scales[index]) ** 2 * height * width
        linear += _linear_macs(p, px)
        if isinstance(p, AttentionPass):
            quadratic += 2 * px * px * p.out_channels
    return quadratic / (linear + quadratic)


def prefix_share(program: Program, index: int) -> float:
    """The share of the program's multiply-adds (global attention's scores aside) spent in the
    passes before pass `index`: small for a decoder's mid-block attention, which follows its first
    convolutions at the latent's resolution, nearly all for an encoder's, which follows the rest."""
    work = [_linear_macs(p, float(program.scales[i]) ** 2) for i, p in enumerate(program.passes)]
    return sum(work[:index]) / sum(work)


def pass_ticks(program: Program, height: int, width: int, tile_px: int | None, passes: int | None = None) -> int:
    """Progress ticks a Runner gives running the first `passes` passes (default all) on an input of
    height x width in tiles of tile_px (None: each pass whole): one per tile, two for attention."""
    total = 0
    h, w = height, width
    for index, p in enumerate(program.passes[:passes]):
        if isinstance(p, ConvPass):
            h, w = out_size(p, h, w)
        tile = pass_tile(program, index, tile_px)
        total += grid_count(h, w, tile, tile) * (2 if isinstance(p, AttentionPass) else 1)
    return total


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


def parked_bytes(program: Program, height: int, width: int, dtype: torch.dtype, passes: int | None = None) -> int:
    """The most memory exact mode's parked full-resolution activations take at once for one sample
    of height x width (the program's input grid), input included; for the first `passes` passes
    only, where given."""
    itemsize = torch.finfo(dtype).bits // 8
    shapes = {program.input: (program.in_channels, height, width)}
    live = peak = program.in_channels * height * width
    last = len(program.passes) - 1
    for index, p in enumerate(program.passes[:passes]):
        _, h, w = shapes[p.src]
        if isinstance(p, ConvPass):
            h, w = out_size(p, h, w)
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


def shrunk_size(height: int, width: int, program: Program, target_px: int) -> tuple[int, int]:
    """The input size of a copy whose pixel side covers about target_px x target_px (the input's
    own size where it is no larger)."""
    factor = math.sqrt(height * width) * float(program.pixel_scale) / target_px
    if factor <= 1:
        return height, width
    g = input_granularity(program)
    return max(g, round(height / factor / g) * g), max(g, round(width / factor / g) * g)


def shrunk(x: torch.Tensor, program: Program, target_px: int) -> torch.Tensor:
    """x resized so its pixel side covers about target_px x target_px; nearest keeps each
    value's distribution, which is what the statistics are estimated from."""
    size = shrunk_size(*x.shape[-2:], program, target_px)
    if size == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x.unsqueeze(0), size=size, mode="nearest-exact").squeeze(0)


def padding_in(program: Program, padding_px: int) -> int:
    """padding_px pixels as input-grid units, rounded up to the input's granularity."""
    g = input_granularity(program)
    return math.ceil(padding_px / float(program.pixel_scale) / g) * g if padding_px > 0 else 0


def buffer_scales(program: Program) -> dict[str, Fraction]:
    """Every activation's resolution relative to the program's input, by name."""
    return {program.input: Fraction(1), **{p.dst: program.scales[i] for i, p in enumerate(program.passes)}}


def input_reach(program: Program) -> dict[int, int]:
    """For every pass, how far in from a crop's cut edge its input differs from the whole canvas's
    (on the pass's grid): each convolution before it reads a little past its output, so the zeros
    beyond the cut spread inward pass by pass. An attention's output is taken to reach no further
    than its input: the rest of the canvas comes from its context."""
    reach = {program.input: 0}
    out: dict[int, int] = {}
    for index, p in enumerate(program.passes):
        out[index] = reach[p.src]
        if isinstance(p, AttentionPass):
            reach[p.dst] = reach[p.src]
            continue
        top, bottom, left, right = p.conv.padding
        halo = max(top, left, p.conv.kernel - 1 - min(top, left))
        spread = math.ceil((reach[p.src] * (2 if p.upsample else 1) + halo) / p.conv.stride)
        reach[p.dst] = max(spread, reach[p.residual] if p.residual is not None else 0)
    return out


def attention_reach(program: Program) -> dict[int, int]:
    """input_reach of the attention passes: how much of a crop's own keys its cut spoils."""
    return {i: r for i, r in input_reach(program).items() if isinstance(program.passes[i], AttentionPass)}
