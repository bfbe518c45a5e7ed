"""The main job: a real workflow through a real ComfyUI server, writing an image.

It starts ComfyUI with the pack, uploads a picture, and queues
    VAELoader -> LoadImage -> TiledVAEEncode -> TiledVAEDecode -> SaveImage
through the HTTP API, printing progress, then writes the result to output/expanse_main.png.

    EXPANSE_VAE=/path/to/vae.safetensors   your own VAE (an SD1.x/SDXL/SD3/Flux VAE file); without it,
                                           a VAE of the SD1.5 architecture with seeded random weights
                                           is generated (it proves the pipeline, but draws noise)
    EXPANSE_SIZE=1024                      side of the picture, in pixels
    EXPANSE_TILE=512                       tile size for both tiled nodes
"""
from __future__ import annotations

import math
import os
import pathlib
import sys
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from comfy_server import ROOT, ComfyServer, import_host  # noqa: E402

RANDOM_VAE = ROOT / ".cache" / "models" / "vae" / "expanse-random-sd15-vae.safetensors"


def ensure_vae() -> pathlib.Path:
    if os.environ.get("EXPANSE_VAE"):
        path = pathlib.Path(os.environ["EXPANSE_VAE"]).expanduser().resolve()
        if not path.is_file():
            sys.exit(f"EXPANSE_VAE={path} is not a file")
        return path
    if not RANDOM_VAE.exists():
        print("generating a random-weight SD1.5-architecture VAE (no weights can be downloaded here) ...")
        import_host(cpu=True)
        sys.path.insert(0, str(ROOT / "tests"))
        import safetensors.torch
        import torch

        import tiny_models

        sd = {k: v.to(torch.float16).contiguous() for k, v in tiny_models.full_size_vae_state_dict().items()}
        RANDOM_VAE.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(sd, str(RANDOM_VAE))
    return RANDOM_VAE


def draw_picture(path: pathlib.Path, size: int) -> None:
    """A landscape with smooth gradients and hard edges: what seams and colour shifts show on."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for y in range(size):
        t = y / size
        draw.line([(0, y), (size, y)], fill=(int(40 + 200 * t), int(90 + 90 * t), int(200 - 120 * t)))
    draw.ellipse([size * 0.62, size * 0.15, size * 0.82, size * 0.35], fill=(255, 214, 120))
    ridge = [(0, size)] + [(x, size * (0.62 + 0.08 * math.sin(x / size * 9) + 0.04 * math.sin(x / size * 23)))
                           for x in range(0, size + 1, 8)] + [(size, size)]
    draw.polygon(ridge, fill=(46, 62, 54))
    img.save(path)


def main() -> int:
    size = int(os.environ.get("EXPANSE_SIZE", "1024"))
    tile = int(os.environ.get("EXPANSE_TILE", "512"))
    vae_path = ensure_vae()
    out_dir = ROOT / "output"
    out_dir.mkdir(exist_ok=True)
    with ComfyServer(workdir=ROOT / ".cache" / "main-job", model_dirs={"vae": vae_path.parent}) as server:
        print(f"ComfyUI is up at {server.url} (log: {server.log_path})")
        picture = server.workdir / "expanse_input.png"
        draw_picture(picture, size)
        name = server.upload_image(picture)
        prompt = {
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": vae_path.name}},
            "picture": {"class_type": "LoadImage", "inputs": {"image": name}},
            "encode": {"class_type": "TiledVAEEncode",
                       "inputs": {"pixels": ["picture", 0], "vae": ["vae", 0], "tile_size": tile, "mode": "exact",
                                  "padding": 64}},
            "decode": {"class_type": "TiledVAEDecode",
                       "inputs": {"samples": ["encode", 0], "vae": ["vae", 0], "tile_size": tile, "mode": "exact",
                                  "padding": 96}},
            "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "expanse_main"}},
        }
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

        print(f"queued {size}x{size} px through TiledVAEEncode -> TiledVAEDecode ({tile} px tiles)")
        entry = server.wait(answer["prompt_id"], on_progress=report, client_id=client_id)
        if entry["status"]["status_str"] != "success":
            print("the workflow failed:", entry["status"].get("messages"))
            return 1
        images = server.images(entry)
        result = out_dir / "expanse_main.png"
        result.write_bytes(images[0])
        print(f"done in {time.monotonic() - started:.1f} s: wrote {result}")
        if vae_path == RANDOM_VAE:
            print("(random-weight VAE: the picture is noise by design; set EXPANSE_VAE to a real VAE file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
