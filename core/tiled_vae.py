"""The tiled VAE's modes: a compiled VAE program (vae_program) run tile by tile by the engine
(vae_runner), with sizes and costs from vae_geometry.

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

Sampled mode estimates the statistics from the picture at full resolution instead, from a spread
sample of crops guided by a shrunken copy of the whole (vae_sampled_stats), then runs every tile
independently with them frozen, as fast mode does (run_frozen). A global attention layer would see
only its tile; instead it also attends to the copy (or the whole canvas, where that is what the
statistics came from), pooled to a few thousand tokens that each weigh as the area they stand for
(AttentionContext). Memory is bounded by the sample and the copy (as exact mode on a picture of
their total area) and the tile, whatever the canvas size.
"""
from __future__ import annotations

from typing import Callable

import torch

from .attention_context import AttentionContext
from .tiling import Box
from .vae_geometry import padding_in, pass_ticks, shrunk, tile_boxes
from .vae_program import Program
from .vae_runner import GroupStats, Runner, Tick
from .vae_sampled_stats import Sample, sampled_stats, sampled_ticks


# A write of one finished output tile: (sample index, box on the output grid, tile (C, h, w)).
Sink = Callable[[int, Box, torch.Tensor], None]


def run_exact(program: Program, x: torch.Tensor, sink: Sink, *, tile_px: int, device, dtype,
              tick: Tick | None = None, attention_margin_px: int | None = None, park_device=None) -> None:
    """Exact tiled run of a batch x (B, C, H, W). Full-resolution activations are parked on
    park_device: host memory by default; the compute device itself when parked_bytes() fits there
    saves every pass a round trip through the host (on a GPU the round trips dominate).
    attention_margin_px: None for exact global attention; otherwise each tile attends to itself and
    this many pixels around it (GroupNorm statistics stay exact): linear time, a close result."""
    park_device = park_device or torch.device("cpu")
    for b in range(x.shape[0]):
        runner = Runner(program, device=device, dtype=dtype, park_device=park_device, tile_px=tile_px,
                        tick=tick, attention_margin_px=attention_margin_px)
        runner.run(x[b], lambda box, y, b=b: sink(b, box, y))


# Fast mode estimates statistics on a copy at least this large (pixel side): a copy only a few
# latent pixels across is dominated by its zero-padded border and misleads every GroupNorm.
ESTIMATE_MIN_PX = 512


def run_frozen(program: Program, crop: torch.Tensor, stats: GroupStats, *, device, dtype,
               context: AttentionContext | None = None, at: Box | None = None) -> torch.Tensor:
    """The program's output for one crop (C, h, w) run whole, every GroupNorm normalising with the
    given statistics instead of the crop's own (fast and sampled modes' tiles); where a context is
    given, its attention also sees the rest of the canvas from `at`, the crop's box on the input."""
    pieces: list[torch.Tensor] = []
    Runner(program, device=device, dtype=dtype, park_device=device, tile_px=None, frozen=stats,
           context=context.of_crop(at) if context is not None else None).run(crop, lambda _, y: pieces.append(y))
    return pieces[0]


def frozen_tiles(program: Program, sample: torch.Tensor, b: int, stats: GroupStats, sink: Sink, *, tile_px: int,
                 pad_in: int, device, dtype, tick: Tick | None = None, context: AttentionContext | None = None,
                 areas: list[Box] | None = None) -> None:
    """Every tile of one sample run with padding and frozen statistics; the inner part to the sink.
    areas: boxes of the input (on its granularity) whose tiles alone run, each cut into tiles of
    its own (default: the whole input); a tile's padding still reaches past its area."""
    out_scale = program.output_scale
    height, width = sample.shape[-2:]
    for area in areas or [Box(0, height, 0, width)]:
        for tile in tile_boxes(program, area.height, area.width, tile_px):
            box = Box(tile.y0 + area.y0, tile.y1 + area.y0, tile.x0 + area.x0, tile.x1 + area.x0)
            crop = box.grown(pad_in, height, width)
            y = run_frozen(program, sample[:, crop.y0:crop.y1, crop.x0:crop.x1], stats, device=device,
                           dtype=dtype, context=context, at=crop)
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
        estimate = shrunk(sample, program, max(tile_px, ESTIMATE_MIN_PX)).to(device=device, dtype=dtype)
        Runner(program, device=device, dtype=dtype, park_device=device, tile_px=None,
               record=stats).run(estimate, lambda box, y: None)
        del estimate
        if tick is not None:
            tick()
        frozen_tiles(program, sample, b, stats, sink, tile_px=tile_px, pad_in=pad_in, device=device, dtype=dtype,
                     tick=tick)


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
        frozen_tiles(program, s, b, stats, sink, tile_px=tile_px, pad_in=pad_in, device=device, dtype=dtype,
                     tick=tick, context=context)


def steps_per_sample(program: Program, height: int, width: int, tile_px: int, fast: bool,
                     sample: Sample | None = None, padding_px: int = 0) -> int:
    """Units of work (progress ticks) for one sample of the given input size: exact mode's, fast
    mode's (fast) or sampled mode's (a sample given, with its padding)."""
    if sample is not None:
        return (sampled_ticks(program, height, width, sample, padding_in(program, padding_px), True)
                + len(tile_boxes(program, height, width, tile_px)))
    if fast:
        return 1 + len(tile_boxes(program, height, width, tile_px))
    return pass_ticks(program, height, width, tile_px)
