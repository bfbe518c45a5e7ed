"""Sampling the stages of progressive growing as ComfyUI samples (core.progressive plans them):
each stage an ordinary comfy.sample.sample run, so every sampler and scheduler works, ancestral and
SDE included, under one progress bar with KSampler's previews."""
from __future__ import annotations

import torch
import comfy.model_management
import comfy.sample
import comfy.utils
import latent_preview

from . import custom_sampling


class StageProgress:
    """One progress bar over every stage's steps, with the previews KSampler shows."""

    def __init__(self, model, total: int):
        self.bar = comfy.utils.ProgressBar(max(1, total))
        self.total = max(1, total)
        self.done = 0
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(self):
        offset = self.done

        def on_step(step, x0, x, total_steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0) if self.previewer else None
            self.bar.update_absolute(offset + step + 1, self.total, preview)
        return on_step

    def finish_stage(self, steps: int) -> None:
        self.done += steps


SEED_SPACE = 2 ** 64  # KSampler's seeds run to 0xffffffffffffffff, which torch's generator takes


def offset_seed(seed: int, offset: int) -> int:
    """The seed of a later stage: seed + offset, wrapping at the top of the seed range (a seed at its
    maximum would overflow torch's generator)."""
    return (seed + offset) % SEED_SPACE


def sample_stage(model, latent: dict, *, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                 positive, negative, denoise: float, progress: StageProgress, sampler=None,
                 sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """One stage as KSampler samples it, or with a SAMPLER (in place of sampler_name) and sigmas
    (in place of steps, scheduler and denoise) as SamplerCustom does."""
    z = latent["samples"]
    noise = comfy.sample.prepare_noise(z, seed, latent.get("batch_index"))
    out, steps = custom_sampling.sample(model, noise, z, positive, negative, steps=steps, cfg=cfg,
                                        sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
                                        sampler=sampler, sigmas=sigmas, noise_mask=latent.get("noise_mask"),
                                        callback=progress.callback(),
                                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    progress.finish_stage(steps)
    return out


def refine_sigmas(sigmas: torch.Tensor, denoise: float) -> torch.Tensor:
    """The part of a whole schedule a refine at `denoise` runs: its last round(steps x denoise)
    steps, as Split Sigmas Denoise cuts it (none at all: an empty schedule)."""
    steps = round((len(sigmas) - 1) * denoise)
    return sigmas[-(steps + 1):] if steps > 0 else sigmas[:0]


def inject_noise(z: torch.Tensor, amount: float, seed: int) -> torch.Tensor:
    """z plus Gaussian noise of std amount x z's std: fresh texture for the refine to turn into detail."""
    if amount <= 0:
        return z
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(z.shape, generator=g, dtype=torch.float32).to(z.device, z.dtype)
    return z + noise * (amount * z.float().std().item())
