"""What every Expanse node shares with the ComfyUI host: the category, progress and Cancel."""
from __future__ import annotations

from typing import Callable

import comfy.model_management
import comfy.samplers
import comfy.utils
from comfy_api.latest import io

CATEGORY = "Expanse"


def progress_ticker(total: int) -> Callable[[], None]:
    """A tick for the core's loops: honours Cancel, then advances ComfyUI's progress bar."""
    bar = comfy.utils.ProgressBar(max(1, total))

    def tick() -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update(1)

    return tick


def sampling_inputs(seed_tooltip: str, steps_tooltip: str) -> list:
    """seed, steps, cfg, sampler_name and scheduler, as KSampler has them (every sampler and
    scheduler ComfyUI offers)."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip=seed_tooltip),
        io.Int.Input("steps", default=20, min=1, max=10000, tooltip=steps_tooltip),
        io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale, as in KSampler."),
        io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler",
                       tooltip="Any of ComfyUI's samplers, ancestral and SDE ones included."),
        io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                       tooltip="Any of ComfyUI's schedulers."),
    ]
