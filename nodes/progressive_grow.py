"""ProgressiveGrowSampler: draw small, grow the latent in stages, refine each stage with img2img.

Each stage is an ordinary ComfyUI sampling run (comfy.sample.sample), so every sampler and
scheduler works, ancestral and SDE included, and a model patched by TiledDiffusion draws the
stages larger than its tiles in tiles."""
from __future__ import annotations

from comfy_api.latest import io

from ..core import latent_resample as lr
from ..core import progressive
from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.custom_sampling import checked_sigmas, custom_sampling_inputs
from ..runtime.geometry import model_geometry, model_latent
from ..runtime.host import CATEGORY, sampling_inputs
from ..runtime.latent import resize_latent
from ..runtime.stage_sampling import StageProgress, inject_noise, offset_seed, refine_sigmas, sample_stage

NODE = "ProgressiveGrowSampler"


class ProgressiveGrowSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseProgressiveGrowSampler",
            search_aliases=["hires fix", "progressive upscale", "iterative upscale", "img2img upscale", "grow"],
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
                *custom_sampling_inputs(" for every stage", "The first stage's whole schedule, run exactly "
                                        "(BasicScheduler, a distilled model's few-step schedule...); each refine "
                                        "runs its last part, from the stage's denoise on, as Split Sigmas Denoise "
                                        "cuts it. steps, scheduler and refine_steps are then not used."),
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
    @checked_entry
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
                min_scale=0.25, max_scale=1.0, stages=4, spacing=progressive.GEOMETRIC, refine=True,
                denoise_second=0.55, denoise_last=0.35, refine_steps=5, upscale_method="bislerp",
                stage_noise=0.0, vae=None, sampler=None, sigmas=None) -> io.NodeOutput:
        z = model_latent(NODE, "latent_image", model, latent_image["samples"])
        grid = model_geometry(model)[2]
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
        sigmas = checked_sigmas(NODE, sigmas)
        if sigmas is None:
            total = steps + (refine_steps * (len(stage_plan) - 1) if refine else 0)
        else:
            total = len(sigmas) - 1 + (sum(len(refine_sigmas(sigmas, s.denoise)) - 1 for s in stage_plan[1:])
                                       if refine else 0)
        progress = StageProgress(model, total)
        settings = dict(cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, positive=positive,
                        negative=negative, progress=progress, sampler=sampler)

        latent = dict(latent_image, samples=z)
        results = []
        for index, stage in enumerate(stage_plan):
            latent = resize_latent(NODE, latent, stage.height, stage.width, upscale_method,
                                   vae=vae if index > 0 else None)
            if index == 0:
                latent["samples"] = sample_stage(model, latent, seed=seed, steps=steps, denoise=1.0, sigmas=sigmas,
                                                 **settings)
            elif refine:
                latent["samples"] = inject_noise(latent["samples"], stage_noise, offset_seed(seed, 1000 + index))
                tail = refine_sigmas(sigmas, stage.denoise) if sigmas is not None else None
                if tail is None or len(tail) > 1:  # a schedule cut to no step leaves the stage as grown
                    latent["samples"] = sample_stage(model, latent, seed=offset_seed(seed, index),
                                                     steps=refine_steps, denoise=stage.denoise, sigmas=tail,
                                                     **settings)
            results.append(dict(latent))
        return io.NodeOutput(results[-1], results)
