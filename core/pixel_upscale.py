"""A latent upscaled in pixel space, tile by tile: decode -> resize in pixels -> encode, without
ever holding the picture whole.

Each target tile's pixels are made from the source latent region they depend on: the source
latent window (with the decoder's padding) is decoded with frozen decoder statistics, the pixels
are enlarged (an upscale model's fixed factor, given as a callable, then Lanczos to the exact target
size, with the taps of the whole-picture resize so the window matches it), and the tile (with the
encoder's padding) is encoded with frozen encoder statistics; its inner part goes into the new
latent. The statistics come from tiled_vae's sampled estimator: the decoder's over a sample of the
source latent (guided by its shrunk copy), the encoder's over a sample of the upscaled picture,
whose crops are made the same way. Memory: the two latents and one tile's working set, whatever
the size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from . import tiled_vae
from .latent_resample import lanczos_taps
from .tiling import Box
from .vae_geometry import padding_in, tile_boxes
from .vae_program import Program
from .vae_runner import Tick
from .vae_sampled_stats import Sample, sample_crops, sampled_stats, sampled_ticks

# (C, h, w) pixels in 0..1 -> (C, h * factor, w * factor): an upscale model, or None for Lanczos alone.
Enlarge = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PixelRoute:
    """One latent's upscale in pixels. decoder/encoder: the VAE's compiled programs; to_pixels and
    from_pixels map the decoder's output to pixels in 0..1 and back to the encoder's input (the
    VAE's process_output / process_input); enlarge and factor: the fixed-factor upscale (factor 1
    and None: Lanczos alone); margin_px: source pixels read around a window for the upscale model's
    context (0 for Lanczos alone, whose windows are exact)."""

    decoder: Program
    encoder: Program
    to_pixels: Callable[[torch.Tensor], torch.Tensor]
    from_pixels: Callable[[torch.Tensor], torch.Tensor]
    enlarge: Enlarge | None = None
    factor: int = 1
    margin_px: int = 0
    decode_padding_px: int = 96
    encode_padding_px: int = 64
    tile_px: int = 1024
    sample: Sample = Sample()

    def steps(self, source_hw: tuple[int, int], target_hw: tuple[int, int]) -> int:
        """Progress ticks of one sample: the decoder's estimate, the encoder's (one more per crop,
        for making its pixels) and one per tile."""
        enc_pad = padding_in(self.encoder, self.encode_padding_px)
        dec = sampled_ticks(self.decoder, *source_hw, self.sample,
                            padding_in(self.decoder, self.decode_padding_px), guided=True)
        enc = sampled_ticks(self.encoder, *self._target_px(target_hw), self.sample, enc_pad, guided=False)
        crops = len(sample_crops(self.encoder, *self._target_px(target_hw), self.sample, enc_pad)[1])
        tiles = len(tile_boxes(self.encoder, *self._target_px(target_hw), self.tile_px))
        return dec + enc + crops + tiles

    def _target_px(self, target_hw: tuple[int, int]) -> tuple[int, int]:
        return int(target_hw[0] / self.encoder.output_scale), int(target_hw[1] / self.encoder.output_scale)

    def run(self, z: torch.Tensor, target_hw: tuple[int, int], *, device, dtype,
            tick: Tick | None = None) -> torch.Tensor:
        """z (B, C, h, w) upscaled to a latent of target_hw (B, C', H, W), on z's device in float32."""
        out = torch.empty(z.shape[0], self.encoder.out_channels, *target_hw, device=z.device)
        for b in range(z.shape[0]):
            _Sample(self, z[b], self._target_px(target_hw), device, dtype, tick).run(out[b])
        return out


class _Sample:
    """The upscale of one latent (C, h, w) to a picture of target_px, written into a latent."""

    def __init__(self, route: PixelRoute, z: torch.Tensor, target_px: tuple[int, int], device, dtype, tick):
        self.route, self.z, self.device, self.dtype, self.tick = route, z, device, dtype, tick
        self.target_px = target_px
        dec = route.decoder
        self.source_px = dec.out_size(*z.shape[-2:])
        self.mid_px = (self.source_px[0] * route.factor, self.source_px[1] * route.factor)
        self.rows = lanczos_taps(self.mid_px[0], target_px[0])
        self.cols = lanczos_taps(self.mid_px[1], target_px[1])
        self.dec_pad = padding_in(dec, route.decode_padding_px)
        self.enc_pad = padding_in(route.encoder, route.encode_padding_px)
        self.dec_stats, self.dec_context = sampled_stats(dec, *z.shape[-2:], route.sample, self.dec_pad,
                                                         lambda c: z[:, c.y0:c.y1, c.x0:c.x1], whole=z,
                                                         device=device, dtype=dtype, tick=tick)

    def _pixels(self, window: Box) -> torch.Tensor:
        """The upscaled picture's pixels in window (target pixel grid), as the encoder takes them."""
        route = self.route
        (ry0, ry1), (iy, wy) = _needed(self.rows, window.y0, window.y1)
        (rx0, rx1), (ix, wx) = _needed(self.cols, window.x0, window.x1)
        k, margin = route.factor, route.margin_px
        # Source pixels the upscale reads (with the model's margin), then the latent that makes them.
        sy0, sy1 = max(0, ry0 // k - margin), min(self.source_px[0], -(-ry1 // k) + margin)
        sx0, sx1 = max(0, rx0 // k - margin), min(self.source_px[1], -(-rx1 // k) + margin)
        scale = route.decoder.output_scale
        latent = Box(math.floor(sy0 / scale), math.ceil(sy1 / scale), math.floor(sx0 / scale), math.ceil(sx1 / scale))
        crop = latent.grown(self.dec_pad, *self.z.shape[-2:])
        decoded = tiled_vae.run_frozen(route.decoder, self.z[:, crop.y0:crop.y1, crop.x0:crop.x1], self.dec_stats,
                                       device=self.device, dtype=self.dtype, context=self.dec_context, at=crop)
        oy, ox = int(crop.y0 * scale), int(crop.x0 * scale)
        pixels = route.to_pixels(decoded[:, sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox].float())
        del decoded
        if route.enlarge is not None:
            pixels = route.enlarge(pixels)
        # Lanczos to the target size with the whole picture's taps, read relative to this window.
        pixels = _gather(pixels, iy - sy0 * k, wy, -2)
        pixels = _gather(pixels, ix - sx0 * k, wx, -1).clamp(0, 1)
        return route.from_pixels(pixels)

    def run(self, out: torch.Tensor) -> None:
        route, enc = self.route, self.route.encoder
        height, width = self.target_px

        def crop_of(c: Box) -> torch.Tensor:
            pixels = self._pixels(c)
            if self.tick is not None:
                self.tick()
            return pixels

        # The upscaled picture never exists whole, so the encoder's sample has no guide.
        enc_stats, enc_context = sampled_stats(enc, height, width, route.sample, self.enc_pad, crop_of,
                                               device=self.device, dtype=self.dtype, tick=self.tick)
        out_scale = enc.output_scale
        for box in tile_boxes(enc, height, width, route.tile_px):
            crop = box.grown(self.enc_pad, height, width)
            y = tiled_vae.run_frozen(enc, self._pixels(crop), enc_stats, device=self.device, dtype=self.dtype,
                                     context=enc_context, at=crop)
            local, dst = box.relative_to(crop).scaled(out_scale), box.scaled(out_scale)
            out[:, dst.y0:dst.y1, dst.x0:dst.x1] = y[:, local.y0:local.y1, local.x0:local.x1].to(out.device, out.dtype)
            if self.tick is not None:
                self.tick()


def _needed(taps: tuple[torch.Tensor, torch.Tensor], start: int, end: int):
    """The input span [lo, hi) output pixels [start, end) read, and their taps (index, weight)."""
    index, weight = taps[0][start:end], taps[1][start:end]
    return (int(index.min()), int(index.max()) + 1), (index, weight)


def _gather(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over taps of x's slices along dim at index, weighted: one axis of the Lanczos resize."""
    if index.shape[1] == 1 and bool((weight == 1).all()):
        return x.index_select(dim, index[:, 0].to(x.device))
    along = [1] * x.ndim
    along[dim] = -1
    weight = weight.to(x.device, x.dtype)
    out = x.index_select(dim, index[:, 0].to(x.device)) * weight[:, 0].view(along)
    for k in range(1, index.shape[1]):
        out.addcmul_(x.index_select(dim, index[:, k].to(x.device)), weight[:, k].view(along))
    return out
