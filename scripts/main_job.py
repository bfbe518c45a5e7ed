"""The main job: the poster example workflow through a real ComfyUI server, writing an image.

It starts ComfyUI with the pack, opens the poster template (example_workflows/"Poster (SD1.5) -
2048x3072, progressive grow + chess redraw.json", the workflow a user loads from the template
browser), converts it to the API format as the frontend does, and queues it through the HTTP API:
    CheckpointLoaderSimple (or DemoModelLoader) -> CLIPTextEncode -> ProgressiveGrowSampler
      -> ChessTileRedraw (the latent, 2x) -> TiledVAEDecode -> SaveImage
printing progress, then writes the result to output/expanse_main.png.

With no checkpoint of yours, the pack's demo model draws it with sizes, tiles and steps scaled
down (as the end-to-end tests run every example workflow): a 512x768 poster in a few minutes on a
CPU. With your SD1.5 checkpoint the workflow runs as saved: a 2048x3072 poster.

    EXPANSE_CHECKPOINT=/path/model.safetensors  your own SD1.5 checkpoint instead of the demo model
    EXPANSE_PROMPT="..."                         what to draw (default: the workflow's own prompt,
                                                 or for the demo model one it knows)
    EXPANSE_SCALE=4                              with the demo model: the poster's sizes divided by this
    EXPANSE_SEED=2024                            the composition's seed
    EXPANSE_DEVICE=cpu                           keep ComfyUI on the CPU (default auto: a GPU, CUDA,
                                                 MPS or XPU, when torch in this venv sees one)
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time

from expanse_harness.host import ROOT
from expanse_harness.server import AUTO, DEVICES, ComfyServer
from expanse_harness.workflows import DEMO_WEIGHTS, TEMPLATES, Definitions, demo_settings, for_demo, ui_to_api

WORKFLOW = "poster_progressive_chess_redraw"


def model_nodes() -> tuple[dict, dict]:
    """The loader node for the user's checkpoint or the demo model, and extra model folders."""
    checkpoint = os.environ.get("EXPANSE_CHECKPOINT")
    if not checkpoint:
        return {"class_type": "ExpanseDemoModelLoader", "inputs": {"weights": DEMO_WEIGHTS}}, {}
    path = pathlib.Path(checkpoint).expanduser().resolve()
    if not path.is_file():
        sys.exit(f"EXPANSE_CHECKPOINT={path} is not a file")
    return ({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": path.name}},
            {"checkpoints": path.parent})


def server_device() -> str:
    """Where ComfyUI computes: EXPANSE_DEVICE, by default auto (a GPU when torch sees one; the
    tests keep the server's default, the CPU)."""
    device = os.environ.get("EXPANSE_DEVICE", AUTO)
    if device not in DEVICES:
        sys.exit(f"EXPANSE_DEVICE={device} is not one of {', '.join(DEVICES)}")
    return device


def poster_prompt(object_info: dict, checkpoint: dict | None, text: str | None, scale: int, seed: int) -> dict:
    """The poster workflow as the API prompt the frontend would queue, with the user's checkpoint
    (CheckpointLoaderSimple inputs) or scaled down for the demo model."""
    defs = Definitions(object_info)
    saved = json.loads(TEMPLATES[WORKFLOW].path.read_text())
    prompt = ui_to_api(saved, defs)
    if checkpoint is None:
        prompt = for_demo(prompt, demo_settings(WORKFLOW, defs), scale=scale)
    for node in prompt.values():
        inputs, title = node["inputs"], node.get("_meta", {}).get("title")
        if node["class_type"] == "CheckpointLoaderSimple" and checkpoint:
            inputs.update(checkpoint)
        if node["class_type"] == "CLIPTextEncode" and title == "Positive prompt" and text:
            inputs["text"] = text
        if node["class_type"] == "ExpanseProgressiveGrowSampler":
            inputs["seed"] = seed
        if node["class_type"] == "SaveImage":
            inputs["filename_prefix"] = "expanse_main"
    return prompt


def main() -> int:
    env = os.environ.get
    loader, model_dirs = model_nodes()
    checkpoint = loader["inputs"] if loader["class_type"] == "CheckpointLoaderSimple" else None
    scale, seed = int(env("EXPANSE_SCALE", "4")), int(env("EXPANSE_SEED", "2024"))
    out_dir = ROOT / "output"
    out_dir.mkdir(exist_ok=True)
    with ComfyServer(workdir=ROOT / ".cache" / "main-job", model_dirs=model_dirs, device=server_device()) as server:
        print(f"ComfyUI is up at {server.url} on the {server.runs_on.upper()} (log: {server.log_path})")
        prompt = poster_prompt(server.get("/object_info"), checkpoint, env("EXPANSE_PROMPT"), scale, seed)
        started = time.monotonic()
        shown: dict[str, int] = {}
        titles = {node_id: node.get("_meta", {}).get("title", node["class_type"]) for node_id, node in prompt.items()}

        def report(value, maximum, node):
            tenth = value * 10 // max(1, maximum)  # a line per node every tenth of its work
            if shown.get(node) != tenth:
                shown[node] = tenth
                print(f"  [{time.monotonic() - started:6.1f} s] {titles.get(node, node)}: {value}/{maximum}",
                      flush=True)

        latent = next(n["inputs"] for n in prompt.values() if n["class_type"] == "EmptyLatentImage")
        print(f"queued {WORKFLOW} with {loader['class_type']}: composed at {latent['width']}x{latent['height']} px "
              f"by ProgressiveGrowSampler, then ChessTileRedraw 2x and TiledVAEDecode")
        try:
            entry = server.run(prompt, on_progress=report, what="the workflow")
        except RuntimeError as error:
            print(error)
            return 1
        result = out_dir / "expanse_main.png"
        result.write_bytes(server.images(entry)[0])
        print(f"done in {time.monotonic() - started:.1f} s: wrote {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
