"""ChessTileRedraw benchmark: against a baseline that redraws the way Ultimate SD Upscale does.

Both redraw the same tiles of a 2x upscale with the same steps, denoise, padding and sampler:
- baseline (Ultimate SD Upscale's loop): per tile, crop the padded region from the picture,
  VAE-encode it, sample, VAE-decode it, draw a feathered full-canvas mask and composite the whole
  canvas with it;
- ours: ChessTileRedraw (upscale once, encode once with the tiled VAE, batched chess passes in
  latent space pasted through region-sized masks, decode once).

Reported: wall time, the share of it outside the UNet's forward calls, and the UNet's share.
The model is the pack's demo model (the CPU run); `--sd15` uses the real SD1.5 UNet architecture
(random weights) with the demo VAE and text encoder, for a GPU.

    python bench/chess_bench.py                       # 2048 and 4096 px results, demo model
    python bench/chess_bench.py --results 2048 --sd15
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402

APPROACHES = ["baseline", "ours"]


def baseline(nodes, model, positive, negative, vae, picture, *, tile, padding, feather, steps, cfg, denoise, seed):
    """Ultimate SD Upscale's redraw loop (its linear order), written plainly."""
    import torch

    from expanse.core import chess_redraw as cr
    from expanse.core import latent_resample as lr

    big = lr.resample(picture.movedim(-1, 1), picture.shape[1] * 2, picture.shape[2] * 2, "lanczos").clamp(0, 1)
    result = big.movedim(1, -1).contiguous()
    height, width = result.shape[1:3]
    for row in cr.tile_grid(height, width, tile, tile):
        for box in row:
            region = box.grown(padding, height, width)
            crop = result[:, region.y0:region.y1, region.x0:region.x1]
            latent = nodes["VAEEncode"]().encode(vae, crop)[0]
            sampled = nodes["KSampler"]().sample(model, seed, steps, cfg, "euler", "normal", positive, negative,
                                                 latent, denoise=denoise)[0]
            decoded = nodes["VAEDecode"]().decode(vae, sampled)[0]
            # The full-canvas mask and composite, once per tile.
            mask = torch.zeros(1, height, width, 1)
            mask[:, box.y0:box.y1, box.x0:box.x1] = 1
            if feather:
                blur = torch.nn.functional.avg_pool2d(mask.movedim(-1, 1), 2 * feather + 1, 1, feather,
                                                      count_include_pad=False)
                mask = torch.maximum(mask, blur.movedim(1, -1))
            pasted = result.clone()
            pasted[:, region.y0:region.y1, region.x0:region.x1] = decoded
            result = result * (1 - mask) + pasted * mask
    return result


def worker(approach: str, result_px: int, sd15: bool) -> None:
    comfy_nodes = common.start_host()
    import torch

    from expanse.nodes.demo_loader import WEIGHTS_DIR, load_demo

    torch.set_grad_enabled(False)
    model, clip, vae = load_demo(WEIGHTS_DIR / "expanse-demo.safetensors")
    context_width = 128
    if sd15:
        model = common.sd15_model(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        context_width = 768
    meter = common.ModelMeter(model)
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    g = torch.Generator().manual_seed(0)
    context = torch.randn(1, 77, context_width, generator=g)
    positive, negative = [[context, {}]], [[torch.zeros_like(context), {}]]
    picture = torch.rand(1, result_px // 2, result_px // 2, 3, generator=g)
    settings = dict(steps=8, cfg=5.0, denoise=0.35, seed=1)
    tile, padding, feather = 512, 64, 32
    nodes["KSampler"]().sample(model, 0, 1, 5.0, "euler", "normal", positive, negative,
                               {"samples": torch.zeros(1, 4, 8, 8)})  # load and warm up
    meter.reset()
    if approach == "baseline":
        seconds = common.timed(baseline, nodes, model, positive, negative, vae, picture, tile=tile,
                               padding=padding, feather=feather, **settings)
    else:
        seconds = common.timed(nodes["ChessTileRedraw"].execute, model, positive, negative, vae, image=picture,
                               upscale_by=2.0, tile_width=tile, tile_height=tile, padding=padding,
                               mask_feather=feather, tile_batch_size=4, redraw_order="chess", **settings)
    print(json.dumps({"status": "ok", "seconds": seconds, "model_seconds": meter.seconds, "calls": meter.calls}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, nargs="+", default=[2048, 4096], help="result sides in pixels")
    parser.add_argument("--sd15", action="store_true", help="the real SD1.5 UNet architecture (for a GPU)")
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
                row.update({"seconds": round(res["seconds"], 1), "model_calls": res["calls"],
                            "outside_model": f"{100 * (1 - res['model_seconds'] / res['seconds']):.0f}%"})
                if runs["baseline"].get("status") == "ok":
                    row["speedup_vs_baseline"] = round(runs["baseline"]["seconds"] / res["seconds"], 2)
            rows.append(row)
    model = "SD1.5 UNet architecture (random weights)" if args.sd15 else "the demo model"
    common.write_results(
        args.name, rows, ["result", "approach", "seconds", "speedup_vs_baseline", "model_calls", "outside_model",
                          "status"],
        f"ChessTileRedraw against an Ultimate-SD-Upscale-style loop, 2x upscale, {model}",
        notes=["512 px tiles, 64 px padding, 32 px feather, 8 steps at denoise 0.35, euler, cfg 5; ours in chess "
               "order with 4 tiles per batch, the baseline in its own linear order (the same tiles)",
               "outside_model: share of the time spent outside the UNet's forward calls (VAE, pasting, "
               "compositing, sampler)"])


if __name__ == "__main__":
    main()
