"""The main job: a real workflow through a real ComfyUI server, writing an image.

It starts ComfyUI with the pack and queues, through the HTTP API, a panorama:
    DemoModelLoader (or CheckpointLoaderSimple) -> CLIPTextEncode -> EmptyLatentImage
      -> TiledDiffusion (Mixture of Diffusers) -> KSampler -> TiledVAEDecode -> SaveImage
printing progress, then writes the result to output/expanse_main.png.

    EXPANSE_CHECKPOINT=/path/model.safetensors  your own SD1.x/SDXL checkpoint instead of the demo model
    EXPANSE_PROMPT="..."                         what to draw (default: a sunset over mountains and a lake)
    EXPANSE_WIDTH=1024 EXPANSE_HEIGHT=384        the picture's size in pixels
    EXPANSE_TILE=256                             TiledDiffusion's tile (the demo model's training size;
                                                 512-768 for an SD1.5 checkpoint)
    EXPANSE_STEPS=20 EXPANSE_SEED=7              sampling steps and seed
"""
from __future__ import annotations

import os
import pathlib
import sys
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from comfy_server import ROOT, ComfyServer  # noqa: E402

DEMO_PROMPT = "a sunset sky with a sun over mountains and a lake"


def model_nodes() -> tuple[dict, dict]:
    """The loader node for the user's checkpoint or the demo model, and extra model folders."""
    checkpoint = os.environ.get("EXPANSE_CHECKPOINT")
    if not checkpoint:
        return {"class_type": "DemoModelLoader", "inputs": {"weights": "expanse-demo.safetensors"}}, {}
    path = pathlib.Path(checkpoint).expanduser().resolve()
    if not path.is_file():
        sys.exit(f"EXPANSE_CHECKPOINT={path} is not a file")
    return ({"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": path.name}},
            {"checkpoints": path.parent})


def text_to_image_prompt(loader: dict, text: str, width: int, height: int, steps: int, seed: int,
                         tile: int = 512, diffusion_tile: int = 0, prefix: str = "expanse_main") -> dict:
    """The API-format graph: loader -> text -> sampler -> tiled VAE decode -> save; with
    diffusion_tile, the model goes through TiledDiffusion first."""
    graph = {
        "model": loader,
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["model", 1], "text": text}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["model", 1], "text": ""}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "sample": {"class_type": "KSampler",
                   "inputs": {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                              "latent_image": ["latent", 0], "seed": seed, "steps": steps, "cfg": 5.0,
                              "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "TiledVAEDecode",
                   "inputs": {"samples": ["sample", 0], "vae": ["model", 2], "tile_size": tile, "mode": "exact",
                              "padding": 96}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }
    if diffusion_tile:
        graph["tiled"] = {"class_type": "TiledDiffusion",
                          "inputs": {"model": ["model", 0], "method": "mixture_of_diffusers",
                                     "tile_width": diffusion_tile, "tile_height": diffusion_tile,
                                     "overlap": diffusion_tile // 4, "tile_batch_size": 4, "seed": seed}}
        graph["sample"]["inputs"]["model"] = ["tiled", 0]
    return graph


def main() -> int:
    env = os.environ.get
    width, height = int(env("EXPANSE_WIDTH", "1024")), int(env("EXPANSE_HEIGHT", "384"))
    diffusion_tile = int(env("EXPANSE_TILE", "256"))
    steps, seed = int(env("EXPANSE_STEPS", "20")), int(env("EXPANSE_SEED", "7"))
    text = env("EXPANSE_PROMPT", DEMO_PROMPT)
    loader, model_dirs = model_nodes()
    out_dir = ROOT / "output"
    out_dir.mkdir(exist_ok=True)
    with ComfyServer(workdir=ROOT / ".cache" / "main-job", model_dirs=model_dirs) as server:
        print(f"ComfyUI is up at {server.url} (log: {server.log_path})")
        prompt = text_to_image_prompt(loader, text, width, height, steps, seed, tile=min(512, width, height),
                                      diffusion_tile=diffusion_tile)
        client_id = uuid.uuid4().hex
        status, answer = server.queue(prompt, client_id)
        if status != 200:
            print(f"ComfyUI refused the prompt: {answer}")
            return 1
        started = time.monotonic()
        shown: dict[str, int] = {}

        def report(value, maximum, node):
            tenth = value * 10 // max(1, maximum)  # a line per node every tenth of its work
            if shown.get(node) != tenth:
                shown[node] = tenth
                print(f"  [{time.monotonic() - started:6.1f} s] {node}: {value}/{maximum}", flush=True)

        print(f"queued {width}x{height} px, '{text}', with {loader['class_type']} -> TiledDiffusion "
              f"({diffusion_tile} px tiles) -> KSampler -> TiledVAEDecode")
        entry = server.wait(answer["prompt_id"], on_progress=report, client_id=client_id)
        if entry["status"]["status_str"] != "success":
            print("the workflow failed:", entry["status"].get("messages"))
            return 1
        result = out_dir / "expanse_main.png"
        result.write_bytes(server.images(entry)[0])
        print(f"done in {time.monotonic() - started:.1f} s: wrote {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
