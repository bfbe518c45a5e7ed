"""ChessTileRedraw benchmark: against a baseline that redraws the way Ultimate SD Upscale does.

Both redraw the same tiles of a 2x upscale with the same steps, denoise, padding and sampler:
- baseline (Ultimate SD Upscale's loop): per tile, crop the padded region from the picture,
  VAE-encode it, sample, VAE-decode it, draw a feathered full-canvas mask and composite the whole
  canvas with it;
- ours: ChessTileRedraw (upscale once, encode once with the tiled VAE, batched chess passes in
  latent space pasted through region-sized masks, decode once).

Reported: wall time split into the UNet's forward calls, VAE runs, and the rest (the overhead).
The model is the pack's demo model (the CPU run); `--sd15` uses the real SD1.5 UNet (half precision
on a GPU) and VAE architectures with random weights, for a GPU. On a GPU the results go to
bench/results/<name>_gpu.*.

    python bench/chess_bench.py                       # 2048 and 4096 px results, demo model
    python bench/chess_bench.py --results 2048 --sd15
"""
from __future__ import annotations

import argparse
import json
import pathlib

import common  # bench/common.py (a script's own folder comes first on sys.path)

APPROACHES = ["baseline", "ours"]


# Ultimate SD Upscale's default mask blur (px); PIL's Gaussian blur costs the same at any radius.
USDU_MASK_BLUR = 8


def baseline(nodes, model, positive, negative, vae, picture, *, tile, padding, feather, steps, cfg, denoise, seed):
    """Ultimate SD Upscale's redraw loop (its linear order) with its own per-tile operations: the
    picture lives as an 8-bit PIL image between tiles; each tile draws a full-canvas mask, finds
    its crop region by scanning it, blurs it, then crops, encodes, samples and decodes its region,
    pastes the result onto a full-canvas RGBA layer, puts the mask in as alpha, and composites the
    whole canvas. Every tile samples the same context region as ours (the tile and `padding` around
    it, moved inside the canvas at its edges). `feather` is ours alone (the baseline blurs by
    USDU_MASK_BLUR)."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw, ImageFilter

    from expanse.core import chess_redraw as cr
    from expanse.core import latent_resample as lr
    from expanse.core.tiling import Box, grid_rows

    def to_pil(t):
        return Image.fromarray((t[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy())

    def to_tensor(img):
        return torch.from_numpy(np.asarray(img).astype(np.float32) / 255).unsqueeze(0)

    big = lr.resample(picture.movedim(-1, 1), picture.shape[1] * 2, picture.shape[2] * 2, "lanczos").clamp(0, 1)
    canvas = to_pil(big.movedim(1, -1))
    width, height = canvas.size
    for row in grid_rows(height, width, tile, tile):
        for box in row:
            mask = Image.new("L", (width, height), 0)
            ImageDraw.Draw(mask).rectangle((box.x0, box.y0, box.x1 - 1, box.y1 - 1), fill=255)
            marked = np.asarray(mask) > 0
            ys, xs = np.nonzero(marked.any(axis=1))[0], np.nonzero(marked.any(axis=0))[0]
            marked_box = Box(int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
            # One region size for every tile, as USDU's default uniform tile mode and ours have it.
            region = cr.region_for(marked_box, tile + 2 * padding, tile + 2 * padding, height, width)
            mask = mask.filter(ImageFilter.GaussianBlur(USDU_MASK_BLUR))
            crop = to_tensor(canvas.crop((region.x0, region.y0, region.x1, region.y1)))
            latent = nodes["VAEEncode"]().encode(vae, crop)[0]
            sampled = nodes["KSampler"]().sample(model, seed, steps, cfg, "euler", "normal", positive, negative,
                                                 latent, denoise=denoise)[0]
            redrawn = to_pil(nodes["VAEDecode"]().decode(vae, sampled)[0])
            layer = Image.new("RGBA", (width, height))
            layer.paste(redrawn, (region.x0, region.y0))
            with_alpha = layer.copy()
            with_alpha.putalpha(mask)
            layer.paste(with_alpha, layer)
            composite = canvas.convert("RGBA")
            composite.alpha_composite(layer)
            canvas = composite.convert("RGB")
    return to_tensor(canvas)


def worker(approach: str, result_px: int, sd15: bool) -> None:
    comfy_nodes = common.start_host()
    import torch

    from expanse.runtime.demo_model import WEIGHTS_DIR, load_demo

    torch.set_grad_enabled(False)
    model, clip, vae = load_demo(WEIGHTS_DIR / "expanse-demo.safetensors")
    context_width = 128
    if sd15:  # SD1.5's UNet and VAE architectures: their costs, not the demo model's
        from expanse_harness import tiny_models

        model = common.sd15_model(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        vae = tiny_models.full_size_vae(latent_channels=4, seed=0, device=None)
        context_width = 768
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    unet_meter, vae_meter = common.ModelMeter(model), common.VAEMeter()
    g = torch.Generator().manual_seed(0)
    context = torch.randn(1, 77, context_width, generator=g)
    positive, negative = [[context, {}]], [[torch.zeros_like(context), {}]]
    picture = torch.rand(1, result_px // 2, result_px // 2, 3, generator=g)
    settings = dict(steps=8, cfg=5.0, denoise=0.35, seed=1)
    tile, padding, feather = 512, 64, 32
    nodes["KSampler"]().sample(model, 0, 1, 5.0, "euler", "normal", positive, negative,
                               {"samples": torch.zeros(1, 4, 8, 8)})  # load and warm up
    unet_meter.reset()
    vae_meter.reset()
    if approach == "baseline":
        seconds = common.timed(baseline, nodes, model, positive, negative, vae, picture, tile=tile,
                               padding=padding, feather=feather, **settings)
    else:
        seconds = common.timed(nodes["ExpanseChessTileRedraw"].execute, model, positive, negative, vae, image=picture,
                               upscale_by=2.0, tile_width=tile, tile_height=tile, padding=padding,
                               mask_feather=feather, tile_batch_size=4, redraw_order="chess", **settings)
    print(json.dumps({"status": "ok", "seconds": seconds, "unet_seconds": unet_meter.seconds,
                      "vae_seconds": vae_meter.seconds, "calls": unet_meter.calls}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, nargs="+", default=[2048, 4096], help="result sides in pixels")
    parser.add_argument("--sd15", action="store_true", help="the real SD1.5 UNet and VAE architectures (for a GPU)")
    parser.add_argument("--name", default="chess_redraw")
    parser.add_argument("--worker", nargs=3, metavar=("APPROACH", "RESULT", "SD15"))
    args = parser.parse_args()
    if args.worker:
        approach, result_px, sd15 = args.worker
        worker(approach, int(result_px), sd15 == "1")
        return

    rows = []
    script = pathlib.Path(__file__).resolve()
    for result_px in args.results:
        runs = {}
        for approach in APPROACHES:
            res = common.run_worker(script, [approach, str(result_px), "1" if args.sd15 else "0"], timeout=7200)
            print(f"{result_px} px {approach}: {res}", flush=True)
            runs[approach] = res
        for approach, res in runs.items():
            row = {"result": f"{result_px}x{result_px}", "approach": approach, "status": res["status"]}
            if res["status"] == "ok":
                other = res["seconds"] - res["unet_seconds"] - res["vae_seconds"]
                row.update({"seconds": round(res["seconds"], 1), "unet_s": round(res["unet_seconds"], 1),
                            "vae_s": round(res["vae_seconds"], 1), "other_s": round(other, 1),
                            "outside_model": f"{100 * other / res['seconds']:.1f}%",
                            "other_s_per_mp": round(other / (result_px ** 2 / 1e6), 2),
                            "model_calls": res["calls"]})
                if runs["baseline"].get("status") == "ok":
                    row["speedup_vs_baseline"] = round(runs["baseline"]["seconds"] / res["seconds"], 2)
            rows.append(row)
            print(row, flush=True)
    model = "SD1.5 UNet and VAE architectures (random weights)" if args.sd15 else "the demo model"
    common.write_results(
        args.name, rows, ["result", "approach", "seconds", "speedup_vs_baseline", "unet_s", "vae_s", "other_s",
                          "outside_model", "other_s_per_mp", "model_calls", "status"],
        f"ChessTileRedraw against an Ultimate-SD-Upscale-style loop, 2x upscale, {model}",
        notes=["512 px tiles, 64 px padding, 32 px feather, 8 steps at denoise 0.35, euler, cfg 5; ours in chess "
               "order with 4 tiles per batch and vae_mode auto, "
               "the baseline in its own linear order (the same tiles) with Ultimate SD Upscale's PIL "
               "full-canvas mask, blur (8 px) and composite per tile",
               "unet_s: the UNet's forward calls; vae_s: VAE encodes and decodes (the baseline's per tile, "
               "ours once each); other_s: everything else (pasting, masks, compositing, sampler set-up); "
               "outside_model: other_s / seconds; other_s_per_mp: other_s per megapixel of result "
               "(flat when the overhead grows linearly with the area)"])


if __name__ == "__main__":
    main()
