"""NoiseInversion: a latent's inverted noise as a NOISE for SamplerCustomAdvanced, so an img2img
(through TiledDiffusion, or any model) at 0.5-0.7 denoise keeps the picture's composition
(runtime.noise_inversion)."""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.custom_sampling import checked_sigmas, schedule
from ..runtime.geometry import model_latent
from ..runtime.host import CATEGORY, progress_ticker
from ..runtime.noise_inversion import InvertedNoise, inverted_noise

NODE = "NoiseInversion"


class NoiseInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseNoiseInversion",
            search_aliases=["noise inversion", "unsampler", "ddim inversion", "inversion", "img2img"],
            display_name="Noise Inversion (Expanse)",
            category=f"{CATEGORY}/sampling",
            description="Finds the noise the model would turn into this latent (its sampling run backwards, "
                        "Euler, with the prompt) for SamplerCustomAdvanced: sampled from it instead of random "
                        "noise, an img2img at 0.5-0.7 denoise adds detail and keeps the composition. Connect "
                        "noise and sigmas to SamplerCustomAdvanced, and the same latent to its latent_image.",
            inputs=[
                io.Model.Input("model", tooltip="The model that will sample (patched by Tiled Diffusion, LoRAs... "
                                                 "the inversion runs through the same patches)."),
                io.Conditioning.Input("positive", tooltip="The prompt the picture is inverted with (the sampler's "
                                                          "positive)."),
                io.Conditioning.Input("negative", tooltip="Passed to the model's sampling code; the inversion is "
                                                          "unguided (cfg 1), so it reads the positive only."),
                io.Latent.Input("latent", tooltip="The latent to invert: the one the sampler will redraw."),
                io.Int.Input("steps", default=20, min=1, max=10000,
                             tooltip="Steps of the sampling that follows (and of the inversion: one model call "
                                     "each)."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                               tooltip="The schedule's shape, as in KSampler."),
                io.Float.Input("denoise", default=0.6, min=0.0, max=1.0, step=0.01,
                               tooltip="How far up the schedule to invert: the denoise of the sampling that "
                                       "follows (0.5-0.7 adds detail and keeps the composition)."),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="A schedule in place of steps, scheduler and denoise (BasicScheduler, "
                                        "SplitSigmas...): inverted up to its first sigma and passed on."),
            ],
            outputs=[io.Noise.Output("noise", display_name="noise",
                                     tooltip="The inverted noise, for SamplerCustomAdvanced's noise."),
                     io.Sigmas.Output("schedule", display_name="sigmas",
                                      tooltip="The schedule to sample with, for SamplerCustomAdvanced's sigmas.")],
        )

    @classmethod
    @checked_entry
    def execute(cls, model, positive, negative, latent, steps=20, scheduler="normal", denoise=0.6,
                sigmas=None) -> io.NodeOutput:
        z = model_latent(NODE, "latent", model, latent["samples"])
        sigmas = checked_sigmas(NODE, sigmas)
        if sigmas is None:
            sigmas = schedule(model, steps=steps, sampler_name="euler", scheduler=scheduler, denoise=denoise)
        if len(sigmas) < 2:
            raise ValueError(f"{NODE}: denoise is 0, so nothing would be sampled and there is nothing to invert; "
                             "set denoise above 0")
        tick = progress_ticker(len(sigmas) - 1)
        noise = inverted_noise(model, z, positive, negative, sigmas.cpu(), seed=0,
                               callback=lambda *_: tick())
        return io.NodeOutput(InvertedNoise(NODE, noise.cpu()), sigmas)
