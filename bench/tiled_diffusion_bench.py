"""TiledDiffusion benchmark: one KSampler step (cond and uncond) on the real SD1.5 UNet architecture
with seeded random weights (speed and memory do not depend on weight values), untiled against each
tiling method, with the model evaluations counted.

Every (canvas, method) runs in a fresh process, so peak RSS is that run's own. Reported per run:
- tiles and the evaluated latent area over the canvas area (the ideal cost of overlapping tiles);
- wall time, and time against the untiled step where it ran and against the ideal: the tile count
  times the time of one tile-sized step measured in the same process (cost beyond the model);
- the share of time spent outside model calls; peak RSS (and device memory on a GPU).

    python bench/tiled_diffusion_bench.py                    # 1024 and 2048 px, 512 px tiles, 64 px overlap
    python bench/tiled_diffusion_bench.py --canvases 512 1024 --tile 256 --overlap 32 --untiled-max 1024
"""
from __future__ import annotations

import argparse
import json
import pathlib

import common  # bench/common.py (a script's own folder comes first on sys.path)

METHODS = ["untiled", "multidiffusion", "mixture_of_diffusers", "shifted"]


def worker(method: str, canvas: int, tile: int, overlap: int, batch: int, limit_gib: float) -> None:
    watchdog = common.PeakRSS(int(limit_gib * 2 ** 30))
    comfy_nodes = common.start_host()
    import torch

    torch.set_grad_enabled(False)
    cuda = torch.cuda.is_available()
    model = common.sd15_model(torch.device("cuda" if cuda else "cpu"))
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    meter = common.ModelMeter(model)
    g = torch.Generator().manual_seed(0)
    context = torch.randn(1, 77, 768, generator=g)
    positive, negative = [[context, {}]], [[torch.zeros_like(context), {}]]

    def step(m, px: int) -> float:
        latent = {"samples": torch.zeros(1, 4, px // 8, px // 8)}
        return common.timed(nodes["KSampler"]().sample, m, 0, 1, 5.0, "euler", "normal", positive, negative,
                            latent, denoise=1.0)

    step(model, 64)  # loads the model, warms the kernels
    one_tile = min(step(model, min(tile, canvas)) for _ in range(2))
    sampled = model if method == "untiled" else \
        nodes["ExpanseTiledDiffusion"].execute(model, method, tile, tile, overlap, batch, 0).result[0]
    meter.reset()
    rss_before = watchdog.peak_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = step(sampled, canvas)
    result = {"status": "ok", "seconds": seconds, "model_seconds": meter.seconds, "model_calls": meter.calls,
              # cond and uncond of one latent: two samples per position
              "evaluated_area": meter.area / 2 / (canvas // 8) ** 2, "one_tile_seconds": one_tile,
              "peak_rss_gib": watchdog.peak_bytes() / 2 ** 30, "rss_before_gib": rss_before / 2 ** 30}
    if cuda:
        result["device_peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canvases", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--tile-batch", type=int, default=4)
    parser.add_argument("--untiled-max", type=int, default=2048, help="largest canvas to also run untiled")
    parser.add_argument("--memory-limit-gib", type=float, default=20.0)
    parser.add_argument("--name", default="tiled_diffusion")
    parser.add_argument("--worker", nargs=5, metavar=("METHOD", "CANVAS", "TILE", "OVERLAP", "BATCH"))
    args = parser.parse_args()
    if args.worker:
        method, canvas, tile, overlap, batch = args.worker
        worker(method, int(canvas), int(tile), int(overlap), int(batch), args.memory_limit_gib)
        return

    from expanse_harness.host import register_pack

    register_pack()  # the pack as `expanse`; no host needed for the geometry
    from expanse.core import tiled_diffusion as td

    rows = []
    script = pathlib.Path(__file__).resolve()
    for canvas in args.canvases:
        untiled_seconds = None
        for method in METHODS:
            if method == "untiled" and canvas > args.untiled_max:
                rows.append({"canvas": f"{canvas}x{canvas}", "method": method, "status": "not run (--untiled-max)"})
                continue
            res = common.run_worker(script, [method, str(canvas), str(args.tile), str(args.overlap),
                                             str(args.tile_batch), "--memory-limit-gib", str(args.memory_limit_gib)],
                                    timeout=7200)
            print(f"{canvas} px {method}: {res}", flush=True)
            row = {"canvas": f"{canvas}x{canvas}", "method": method}
            if res["status"] != "ok":
                rows.append(row | {"status": res["status"]})
                continue
            lat, t = canvas // 8, args.tile // 8
            boxes = [] if method == "untiled" else td.layout(method, lat, lat, t, t, args.overlap // 8).boxes
            if method == "untiled":
                untiled_seconds = res["seconds"]
            ideal = len(boxes) * res["one_tile_seconds"] if boxes else None
            row.update({
                "tiles": len(boxes) or 1, "model_calls": res["model_calls"],
                "area_evaluated": round(res["evaluated_area"], 2),
                "seconds": round(res["seconds"], 1),
                "vs_untiled": round(res["seconds"] / untiled_seconds, 2) if untiled_seconds else "-",
                "vs_ideal": round(res["seconds"] / ideal, 2) if ideal else "-",
                "outside_model": f"{100 * (1 - res['model_seconds'] / res['seconds']):.1f}%",
                "peak_rss_gib": round(res["peak_rss_gib"], 2), "status": "ok",
            })
            if "device_peak_gib" in res:
                row["device_peak_gib"] = round(res["device_peak_gib"], 2)
            rows.append(row)
    columns = ["canvas", "method", "tiles", "model_calls", "area_evaluated", "seconds", "vs_untiled", "vs_ideal",
               "outside_model", "peak_rss_gib", "device_peak_gib", "status"]
    common.write_results(
        args.name, rows, columns,
        f"TiledDiffusion, SD1.5 UNet architecture (random weights), one KSampler step, {args.tile} px tiles",
        notes=[f"overlap {args.overlap} px (multidiffusion, mixture_of_diffusers); tile batch {args.tile_batch}; "
               "cfg 5, so every evaluation holds cond and uncond",
               "area_evaluated: latent area the model evaluated over the canvas area (the ideal cost of tiling)",
               "vs_ideal: time over (tiles x one tile-sized step measured in the same process)",
               "outside_model: share of the step spent outside the UNet's forward (cropping, conds, fusion, "
               "sampler); each run in a fresh process, peak RSS its own"])


if __name__ == "__main__":
    main()
