"""SAMPLER and SIGMAS inputs as SamplerCustom takes them, for the nodes that sample themselves
(ChessTileRedraw per tile, ProgressiveGrowSampler per stage)."""
from __future__ import annotations

import torch
import comfy.sample
import comfy.samplers
from comfy_api.latest import io


def checked_sigmas(node: str, sigmas) -> torch.Tensor | None:
    """A SIGMAS input as the sampler takes it, or a message naming it: a schedule is one row of at
    least two finite values (a start and an end), as the scheduler nodes make."""
    if sigmas is None:
        return None
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1 or sigmas.numel() < 2:
        shape = tuple(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
        raise ValueError(f"{node}: sigmas has shape {shape}; connect a schedule of at least two values (a "
                         "scheduler node such as BasicScheduler with at least one step and denoise above 0)")
    if not torch.isfinite(sigmas).all():
        raise ValueError(f"{node}: sigmas holds NaN or infinite values; connect a scheduler node's SIGMAS")
    return sigmas


def schedule(model, *, steps: int, sampler_name: str, scheduler: str, denoise: float) -> torch.Tensor:
    """The sigmas KSampler runs for these settings (empty at denoise 0: nothing is sampled)."""
    return comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                   scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas


def sample(model, noise: torch.Tensor, latent: torch.Tensor, positive, negative, *, steps: int, cfg: float,
           sampler_name: str, scheduler: str, denoise: float, sampler=None, sigmas: torch.Tensor | None = None,
           **options) -> tuple[torch.Tensor, int]:
    """One sampling run and the steps it ran: as KSampler runs it, or, with a SAMPLER (in place of
    sampler_name) or SIGMAS (in place of steps, scheduler and denoise), as SamplerCustom runs it.
    A SAMPLER alone runs the schedule KSampler's own code makes. options: noise_mask, callback,
    disable_pbar and seed, as comfy.sample takes them."""
    if sampler is None and sigmas is None:
        return comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                   denoise=denoise, **options), steps
    if sigmas is None:
        sigmas = schedule(model, steps=steps, sampler_name=sampler_name, scheduler=scheduler, denoise=denoise)
    if sampler is None:
        sampler = comfy.samplers.sampler_object(sampler_name)
    return comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                      **options), len(sigmas) - 1


def custom_sampling_inputs(sampler_scope: str, sigmas_tooltip: str) -> list:
    """The optional sampler and sigmas inputs; sampler_scope says where the SAMPLER applies."""
    return [
        io.Sampler.Input("sampler", optional=True,
                         tooltip=f"A SAMPLER (KSamplerSelect, or a custom sampler node) in place of sampler_name"
                                 f"{sampler_scope}, as SamplerCustom takes it."),
        io.Sigmas.Input("sigmas", optional=True, tooltip=sigmas_tooltip),
    ]
