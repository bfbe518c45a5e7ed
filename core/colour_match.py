"""Keeping a redrawn tile's colours: its low frequencies replaced by those of the latent it was
redrawn from (the wavelet colour fix of StableSR and the upscalers after it, done on the latent,
whose channels are close to linear in colour at low frequencies). The redraw keeps the detail it
adds, the high frequencies; a tint that would drift from tile to tile, the low ones, stays the
source's. Plain torch."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def low_frequencies(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (B, C, H, W) blurred by a Gaussian of `sigma` px, separably, the edges repeated (a tile's
    border has no neighbours here, and mirroring would fold its gradient back)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def matched_colours(result: torch.Tensor, source: torch.Tensor, sigma: float) -> torch.Tensor:
    """result with its low frequencies (below a Gaussian of sigma px) replaced by source's."""
    return result + low_frequencies(source.to(result), sigma) - low_frequencies(result, sigma)
