"""What the model says about its latent: channels, compression and the grid sizes snap to."""
from __future__ import annotations

import comfy.sample
import torch


def model_geometry(model) -> tuple[int, int, int]:
    """(latent channels, latent downscale ratio, patch grid in latent px) read from the model:
    SD1.x/SDXL are (4, 8, 1), SD3 and Flux.1 (16, 8, 2)."""
    base = model.model
    fmt = base.latent_format
    channels = int(getattr(fmt, "latent_channels", 4))
    downscale = getattr(fmt, "spacial_downscale_ratio", 8)
    patch = getattr(base.diffusion_model, "patch_size", 1)
    if isinstance(patch, (tuple, list)):
        patch = patch[-1]
    return channels, int(downscale), max(1, int(patch or 1))


def latent_grid(channels: int) -> int:
    """The latent grid sizes snap to, for a latent alone (no model at hand to ask, as
    model_geometry does): 2 latent px for 16-channel latents (SD3 and Flux.1 are DiT models that
    cut the latent into 2x2 patches), 1 otherwise."""
    return 2 if channels == 16 else 1


def model_latent(node: str, name: str, model, z: torch.Tensor) -> torch.Tensor:
    """z as the model samples it (an empty latent given the model's channels, as ComfyUI's samplers
    do), or a message naming the input `name`: an image latent of the model's channel count."""
    if z.ndim != 4 or z.shape[0] == 0:
        raise ValueError(f"{node}: {name} must be an image latent (batch, channels, height, width), "
                         f"got shape {tuple(z.shape)}")
    z = comfy.sample.fix_empty_latent_channels(model, z)
    channels = model_geometry(model)[0]
    if z.shape[1] != channels:
        raise ValueError(f"{node}: {name} has {z.shape[1]} channels but the model takes {channels}; use a "
                         "latent made for this model (Empty Latent Image, or VAE Encode with its VAE)")
    return z
