"""Denoising a latent canvas in overlapping tiles and fusing the predictions (MultiDiffusion,
Mixture of Diffusers) or in a shifted grid of non-overlapping tiles (SpotDiffusion).

Plain tensor code: the model call is passed in, so everything here is testable without ComfyUI.
Coordinates are latent pixels; `unit` is the model's patch grid (1 for UNets, 2 for DiT models
such as SD3 and Flux), and every tile size, tile position and shift stays on it.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .tiling import Box, tile_boxes, tile_starts

MULTIDIFFUSION = "multidiffusion"
MIXTURE_OF_DIFFUSERS = "mixture_of_diffusers"
SHIFTED = "shifted"
METHODS = (MULTIDIFFUSION, MIXTURE_OF_DIFFUSERS, SHIFTED)

# How many overlapping tiles may cover one pixel: an overlap of 3/4 of the tile gives 4 x 4. More
# buys no quality and multiplies the cost (64 px tiles with 56 px overlap: 64 model calls per pixel
# per step, thousands of tiles on a 512 px canvas).
MAX_COVERAGE = 16
# Tiles one step may evaluate. 65,536 of the smallest tiles covers a latent of 2048x2048 (16K px)
# twice over; beyond it the step would run for hours, which is a setting mistake, not a picture.
MAX_TILES_PER_STEP = 65536

# Mixture of Diffusers' Gaussian: a standard deviation of 0.1 tile (variance 0.01 in tile units),
# as in the paper; a tile's own edge then weighs about 4e-6 of its centre.
GAUSSIAN_STD = 0.1


def tile_weight(method: str, height: int, width: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """The (height, width) weight of one tile's prediction in the fused canvas."""
    if method != MIXTURE_OF_DIFFUSERS:
        return torch.ones(height, width, dtype=dtype, device=device)

    def profile(n: int) -> torch.Tensor:
        pos = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / n
        return torch.exp(-0.5 * (pos / GAUSSIAN_STD) ** 2)

    return torch.outer(profile(height), profile(width)).to(dtype=dtype, device=device)


def weight_sum(boxes: Sequence[Box], weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The (height, width) sum of the tile weights over the canvas: the fusion's denominator."""
    total = torch.zeros(height, width, dtype=weight.dtype, device=weight.device)
    for b in boxes:
        total[b.y0:b.y1, b.x0:b.x1] += weight
    return total


def shift_for_step(seed: int, sigma: float, tile_h: int, tile_w: int, unit: int = 1) -> tuple[int, int]:
    """The shifted method's grid offset (dy, dx) for the step at noise level sigma: random on the
    unit grid in [0, tile), the same for every call at that sigma, so cond and uncond, a rerun and
    a resumed run all agree."""
    # Hashed: torch's CPU generator keeps only 32 bits of a seed, and neighbouring sigmas differ
    # in the low bits of their float.
    digest = hashlib.blake2b(struct.pack("<Qd", seed % 2 ** 64, float(sigma)), digest_size=8).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest, "little") % 2 ** 32)
    dy = int(torch.randint(0, max(1, tile_h // unit), (1,), generator=g)) * unit
    dx = int(torch.randint(0, max(1, tile_w // unit), (1,), generator=g)) * unit
    return dy, dx


@dataclass(frozen=True)
class Layout:
    """Where the tiles of one step lie: boxes on the canvas rolled up and left by `shift`
    (zero except for the shifted method), each tile's weight, and the weights' sum."""
    boxes: tuple[Box, ...]
    shift: tuple[int, int]
    weight: torch.Tensor
    total: torch.Tensor


def coverage(tile_h: int, tile_w: int, overlap: int) -> int:
    """About how many overlapping tiles cover one pixel (tiles per tile-sized area)."""
    return math.ceil(tile_h / max(1, tile_h - overlap)) * math.ceil(tile_w / max(1, tile_w - overlap))


def check_overlap(tile_h: int, tile_w: int, overlap: int) -> None:
    """Refuses an overlap that is not smaller than the tile, or that covers a pixel with more than
    MAX_COVERAGE tiles; the message speaks in the caller's units."""
    if overlap >= min(tile_h, tile_w):
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile_w}x{tile_h}); "
                         "lower overlap or raise tile_width/tile_height")
    tiles = coverage(tile_h, tile_w, overlap)
    if tiles > MAX_COVERAGE:
        raise ValueError(f"overlap {overlap} on {tile_w}x{tile_h} tiles covers every pixel with about {tiles} "
                         f"tiles per step (at most {MAX_COVERAGE}: overlap up to 3/4 of the tile); lower overlap")


def layout(method: str, height: int, width: int, tile_h: int, tile_w: int, overlap: int, *, unit: int = 1,
           shift: tuple[int, int] = (0, 0), dtype=torch.float32, device=None) -> Layout:
    if method == SHIFTED:
        overlap = 0  # one pass over the canvas; the per-step shift moves the seams instead
    else:
        shift = (0, 0)
    counts = [len(tile_starts(length, min(tile, length), overlap, unit))
              for length, tile in ((height, tile_h), (width, tile_w))]
    if counts[0] * counts[1] > MAX_TILES_PER_STEP:
        raise ValueError(f"the {width}x{height} latent would take {counts[0] * counts[1]} tiles per step, more than "
                         f"{MAX_TILES_PER_STEP}; raise tile_width/tile_height or lower overlap")
    boxes = tuple(tile_boxes(height, width, tile_h, tile_w, overlap, unit))
    b = boxes[0]
    weight = tile_weight(method, b.height, b.width, dtype=dtype, device=device)
    return Layout(boxes, shift, weight, weight_sum(boxes, weight, height, width))


def roll(x: torch.Tensor, shift: tuple[int, int], *, scale: int = 1, back: bool = False) -> torch.Tensor:
    """x's last two dims rolled so that canvas position shift lands at the origin (back: undone).
    scale: x lies on a grid `scale` times finer than the latent (a pixel-space hint)."""
    dy, dx = shift[0] * scale, shift[1] * scale
    if not (dy or dx):
        return x
    sign = 1 if back else -1
    return torch.roll(x, shifts=(sign * dy, sign * dx), dims=(-2, -1))


def fuse(predict: Callable[[Sequence[Box]], Sequence[torch.Tensor | None]], batches: Sequence[Sequence[Box]],
         plan: Layout, outputs: int, canvas: torch.Tensor,
         tick: Callable[[], None] = lambda: None) -> list[torch.Tensor | None]:
    """Runs predict over batches of plan's tiles and fuses the predictions.

    canvas: the (B, C, H, W) input, already rolled by plan.shift. predict(boxes) returns, for each
    of `outputs` prediction streams (cond, uncond, ...), a (len(boxes) * B, C, h, w) tensor ordered
    tile by tile, or None for a stream with nothing to predict. Returns the fused (B, C, H, W)
    canvases, weighted sums divided by the weights' sum, still rolled."""
    batch = canvas.shape[0]
    sums: list[torch.Tensor | None] = [None] * outputs
    for boxes in batches:
        predictions = predict(boxes)
        for i, pred in enumerate(predictions):
            if pred is None:
                continue
            if sums[i] is None:
                sums[i] = torch.zeros(canvas.shape[:1] + pred.shape[1:2] + canvas.shape[2:],
                                      dtype=pred.dtype, device=canvas.device)
            weight = plan.weight.to(canvas.device, pred.dtype)
            for k, b in enumerate(boxes):
                sums[i][:, :, b.y0:b.y1, b.x0:b.x1] += pred[k * batch:(k + 1) * batch].to(canvas.device) * weight
        tick()
    total = plan.total.to(canvas.device)
    return [None if s is None else s / total.to(s.dtype) for s in sums]


def area_mult(area: Sequence[int], height: int, width: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """The (height, width) weight ComfyUI gives an area cond (area = (h, w, y, x) in latent px):
    one inside the area, falling linearly over up to 8 px at each edge that is not the canvas's,
    and zero outside. Tiles need it written out: an edge of area-within-tile is not an edge of
    area-within-canvas, and the ramp must follow the canvas."""
    h, w, y, x = (int(v) for v in area[:4])
    h, w = min(h, height - y), min(w, width - x)
    out = torch.zeros(height, width, dtype=dtype, device=device)
    if h <= 0 or w <= 0:
        return out
    inner = torch.ones(h, w, dtype=dtype, device=device)
    for dim, (start, size, full) in enumerate(((y, h, height), (x, w, width))):
        ramp_len = min(8, size // 4)
        ramp = torch.arange(1, ramp_len + 1, dtype=dtype, device=device) / ramp_len
        view = inner if dim == 0 else inner.T
        if start != 0 and ramp_len:
            view[:ramp_len] *= ramp[:, None]
        if start + size < full and ramp_len:
            view[size - ramp_len:] *= ramp.flip(0)[:, None]
    out[y:y + h, x:x + w] = inner
    return out


def nonzero_box(mask: torch.Tensor) -> Box | None:
    """The smallest box holding every nonzero of a (..., h, w) mask, or None when all are zero."""
    rows = mask.reshape(-1, *mask.shape[-2:]).abs().amax(dim=(0, 2)).nonzero()
    if rows.numel() == 0:
        return None
    cols = mask.reshape(-1, *mask.shape[-2:]).abs().amax(dim=(0, 1)).nonzero()
    return Box(int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
