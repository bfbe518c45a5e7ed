"""What every Expanse node shares with the ComfyUI host: the category, progress and Cancel."""
from __future__ import annotations

from typing import Callable

import comfy.model_management
import comfy.utils

CATEGORY = "Expanse"


def progress_ticker(total: int) -> Callable[[], None]:
    """A tick for the core's loops: honours Cancel, then advances ComfyUI's progress bar."""
    bar = comfy.utils.ProgressBar(max(1, total))

    def tick() -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update(1)

    return tick
