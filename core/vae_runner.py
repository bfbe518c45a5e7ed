"""The engine of the tiled VAE: a compiled program (vae_program) run pass by pass over tiles.

Each pass reads its input tile plus the halo its convolution needs from an activation parked
whole (Parked), normalises it with GroupNorm statistics (pooled over everything written to the
activation, or frozen from an estimate), computes on the device and writes the tile back, or hands
it to a sink on the last pass. How the modes use it is tiled_vae's; where the statistics of
sampled mode come from, vae_sampled_stats'.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .attention_context import CropContext, as_tokens, pooled_size, window_context
from .tiling import Box, grid
from .vae_geometry import axis_window, out_size, pass_tile
from .vae_program import AttentionPass, Conv, ConvPass, Norm, Pass, Program


# Called after every unit of work; may raise to cancel (ComfyUI's interrupt does).
Tick = Callable[[], None]
# Per-pass group statistics: pass index -> (mean, variance), each float64 of shape (groups,).
GroupStats = dict[int, tuple[torch.Tensor, torch.Tensor]]


# Attention scores are computed for this many query x key pairs at a time at most.
_ATTENTION_CHUNK_ELEMENTS = 1 << 26


class NonFiniteActivation(ArithmeticError):
    """An activation overflowed (typically fp16); the caller recomputes in float32."""


@dataclass
class Parked:
    """A full-resolution activation and the pooled statistics of everything written to it."""

    data: torch.Tensor  # (C, H, W)
    sums: torch.Tensor  # float64 (C,)
    sumsq: torch.Tensor  # float64 (C,)

    @staticmethod
    def empty(channels: int, height: int, width: int, *, device, dtype) -> "Parked":
        data = torch.empty(channels, height, width, device=device, dtype=dtype)
        return Parked(data, torch.zeros(channels, dtype=torch.float64, device=device),
                      torch.zeros(channels, dtype=torch.float64, device=device))

    @staticmethod
    def of(data: torch.Tensor) -> "Parked":
        return Parked(data, *channel_sums(data))

    def accumulate(self, tile: torch.Tensor) -> None:
        sums, sumsq = channel_sums(tile)
        self.sums += sums.to(self.sums.device)
        self.sumsq += sumsq.to(self.sumsq.device)

    def group_stats(self, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, height, width = self.data.shape
        return _group_stats(self.sums, self.sumsq, height * width, groups)


def _group_stats(sums: torch.Tensor, sumsq: torch.Tensor, pixels: int, groups: int):
    """A GroupNorm's (mean, variance) per group from per-channel sums over `pixels` pixels."""
    return moment_stats(sums / pixels, sumsq / pixels, groups)


def moment_stats(first: torch.Tensor, second: torch.Tensor, groups: int):
    """A GroupNorm's (mean, variance) per group from per-channel means of x and of x²."""
    mean = first.view(groups, -1).mean(1)
    var = (second.view(groups, -1).mean(1) - mean * mean).clamp_min(0)
    if not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
        raise NonFiniteActivation("an activation overflowed")
    return mean, var


# channel_sums squares this many bytes of channels at a time: the squares of a whole activation
# (sampled mode's 1024 px guide: 512 MiB) were the save's peak.
CHANNEL_SUMS_BYTES = 1 << 24


def channel_sums(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel sums of a map (C, h, w) and of its square, in float64."""
    # Rows in float32 (a tile's row is short enough to lose nothing that matters: ~1e-8), then
    # float64 across rows and tiles: 4x faster on a CPU than converting every value to float64.
    step = max(1, CHANNEL_SUMS_BYTES // max(1, 4 * t[0].numel()))
    sums, squares = [], []
    for part in t.split(step):
        part = part.float()
        sums.append(part.sum(dim=2).double().sum(dim=1))
        squares.append(part.square().sum(dim=2).double().sum(dim=1))
    return torch.cat(sums), torch.cat(squares)


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
class DeviceConv:
    """A convolution's weights cast once per pass to the compute device and dtype; padding is
    applied by the caller, who knows which sides are image border and which are neighbours."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int

    @staticmethod
    def of(conv: Conv, device, dtype) -> "DeviceConv":
        bias = conv.bias.to(device=device, dtype=dtype) if conv.bias is not None else None
        return DeviceConv(conv.weight.to(device=device, dtype=dtype), bias, conv.stride)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.unsqueeze(0), self.weight, self.bias, stride=self.stride).squeeze(0)


class Runner:
    """Runs a program on one sample's activations, pass by pass: tiles of tile_px pixels (None: each
    pass whole); GroupNorm statistics pooled from each pass's input, or `frozen` ones (recorded into
    `record` either way); `context`: what a crop's global attention sees of the rest of the canvas;
    `attention_margin_px`: attention in windows of the tile and this margin instead of global."""

    def __init__(self, program: Program, *, device, dtype, park_device, tile_px: int | None,
                 frozen: GroupStats | None = None, record: GroupStats | None = None, tick: Tick | None = None,
                 attention_margin_px: int | None = None, context: CropContext | None = None):
        self.program = program
        self.context = context
        self.device, self.dtype, self.park_device = device, dtype, park_device
        self.tile_px = tile_px
        self.attention_margin_px = attention_margin_px
        self.frozen, self.record, self.tick = frozen, record, tick

    def _affine(self, index: int, norm: Norm, src: Parked):
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
        buffers = {self.program.input: Parked.of(x.to(self.park_device))}
        last = len(self.program.passes) - 1
        self.advance(buffers, last)
        self.run_pass(last, self.program.passes[last], buffers, sink)

    def advance(self, buffers: dict[str, Parked], passes: int, context: CropContext | None = None) -> None:
        """Run the program's first `passes` passes on the activations in buffers (name -> Parked),
        parking each output there and dropping what no later pass reads. context: as run_pass's."""
        for index, p in enumerate(self.program.passes[:passes]):
            dst = self.run_pass(index, p, buffers, context=context)
            for name in self.program.last_reads[index]:
                del buffers[name]
            buffers[p.dst] = dst

    def run_pass(self, index: int, p: Pass, buffers: dict[str, Parked], sink=None,
                 context: CropContext | None = None) -> Parked | None:
        """Pass `index` of the program on the activations in buffers (name -> Parked): its output
        parked and returned, or, with a sink, every output tile handed to it. context: this crop's
        attention context, where it is not the runner's own (one runner advancing several crops)."""
        if isinstance(p, ConvPass):
            return self._conv_pass(index, p, buffers, sink)
        return self._attention_pass(index, p, buffers, sink, context=context)

    def key_value_maps(self, index: int, p: AttentionPass, x: torch.Tensor,
                       stats: tuple[torch.Tensor, torch.Tensor], pool: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """An attention pass's key and value maps of its input x (C, h, w), normalised with the given
        statistics, pooled to its context's size (unless not `pool`): the key and value convolutions
        are 1x1 (affine), so pooling their input first pools their outputs."""
        scale, shift = _norm_affine(p.norm, *stats, x.shape[0], device=self.device, dtype=self.dtype)
        h = torch.addcmul(shift, self._load(x), scale)
        if pool:
            h = F.adaptive_avg_pool2d(h.unsqueeze(0), pooled_size(*x.shape[1:])).squeeze(0)
        return tuple(DeviceConv.of(c, self.device, self.dtype)(h) for c in (p.k, p.v))

    def _finish_tile(self, y: torch.Tensor, box: Box, dst: Parked | None, sink) -> None:
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

    def _conv_pass(self, index: int, p: ConvPass, buffers: dict[str, Parked], sink) -> Parked | None:
        src = buffers[p.src]
        _, height, width = src.data.shape
        top, _, left, _ = p.conv.padding
        out_h, out_w = out_size(p, height, width)
        dst = None if sink else Parked.empty(p.out_channels, out_h, out_w, device=self.park_device, dtype=self.dtype)
        conv = DeviceConv.of(p.conv, self.device, self.dtype)
        shortcut = DeviceConv.of(p.shortcut, self.device, self.dtype) if p.shortcut is not None else None
        affine = self._affine(index, p.norm, src) if p.norm is not None else None
        residual = buffers[p.residual] if p.residual is not None else None
        tile = pass_tile(self.program, index, self.tile_px)
        for box in grid(out_h, out_w, tile, tile):
            sy0, sy1, cy, zt, zb = axis_window(box.y0, box.y1, height, p.upsample, p.conv.stride, p.conv.kernel, top)
            sx0, sx1, cx, zl, zr = axis_window(box.x0, box.x1, width, p.upsample, p.conv.stride, p.conv.kernel, left)
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

    def _attention_pass(self, index: int, p: AttentionPass, buffers: dict[str, Parked], sink,
                        context: CropContext | None = None) -> Parked | None:
        context = context or self.context
        src = buffers[p.src]
        channels, height, width = src.data.shape
        scale, shift = self._affine(index, p.norm, src)
        q, k, v, proj = (DeviceConv.of(c, self.device, self.dtype) for c in (p.q, p.k, p.v, p.proj))
        keys = torch.empty(k.weight.shape[0], height, width, device=self.device, dtype=self.dtype)
        values = torch.empty(v.weight.shape[0], height, width, device=self.device, dtype=self.dtype)
        tile = pass_tile(self.program, index, self.tile_px)
        boxes = list(grid(height, width, tile, tile))
        for box in boxes:
            h = torch.addcmul(shift, self._load(src.data[:, box.y0:box.y1, box.x0:box.x1]), scale)
            keys[:, box.y0:box.y1, box.x0:box.x1] = k(h)
            values[:, box.y0:box.y1, box.x0:box.x1] = v(h)
            if self.tick is not None:
                self.tick()
        dst = None if sink else Parked.empty(p.out_channels, height, width, device=self.park_device, dtype=self.dtype)
        margin = None if self.attention_margin_px is None else pass_tile(self.program, index,
                                                                         self.attention_margin_px)
        if margin is None:  # global attention (exact): its cost grows with the square of the area
            k_seen, v_seen, bias = (context.extend(index, keys, values) if context is not None
                                    else (as_tokens(keys), as_tokens(values), None))
        else:  # a window keeps it linear, and sees the rest of the canvas as context, as a lone tile does
            outside = window_context(keys, values)
        for box in boxes:
            if margin is not None:
                seen = box.grown(margin, height, width)
                k_seen, v_seen, bias = outside.beside(seen, as_tokens(keys, seen), as_tokens(values, seen))
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
