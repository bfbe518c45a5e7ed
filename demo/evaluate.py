"""Measures the demo model through ComfyUI's own nodes and writes what the model card reports.

    .venv/bin/python demo/evaluate.py [--weights demo/weights/expanse-demo.safetensors]

- VAE reconstruction PSNR on held-out scenes at 256x256 (VAEEncode -> VAEDecode);
- caption adherence: 100 held-out captions sampled at 256x256 with KSampler, each checked from
  the picture by demo.scenes.check_adherence (sky colour, dominant colours, stripe orientation);
- a contact sheet of samples, demo/samples.png, and a 2048x1024 panorama through TiledDiffusion,
  demo/panorama.jpg;
- demo/weights/evaluation.json with the numbers, and the reference statistics of one fixed-seed
  sample that the tests compare against (regenerate whenever the weights change).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The fixed-seed sample the tests reproduce: prompt, seed and sampler settings.
REFERENCE = {"prompt": "a sunset sky with a sun over mountains and a lake", "negative": "", "seed": 7,
             "steps": 20, "cfg": 5.0, "sampler": "euler", "scheduler": "normal", "size": 256}


def sample(nodes, model, clip, vae, prompt, seed, *, negative="", steps=20, cfg=5.0, sampler="euler",
           scheduler="normal", width=256, height=256):
    """One picture through CLIPTextEncode, EmptyLatentImage, KSampler and VAEDecode; (H, W, 3) numpy."""
    positive = nodes["CLIPTextEncode"]().encode(clip, prompt)[0]
    negative_cond = nodes["CLIPTextEncode"]().encode(clip, negative)[0]
    latent = nodes["EmptyLatentImage"]().generate(width, height, 1)[0]
    out = nodes["KSampler"]().sample(model, seed, steps, cfg, sampler, scheduler, positive, negative_cond, latent)[0]
    return nodes["VAEDecode"]().decode(vae, out)[0][0].numpy()


# The panorama drawn through TiledDiffusion for the README and the example thumbnails.
PANORAMA = {"prompt": "a sunset sky with a sun over mountains and a lake", "seed": 11, "width": 2048,
            "height": 1024, "tile": 256, "overlap": 64, "method": "mixture_of_diffusers"}


def panorama(nodes, model, clip, vae, prompt, seed):
    """A canvas far wider and taller than the model was trained at: TiledDiffusion over 256 px tiles,
    then the tiled VAE decode; (H, W, 3) numpy."""
    tiled = nodes["ExpanseTiledDiffusion"].execute(model, PANORAMA["method"], PANORAMA["tile"], PANORAMA["tile"],
                                            PANORAMA["overlap"], 8, seed).result[0]
    positive = nodes["CLIPTextEncode"]().encode(clip, prompt)[0]
    negative = nodes["CLIPTextEncode"]().encode(clip, "")[0]
    latent = nodes["EmptyLatentImage"]().generate(PANORAMA["width"], PANORAMA["height"], 1)[0]
    out = nodes["KSampler"]().sample(tiled, seed, 20, 5.0, "euler", "normal", positive, negative, latent)[0]
    return nodes["ExpanseTiledVAEDecode"].execute(samples=out, vae=vae, tile_size=512).result[0][0].numpy()


def image_stats(image: np.ndarray) -> dict:
    """The summary the regression test compares: per-channel mean and std, and the mean of each
    quadrant (a composition check)."""
    h, w = image.shape[:2]
    quads = [image[:h // 2, :w // 2], image[:h // 2, w // 2:], image[h // 2:, :w // 2], image[h // 2:, w // 2:]]
    return {"mean": image.mean(axis=(0, 1)).round(5).tolist(), "std": image.std(axis=(0, 1)).round(5).tolist(),
            "quadrant_means": [float(np.round(q.mean(), 5)) for q in quads]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=pathlib.Path, default=ROOT / "demo" / "weights" / "expanse-demo.safetensors")
    p.add_argument("--captions", type=int, default=100)
    p.add_argument("--psnr-images", type=int, default=64)
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "demo" / "weights" / "evaluation.json")
    p.add_argument("--sheet", type=pathlib.Path, default=ROOT / "demo" / "samples.png")
    p.add_argument("--panorama", default=str(ROOT / "demo" / "panorama.jpg"),
                   help="where to write the 2048x1024 TiledDiffusion panorama ('' to skip)")
    args = p.parse_args()

    from expanse_harness import host

    nodes = host.start_in_process().NODE_CLASS_MAPPINGS  # the pack imported as `expanse`, loaded once
    torch.set_grad_enabled(False)
    from expanse.demo import scenes
    from expanse.runtime.demo_model import load_demo

    model, clip, vae = load_demo(args.weights)
    started = time.monotonic()

    rng = np.random.default_rng([2026, 11, 23])  # a stream training never draws from
    psnrs, psnrs_by_kind = [], {}
    for _ in range(args.psnr_images):
        image, caption = scenes.sample(rng, 256, 256)
        pixels = torch.from_numpy(image).unsqueeze(0)
        recon = nodes["VAEDecode"]().decode(vae, nodes["VAEEncode"]().encode(vae, pixels)[0])[0]
        mse = torch.mean((recon - pixels) ** 2).item()
        psnrs.append(10 * math.log10(1.0 / max(mse, 1e-12)))
        psnrs_by_kind.setdefault(scenes.scene_from_caption(caption).kind, []).append(psnrs[-1])
    psnr_by_kind = {kind: f"{np.mean(values):.2f} dB over {len(values)}" for kind, values in psnrs_by_kind.items()}
    print(f"VAE PSNR at 256x256 over {len(psnrs)} held-out scenes: {np.mean(psnrs):.2f} dB; by kind {psnr_by_kind}",
          flush=True)

    captions = scenes.held_out_captions(args.captions, seed=2026)
    passed, by_kind, sheet = 0, {}, []
    for i, caption in enumerate(captions):
        picture = sample(nodes, model, clip, vae, caption, seed=1000 + i)
        ok = scenes.check_adherence(caption, picture)
        passed += ok
        kind = scenes.scene_from_caption(caption).kind
        hits, count = by_kind.get(kind, (0, 0))
        by_kind[kind] = (hits + ok, count + 1)
        if len(sheet) < 12:
            sheet.append((picture, caption))
    adherence = passed / len(captions)
    print(f"caption adherence: {passed}/{len(captions)} = {adherence:.0%}; by kind: {by_kind}", flush=True)

    reference_image = sample(nodes, model, clip, vae, REFERENCE["prompt"], REFERENCE["seed"],
                             negative=REFERENCE["negative"], steps=REFERENCE["steps"], cfg=REFERENCE["cfg"],
                             sampler=REFERENCE["sampler"], scheduler=REFERENCE["scheduler"],
                             width=REFERENCE["size"], height=REFERENCE["size"])
    result = {
        "weights": args.weights.name,
        "vae_psnr_db_256": round(float(np.mean(psnrs)), 2),
        "vae_psnr_images": len(psnrs),
        "vae_psnr_by_kind": psnr_by_kind,
        "caption_adherence": round(adherence, 3),
        "caption_adherence_by_kind": {k: f"{h}/{n}" for k, (h, n) in by_kind.items()},
        "captions": len(captions),
        "sampler": "KSampler euler/normal, 20 steps, cfg 5, 256x256, seeds 1000+i",
        "reference_sample": {**REFERENCE, "stats": image_stats(reference_image)},
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))

    from PIL import Image, ImageDraw

    cell = 256
    board = Image.new("RGB", (cell * 4, (cell + 28) * 3), "white")
    draw = ImageDraw.Draw(board)
    for k, (picture, caption) in enumerate(sheet):
        x, y = (k % 4) * cell, (k // 4) * (cell + 28)
        board.paste(Image.fromarray((picture * 255).clip(0, 255).astype(np.uint8)), (x, y))
        draw.text((x + 3, y + cell + 2), caption[:44], fill="black")
        draw.text((x + 3, y + cell + 14), caption[44:88], fill="black")
    board.save(args.sheet)
    print(f"wrote {args.sheet}")

    if args.panorama:
        started = time.monotonic()
        picture = panorama(nodes, model, clip, vae, PANORAMA["prompt"], PANORAMA["seed"])
        Image.fromarray((picture * 255).clip(0, 255).astype(np.uint8)).save(pathlib.Path(args.panorama), quality=90)
        print(f"wrote {args.panorama} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
