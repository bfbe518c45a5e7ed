"""ProgressiveGrowSampler benchmark: the cost of a large picture drawn three ways, on the real SD1.5
UNet architecture with seeded random weights (speed does not depend on weight values):

- ksampler:    plain KSampler txt2img at the final size;
- hires_fix:   the usual two passes, KSampler at a quarter of the side, LatentUpscaleBy 4x, KSampler
               at denoise 0.5 with the same steps;
- progressive: ProgressiveGrowSampler with its defaults (4 geometric stages from 0.25, refine
               denoise 0.55 -> 0.35, refine_steps).

Model evaluations are counted through ComfyUI's DIFFUSION_MODEL wrapper and weighted by latent
area (relative to one evaluation of the final canvas): a count that does not depend on the machine.
`--count-only` skips the UNet's arithmetic (the sampler runs, the model returns zeros), so the
count for a 2048 px picture takes seconds; without it the wall time is measured too.

    python bench/progressive_bench.py                                    # counts at 2048 px, 20 steps
    python bench/progressive_bench.py --final 1024 --steps 4 --refine-steps 1 --wall --name progressive_wall
"""
from __future__ import annotations

import argparse
import json
import pathlib

import common  # bench/common.py (a script's own folder comes first on sys.path)

APPROACHES = ["ksampler", "hires_fix", "progressive"]


def worker(approach: str, final: int, steps: int, refine_steps: int, count_only: bool) -> None:
    comfy_nodes = common.start_host()
    import torch

    torch.set_grad_enabled(False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if count_only:
        from expanse_harness import tiny_models  # the schedule, not the arithmetic, decides the count: a tiny model suffices

        model = tiny_models.tiny_unet()
        context = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(0))
    else:
        model = common.sd15_model(device)
        context = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0))
    meter = common.ModelMeter(model, skip_model=count_only)
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    positive, negative = [[context, {}]], [[torch.zeros_like(context), {}]]
    ksampler = nodes["KSampler"]().sample

    def empty(px):
        return {"samples": torch.zeros(1, 4, px // 8, px // 8)}

    def run():
        if approach == "ksampler":
            ksampler(model, 0, steps, 5.0, "euler", "normal", positive, negative, empty(final))
        elif approach == "hires_fix":
            small = ksampler(model, 0, steps, 5.0, "euler", "normal", positive, negative, empty(final // 4))[0]
            big = nodes["LatentUpscaleBy"]().upscale(small, "bislerp", 4.0)[0]
            ksampler(model, 0, steps, 5.0, "euler", "normal", positive, negative, big, denoise=0.5)
        else:
            nodes["ExpanseProgressiveGrowSampler"].execute(model, positive, negative, empty(final), 0, steps, 5.0, "euler",
                                                    "normal", refine_steps=refine_steps)

    ksampler(model, 0, 1, 5.0, "euler", "normal", positive, negative, empty(64))  # load and warm up
    meter.reset()
    seconds = common.timed(run)
    canvas = (final // 8) ** 2 * 2  # cond and uncond: two samples per evaluation
    print(json.dumps({"status": "ok", "seconds": seconds, "model_seconds": meter.seconds, "calls": meter.calls,
                      "area_weighted": meter.area / canvas}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--final", type=int, default=2048, help="the picture's side in pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--refine-steps", type=int, default=5)
    parser.add_argument("--wall", action="store_true", help="run the SD1.5 UNet and measure wall time too")
    parser.add_argument("--name", default="progressive")
    parser.add_argument("--worker", nargs=5, metavar=("APPROACH", "FINAL", "STEPS", "REFINE", "COUNT_ONLY"))
    args = parser.parse_args()
    if args.worker:
        approach, final, steps, refine, count_only = args.worker
        worker(approach, int(final), int(steps), int(refine), count_only == "1")
        return

    rows = []
    script = pathlib.Path(__file__).resolve()
    for approach in APPROACHES:
        res = common.run_worker(script, [approach, str(args.final), str(args.steps), str(args.refine_steps),
                                         "0" if args.wall else "1"], timeout=7200)
        print(f"{approach}: {res}", flush=True)
        rows.append({"approach": approach, **res})
    base = rows[0]
    for row in rows:
        if row.get("status") != "ok" or base.get("status") != "ok":
            continue
        row["cost_vs_ksampler"] = round(row["area_weighted"] / base["area_weighted"], 3)
        row["area_weighted"] = round(row["area_weighted"], 2)
        if args.wall:
            row["time_vs_ksampler"] = round(row["seconds"] / base["seconds"], 3)
            row["seconds"] = round(row["seconds"], 1)
    columns = ["approach", "calls", "area_weighted", "cost_vs_ksampler"]
    columns += ["seconds", "time_vs_ksampler"] if args.wall else []
    mode = "SD1.5 UNet architecture (random weights)" if args.wall else "evaluation count (the UNet's arithmetic skipped)"
    common.write_results(
        args.name, rows, columns + ["status"],
        f"Progressive growing to {args.final}x{args.final}, {mode}",
        notes=[f"{args.steps} steps (hires fix: both passes), progressive refine_steps {args.refine_steps}, "
               "euler/normal, cfg 5 (cond and uncond in each evaluation)",
               "area_weighted: evaluations weighted by latent area, in units of one evaluation of the final canvas"])


if __name__ == "__main__":
    main()
