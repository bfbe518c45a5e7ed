"""Running a workflow with the pack's demo model on a CPU: every checkpoint loader becomes
DemoModelLoader, the prompts become ones the demo model knows, pixel sizes, tiles and canvases are
divided by a scale and the sampling steps capped; the pictures its LoadImage nodes expect are drawn
with the demo model and uploaded.

Which inputs are pixel sizes and sampling steps is read from the node definitions (/object_info),
not listed here: a pixel size is an INT input with a `step` (the latent grid, or ImageStitch's
2 px), scaled on that grid and kept at or above the input's `min`; a step count is an INT input
named `steps` or `*_steps`.
"""
from __future__ import annotations

import json
import math

from .prompts import DEMO_WEIGHTS, picture_prompt
from .save_format import Definitions

LOADERS = {"CheckpointLoaderSimple"}
SAVERS = {"SaveImage", "ExpanseSaveLargeImage"}  # their filename_prefix becomes the run's
# Where the demo run needs more than the input's own `min`: canvases of at least 64 px, and tiled VAE
# tiles of at least 32 px (0 still means automatic).
DEMO_MINIMUM = {("EmptyLatentImage", "width"): 64, ("EmptyLatentImage", "height"): 64,
                ("ExpanseTiledVAEEncode", "tile_size"): 32, ("ExpanseTiledVAEDecode", "tile_size"): 32}


def scaled_inputs(defs: Definitions, node_types) -> dict:
    """What for_demo changes in nodes of these types, from their definitions:
    pixel_inputs: (node type, input) -> (smallest value after scaling, grid);
    step_inputs: the (node type, input) pairs that are sampling steps."""
    pixel_inputs, step_inputs = {}, set()
    for node_type in sorted(node_types):
        for entry in defs[node_type].inputs:
            key, options = (node_type, entry["name"]), entry["options"]
            if entry["type"] != "INT":
                continue
            if "step" in options:
                pixel_inputs[key] = (DEMO_MINIMUM.get(key, options.get("min", 0)), options["step"])
            elif entry["name"] == "steps" or entry["name"].endswith("_steps"):
                step_inputs.add(key)
    return {"pixel_inputs": pixel_inputs, "step_inputs": step_inputs}


def scaled_px(value: int, scale: float, minimum: int, grid: int = 8) -> int:
    """value / scale on the grid, at least minimum (0 stays 0: it means 'automatic' or 'none' for
    these inputs)."""
    if value == 0:
        return 0
    return max(minimum, grid, int(math.floor(value / scale / grid + 0.5)) * grid)


def for_demo(prompt: dict, demo: dict, *, scale: float | None = None, steps: int | None = None,
             prefix: str | None = None) -> dict:
    """A copy of an API prompt that runs with the demo model on a CPU: every checkpoint loader
    becomes DemoModelLoader (same MODEL, CLIP, VAE outputs), each CLIPTextEncode gets the demo
    prompt of its title ("" if none: negatives; every text kept where demo has no "prompts", as
    for the demo templates), pixel sizes, tiles and canvases are divided by scale (default
    demo["scale"]) and sampling steps capped at steps (default demo["steps"]).
    demo: an example's settings (examples.demo_settings), with the inputs scaled_inputs finds."""
    scale = demo.get("scale", 1) if scale is None else scale
    steps = demo.get("steps") if steps is None else steps
    prompts = demo.get("prompts")
    pixel_inputs, step_inputs = demo["pixel_inputs"], demo["step_inputs"]
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in LOADERS:
            node["class_type"], node["inputs"] = "ExpanseDemoModelLoader", {"weights": DEMO_WEIGHTS}
            continue
        if kind == "CLIPTextEncode" and prompts is not None and not isinstance(inputs.get("text"), list):
            inputs["text"] = prompts.get(node.get("_meta", {}).get("title"), "")
        for name, value in list(inputs.items()):
            if isinstance(value, list):
                continue
            if (kind, name) in pixel_inputs and isinstance(value, (int, float)):
                inputs[name] = scaled_px(int(value), scale, *pixel_inputs[(kind, name)])
            elif (kind, name) in step_inputs and steps is not None:
                inputs[name] = min(int(value), steps)
        if kind in SAVERS and prefix is not None:
            inputs["filename_prefix"] = prefix
    return out


def demo_images(demo: dict, scale: float | None = None) -> dict[str, tuple[int, int, str]]:
    """LoadImage file -> (width, height, demo prompt) of the picture to draw for it at this scale."""
    scale = demo.get("scale", 1) if scale is None else scale
    return {name: (scaled_px(w, scale, 64), scaled_px(h, scale, 64), text)
            for name, (w, h, text) in demo.get("images", {}).items()}


def upload_demo_images(server, demo: dict, scale: float | None = None, steps: int = 20) -> None:
    """Draws each picture a workflow's LoadImage nodes expect with the demo model and uploads it
    (to the expanse_harness.server.ComfyServer `server`) under the file name the workflow names."""
    for name, (width, height, text) in demo_images(demo, scale).items():
        entry = server.run(picture_prompt(width, height, text, steps=steps), timeout=600, what="the input picture")
        server.upload_image(server.images(entry)[0], name, overwrite=True)
