"""ProgressiveGrowSampler: draw small, grow the latent in stages, refine each stage with img2img.

Each stage is an ordinary ComfyUI sampling run (comfy.sample.sample), so every sampler and
scheduler works, ancestral and SDE included, and a model patched by TiledDiffusion draws the
stages larger than its tiles in tiles."""
from __future__ import annotations

import torch
import comfy.model_management
import comfy.sample
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..core import latent_resample as lr
from ..core import progressive
from .host import CATEGORY, sampling_inputs
from .latent_upscale import resize_latent
from .tiled_diffusion import model_geometry

NODE = "ProgressiveGrowSampler"


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


def sample_stage(model, latent: dict, *, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                 positive, negative, denoise: float, progress: StageProgress) -> torch.Tensor:
    z = latent["samples"]
    noise = comfy.sample.prepare_noise(z, seed, latent.get("batch_index"))
    out = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, z,
                              denoise=denoise, noise_mask=latent.get("noise_mask"), callback=progress.callback(),
                              disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    progress.finish_stage(steps)
    return out


def inject_noise(z: torch.Tensor, amount: float, seed: int) -> torch.Tensor:
    """z plus Gaussian noise of std amount x z's std: fresh texture for the refine to turn into detail."""
    if amount <= 0:
        return z
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(z.shape, generator=g, dtype=torch.float32).to(z.device, z.dtype)
    return z + noise * (amount * z.float().std().item())


class ProgressiveGrowSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Progressive Grow Sampler (Expanse)",
            category=f"{CATEGORY}/sampling",
            description="Draws the picture small (composition), then grows the latent stage by stage to the "
                        "latent_image's size, refining each stage with img2img (detail). Works with every "
                        "sampler and scheduler, and with a TiledDiffusion model for stages larger than a tile.",
            inputs=[
                io.Model.Input("model", tooltip="The model; a TiledDiffusion model draws large stages in tiles."),
                io.Conditioning.Input("positive", tooltip="What to draw."),
                io.Conditioning.Input("negative", tooltip="What to avoid."),
                io.Latent.Input("latent_image", tooltip="Its size is the final size (e.g. Empty Latent Image at "
                                                        "2048x2048). A noise_mask on it is kept at every stage."),
                *sampling_inputs("Seed of the first stage; each later stage uses seed + its index.",
                                 "Steps of the first, small stage."),
                io.Float.Input("min_scale", default=0.25, min=0.05, max=1.0, step=0.05,
                               tooltip="Size of the first stage as a fraction of the final size. Pick it so the "
                                       "first stage is near the model's training size (512 px for SD1.5)."),
                io.Float.Input("max_scale", default=1.0, min=0.05, max=1.0, step=0.05,
                               tooltip="Size of the last stage as a fraction of the final size (1: the final size)."),
                io.Int.Input("stages", default=4, min=1, max=16,
                             tooltip="Number of sizes, the first included. More stages: smaller growth per "
                                     "stage, more refine steps in all."),
                io.Combo.Input("spacing", options=list(progressive.SPACINGS), default=progressive.GEOMETRIC,
                               tooltip="geometric: every stage grows by the same factor. linear: by the same amount."),
                io.Boolean.Input("refine", default=True,
                                 tooltip="Refine each grown stage with img2img. Off: only the first stage is "
                                         "sampled and then upscaled."),
                io.Float.Input("denoise_second", default=0.55, min=0.0, max=1.0, step=0.01,
                               tooltip="Refine denoise of the second stage (the first refine). Higher redraws more."),
                io.Float.Input("denoise_last", default=0.35, min=0.0, max=1.0, step=0.01,
                               tooltip="Refine denoise of the last stage; stages between are interpolated. Lower "
                                       "keeps the composition, higher adds more new detail."),
                io.Int.Input("refine_steps", default=5, min=1, max=10000,
                             tooltip="Steps each refine runs; ComfyUI runs exactly these at any denoise. A refine "
                                     "at denoise 0.35-0.55 covers the quieter part of the schedule, so 5-8 "
                                     "steps match a 15-20 step first stage."),
                io.Combo.Input("upscale_method", options=list(lr.METHODS), default="bislerp",
                               tooltip="How the latent grows between stages (see Latent Upscale Advanced)."),
                io.Float.Input("stage_noise", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Extra Gaussian noise added to each grown latent before its refine, as a "
                                       "fraction of the latent's std; 0.02-0.1 adds texture. 0: none."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Connect to grow in pixel space (decode, resize, encode with the tiled VAE) "
                                     "instead of on the latent."),
            ],
            # Named outputs: without a display_name 0.3.75 shows both as "LATENT", 0.33.0 by their ids.
            outputs=[io.Latent.Output("latent", display_name="latent", tooltip="The final latent."),
                     io.Latent.Output("stage_latents", display_name="stage_latents", is_output_list=True,
                                      tooltip="Every stage's latent, smallest first, for inspection.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
                min_scale=0.25, max_scale=1.0, stages=4, spacing=progressive.GEOMETRIC, refine=True,
                denoise_second=0.55, denoise_last=0.35, refine_steps=5, upscale_method="bislerp",
                stage_noise=0.0, vae=None) -> io.NodeOutput:
        z = latent_image["samples"]
        if z.ndim != 4 or z.shape[0] == 0:
            raise ValueError(f"{NODE}: latent_image must be an image latent (batch, channels, height, width), "
                             f"got shape {tuple(z.shape)}")
        z = comfy.sample.fix_empty_latent_channels(model, z)
        channels, _, grid = model_geometry(model)
        if z.shape[1] != channels:
            raise ValueError(f"{NODE}: latent_image has {z.shape[1]} channels but the model takes {channels}; "
                             "use a latent made for this model (Empty Latent Image, or VAE Encode with its VAE)")
        try:
            stage_plan = progressive.plan(z.shape[-2], z.shape[-1], stages=stages, min_scale=min_scale,
                                          max_scale=max_scale, spacing=spacing, denoise_second=denoise_second,
                                          denoise_last=denoise_last, grid=grid)
        except ValueError as e:
            raise ValueError(f"{NODE}: {e}") from None
        if len(stage_plan) < stages:
            raise ValueError(f"{NODE}: latent_image ({z.shape[-1] * 8}x{z.shape[-2] * 8} px) is too small for "
                             f"{stages} stages from min_scale {min_scale}: they round to {len(stage_plan)} "
                             "different sizes. Use fewer stages, a smaller min_scale or a larger latent_image")
        total = steps + (refine_steps * (len(stage_plan) - 1) if refine else 0)
        progress = StageProgress(model, total)
        settings = dict(cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, positive=positive,
                        negative=negative, progress=progress)

        latent = dict(latent_image, samples=z)
        results = []
        for index, stage in enumerate(stage_plan):
            latent = resize_latent(latent, stage.height, stage.width, upscale_method,
                                   vae=vae if index > 0 else None)
            if index == 0:
                latent["samples"] = sample_stage(model, latent, seed=seed, steps=steps, denoise=1.0, **settings)
            elif refine:
                latent["samples"] = inject_noise(latent["samples"], stage_noise, seed + 1000 + index)
                latent["samples"] = sample_stage(model, latent, seed=seed + index, steps=refine_steps,
                                                 denoise=stage.denoise, **settings)
            results.append(dict(latent))
        return io.NodeOutput(results[-1], results)
