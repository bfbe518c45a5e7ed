"""What the rest of the canvas looks like to a tile's global attention, when the tile runs alone.

A VAE's mid-block attention mixes the whole picture into every pixel. A tile run on its own (sampled
mode's tiles and statistics crops, the pixel route's windows) or attending only to a window around
it (local_attention) misses all of that: with the demo VAE it was most of sampled mode's error, in
the statistics its crops give and in its tiles. Instead the tile attends to its own keys and to a
coarse copy of the rest: the whole canvas's keys and values pooled to at most CONTEXT_SIDE tokens
a side, those outside what the tile already sees, each weighted in the softmax by the area it
stands for (its log added to the score). That is the whole picture's softmax with its distant
part coarsened; at full resolution (no pooling) it is exact (tests/unit/test_tiled_vae.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch
import torch.nn.functional as F

from .tiling import Box

# The whole canvas's keys and values are pooled to at most this many tokens a side: 4096 tokens,
# a fraction of a 1024 px tile's own (16 384 at SD's 8x latent) and of its attention's cost.
CONTEXT_SIDE = 64


def pooled_size(height: int, width: int) -> tuple[int, int]:
    """The size a map of height x width is pooled to as context."""
    return min(height, CONTEXT_SIDE), min(width, CONTEXT_SIDE)


@dataclass
class ContextTokens:
    """One attention pass's context: pooled keys and values (n, C), their centres (2, n) on the
    pass's grid, and the log of the area each stands for."""

    keys: torch.Tensor
    values: torch.Tensor
    centres: torch.Tensor
    log_area: float

    @staticmethod
    def pooled(keys: torch.Tensor, values: torch.Tensor, height: float, width: float) -> "ContextTokens":
        """The context of key and value maps (C, h, w) covering a canvas of height x width on the
        pass's grid (the maps may be coarser: a shrunk copy's), pooled to CONTEXT_SIDE a side."""
        side = pooled_size(*keys.shape[1:])
        k, v = (F.adaptive_avg_pool2d(t.unsqueeze(0), side).squeeze(0).flatten(1).t() for t in (keys, values))
        cy = (torch.arange(side[0], device=keys.device) + 0.5) * (height / side[0])
        cx = (torch.arange(side[1], device=keys.device) + 0.5) * (width / side[1])
        centres = torch.stack(torch.meshgrid(cy, cx, indexing="ij")).flatten(1)
        return ContextTokens(k, v, centres, math.log(height * width / (side[0] * side[1])))

    def beside(self, seen: Box, keys: torch.Tensor, values: torch.Tensor):
        """(keys, values, score bias) for an attention that sees `seen` (a box on the pass's grid)
        itself: its own keys and values (1, n, C) followed by the context's tokens outside it; the
        bias None where there are none."""
        cy, cx = self.centres
        outside = ~((cy >= seen.y0) & (cy < seen.y1) & (cx >= seen.x0) & (cx < seen.x1))
        if not outside.any():
            return keys, values, None
        k, v = self.keys[outside].to(keys.dtype), self.values[outside].to(values.dtype)
        bias = torch.zeros(1, 1, keys.shape[1] + k.shape[0], device=keys.device, dtype=keys.dtype)
        bias[..., keys.shape[1]:] = self.log_area
        return torch.cat([keys, k.unsqueeze(0)], 1), torch.cat([values, v.unsqueeze(0)], 1), bias


@dataclass
class AttentionContext:
    """The whole canvas's context at each attention pass of a program, filled pass by pass as the
    statistics' estimate reaches them (vae_sampled_stats.estimate_stats)."""

    canvas: tuple[int, int]  # the input's height and width, on the input grid
    scales: dict[int, Fraction]  # attention pass index -> its input's scale relative to the input
    tokens: dict[int, ContextTokens] = field(default_factory=dict)

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
        """ContextTokens.beside for the crop's attention at pass `index` (unchanged where the
        context has none)."""
        tokens = self.context.tokens.get(index)
        if tokens is None:
            return keys, values, None
        return tokens.beside(self.crop.scaled(self.context.scales[index]), keys, values)
