"""What the model says about its latent: channels, compression and the grid sizes snap to."""
from __future__ import annotations


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
