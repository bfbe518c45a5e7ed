"""Noise inversion: the noise from which the model's own sampler would draw a given latent, found
by running the sampling ODE backwards (Euler, from the clean latent up to the schedule's first
sigma, with the model and the conditioning of the run). Sampling from that noise, rather than
from random noise, keeps the picture's composition at a denoise that adds real detail: the
structure-preserving upscale of the A1111 Tiled Diffusion extension.

Everything goes through ComfyUI's sampling code (comfy.sample.sample_custom with a KSAMPLER), so
model patches (TiledDiffusion, LoRAs, ControlNets, masked conditioning) apply to the inversion as
they do to the sampling."""
from __future__ import annotations

import math

import torch
import comfy.sample
import comfy.samplers

# Guidance of the inversion: the conditional prediction alone. The inversion of a guided ODE
# drifts away (the guided field amplifies the error at each step); at 1 it also costs one model
# call per step, not two.
INVERSION_CFG = 1.0


def inversion_sigmas(model, sigmas: torch.Tensor) -> torch.Tensor:
    """The schedule run backwards: from the clean end (a schedule's trailing 0 becomes the model's
    smallest sigma, where its prediction is defined) up to the schedule's first sigma."""
    backwards = sigmas.flip(0).clone().float()
    if float(backwards[0]) <= 0:
        backwards[0] = min(float(model.get_model_object("model_sampling").sigma_min), float(backwards[1]) / 2)
    return backwards


def _euler_backwards(found: dict):
    """A KSAMPLER function that steps Euler along increasing sigmas and leaves the result, in the
    model's own latent space, in found["x"] (what sample_custom returns has been scaled back)."""
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        ones = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * ones, **extra_args)
            x = denoised + (x - denoised) * (sigmas[i + 1] / sigmas[i])
            if callback is not None:
                callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        found["x"] = x
        return x
    return sample


def inverted_noise(model, latent: torch.Tensor, positive, negative, sigmas: torch.Tensor, *,
                   seed: int = 0, callback=None) -> torch.Tensor:
    """The noise (latent-shaped, on the latent's device) that a sampler given `latent` as its
    start and `sigmas` as its schedule turns into the inverted latent at sigmas[0]: passed as the
    sampler's noise in place of random noise. Where a noise mask pins a context to the source, it
    pins it to the source noised with this same noise, so the context agrees with the tile.
    callback: called after each inversion step, as comfy.sample's callback."""
    found: dict = {}
    sampler = comfy.samplers.KSAMPLER(_euler_backwards(found))
    zeros = torch.zeros_like(latent, device="cpu")
    comfy.sample.sample_custom(model, zeros, INVERSION_CFG, sampler, inversion_sigmas(model, sigmas), positive,
                               negative, latent, callback=callback, disable_pbar=True, seed=seed)
    top = found["x"]
    base = model.model
    source = base.process_latent_in(latent.to(top.device, top.dtype))
    model_sampling = model.get_model_object("model_sampling")
    sigma = sigmas[:1].to(top.device, top.dtype)
    at_max = math.isclose(float(model_sampling.sigma_max), float(sigmas[0]), rel_tol=1e-05) or \
        float(sigmas[0]) > float(model_sampling.sigma_max)
    # noise_scaling is affine in the noise (start = offset + scale * noise): solve for the noise,
    # with the same max_denoise the sampler will use (comfy.samplers.Sampler.max_denoise's rule; the
    # method needs the guider's model wrapper, which exists only while a guider samples).
    offset = model_sampling.noise_scaling(sigma, torch.zeros_like(source), source, at_max)
    scale = model_sampling.noise_scaling(sigma, torch.ones_like(source), source, at_max) - offset
    return ((top - offset) / scale).to(latent.device, latent.dtype)


class InvertedNoise:
    """A NOISE (as RandomNoise makes, for SamplerCustomAdvanced) that gives the inverted noise of
    one latent, and refuses a latent of another shape with a message, not a broadcast error."""

    def __init__(self, node: str, noise: torch.Tensor):
        self.node, self.noise, self.seed = node, noise, 0

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        shape = tuple(input_latent["samples"].shape)
        if shape != tuple(self.noise.shape):
            raise ValueError(f"{self.node}: the latent being sampled has shape {shape}, the inverted one "
                             f"{tuple(self.noise.shape)}; connect the latent you inverted to the sampler's "
                             "latent_image")
        return self.noise
