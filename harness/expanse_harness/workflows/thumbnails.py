"""An example's thumbnail: the workflow run with the demo model on a server, its largest saved
picture as a small JPEG."""
from __future__ import annotations

import io

from .demo_scale import for_demo, upload_demo_images
from .examples import demo_settings
from .save_format import Definitions
from .ui_to_api import ui_to_api


def thumbnail(server, name: str, workflow: dict, defs: Definitions, max_side: int = 512) -> bytes:
    """The workflow (`name`'s, in the UI format) run with the demo model on the ComfyUI server, its
    largest saved picture as a JPEG (max side max_side)."""
    from PIL import Image

    demo = demo_settings(name, defs)
    upload_demo_images(server, demo)
    prompt = for_demo(ui_to_api(workflow, defs), demo, prefix=f"thumb_{name}")
    entry = server.run(prompt, timeout=900)
    pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in server.images(entry)]
    if not pictures:
        raise RuntimeError(f"{name}: the workflow saved no picture")
    picture = max(pictures, key=lambda p: p.width * p.height)
    picture.thumbnail((max_side, max_side), Image.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=88, optimize=True)
    return out.getvalue()
