"""Latent resizing as ComfyUI hands latents around (core.latent_resample does the resampling): the
LATENT dict's samples and noise mask together, by a factor or to a size on the model's grid, or
through pixel space with the tiled VAE."""
from __future__ import annotations

import torch

from ..core import latent_resample as lr
from . import vae as runtime_vae
from .geometry import latent_grid


def target_size(node: str, z: torch.Tensor, scale_by: float, width: int, height: int,
                downscale: int) -> tuple[int, int]:
    """The latent (height, width) asked for: by scale_by when it is above 0, else by the pixel
    width/height (0 keeps the aspect ratio), on the latent grid."""
    grid = latent_grid(z.shape[1])
    h, w = z.shape[-2:]
    try:
        if scale_by > 0:
            return lr.scaled_size(h, w, scale=scale_by, grid=grid)
        return lr.scaled_size(h, w, target_height=height // downscale, target_width=width // downscale, grid=grid)
    except ValueError as e:
        raise ValueError(f"{node}: {e}. Set scale_by above 0, or scale_by to 0 and width and/or height "
                         "in pixels (0 keeps the aspect ratio)") from None


def resize_latent(node: str, samples: dict, height: int, width: int, method: str, *, antialias: bool = True,
                  vae=None) -> dict:
    """A copy of a LATENT dict resized to (height, width) latent px: samples, and noise_mask with
    it; batch_index and every other key kept."""
    z = samples["samples"]
    if method not in lr.METHODS:
        raise ValueError(f"{node}: method {method!r} is not one of {', '.join(lr.METHODS)}")
    if z.ndim == 5:
        if vae is not None:
            raise ValueError(f"{node}: the pixel-space path (vae connected) takes image latents, this one "
                             "is a video latent; disconnect the vae to resize it frame by frame")
        resized = lr.resample_video(z, height, width, method, antialias=antialias)
    elif z.ndim == 4:
        resized = _through_pixels(node, z, height, width, method, vae) if vae is not None else \
            lr.resample(z, height, width, method, antialias=antialias)
    else:
        raise ValueError(f"{node}: samples has shape {tuple(z.shape)}; expected (batch, channels, height, width)")
    out = dict(samples)
    out["samples"] = resized
    mask = samples.get("noise_mask")
    if isinstance(mask, torch.Tensor):
        # SetLatentNoiseMask keeps masks at pixel resolution, the sampler fits them to the latent:
        # a mask stays at the resolution it came in.
        scale = 1 if mask.shape[-2:] == z.shape[-2:] else pixel_ratio(vae)
        out["noise_mask"] = lr.resample_mask(mask, height * scale, width * scale)
    return out


def pixel_ratio(vae) -> int:
    """Pixels per latent pixel: the VAE's when one is connected, else SD's 8."""
    return vae.spacial_compression_decode() if vae is not None else 8


def _through_pixels(node: str, z, height, width, method, vae) -> torch.Tensor:
    """Decode, resize the picture, encode: both through the tiled VAE, so a 4K step fits."""
    if z.shape[1] != vae.latent_channels:
        raise ValueError(f"{node}: samples has {z.shape[1]} channels but the vae takes {vae.latent_channels}; "
                         "connect the VAE of the model the latent came from, or disconnect it")
    image = runtime_vae.decode(node, vae, z)
    ratio = vae.spacial_compression_decode()
    pixels = lr.resample(image.movedim(-1, 1), height * ratio, width * ratio, method).clamp(0.0, 1.0)
    return runtime_vae.encode(node, vae, pixels.movedim(1, -1))
