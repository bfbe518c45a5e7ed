"""Tiled VAE statistics for canvases beyond RAM: sampled mode (statistics pooled over a spread
sample of full-resolution crops) and fast mode (statistics from a shrunken copy) against exact mode,
on a 2048x2048 px scene: PSNR of the decoded picture (and of the encoded latent), time, peak RSS.

VAEs: the demo model's (trained) and one of the SD1.5 architecture with seeded random weights.
The latents are real: the exact encode of a drawn landscape (demo/scenes.py), not white noise.

Every full run (exact, fast, sampled with the pack's SAMPLE) is a fresh process, so its peak RSS
is its own. The sweep over sample sizes (lattices of 1..5 crops per side) runs in one process and
separates the two sources of error: `stats` is the sampled statistics on exact mode's geometry
(every pixel sees the whole picture), `padding` exact mode's statistics on sampled mode's padded
tiles. On the SD1.5 VAE (minutes per decode on a CPU) the sweep's PSNR is measured on two 512 px
output tiles (a corner and the centre) instead of the whole picture.

    python bench/vae_stats_bench.py                       # demo and sd15, 2048 px
    python bench/vae_stats_bench.py --vaes demo --size 1024
    python bench/vae_stats_bench.py --vaes sd15 --which decode --only sampled --tmp DIR   # one row again
    python bench/vae_stats_bench.py --vaes sd15 --which decode --lattices 4 --tmp DIR    # one sweep row again
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import tempfile
import time

import common  # bench/common.py (a script's own folder comes first on sys.path)

SWEEP = [(1, 256), (2, 256), (3, 256), (4, 256)]
COLUMNS = ["vae", "which", "method", "sample", "psnr_db", "psnr_stats_only_db", "psnr_padding_only_db",
           "seconds", "peak_rss_gib", "status"]


def _setup(vae_name: str, limit_gib: float):
    watchdog = common.PeakRSS(int(limit_gib * 2 ** 30))
    common.start_host()
    import torch

    torch.set_grad_enabled(False)
    if vae_name == "demo":
        from expanse.runtime.demo_model import WEIGHTS_DIR, load_demo

        vae = load_demo(WEIGHTS_DIR / "expanse-demo.safetensors")[2]
    else:
        from expanse_harness import tiny_models

        vae = tiny_models.full_size_vae(latent_channels=4, seed=0, device=None)
    return watchdog, vae


def picture(size: int):
    """The scene every run encodes: a landscape with clouds, fields and a forest."""
    import numpy as np
    import torch

    from expanse.demo import scenes

    scene = scenes.sample_scene(np.random.default_rng(3))
    return torch.from_numpy(scenes.draw(scene, size, size, np.random.default_rng(4))).unsqueeze(0)


def worker(vae_name: str, which: str, method: str, size: int, tmp: str, limit_gib: float) -> None:
    """One full run in this process: exact writes the reference (and, encoding, the latent the
    decodes read); fast and sampled write their result."""
    import numpy as np

    watchdog, vae = _setup(vae_name, limit_gib)
    import torch

    from expanse.runtime import vae as rv

    base = pathlib.Path(tmp) / vae_name
    x = picture(size) if which == "encode" else {"samples": torch.from_numpy(np.load(f"{base}-latent.npy"))}
    rss_before = watchdog.peak_bytes()
    kw = {} if method == "exact" else dict(tile_size=rv.SAMPLED_TILE_PX, mode=method)
    start = time.perf_counter()
    if which == "encode":
        out = rv.encode("bench", vae, x, **kw)
    else:
        out = rv.decode("bench", vae, x["samples"], **kw)
    seconds = time.perf_counter() - start
    np.save(f"{base}-{which}-{method}.npy", out.float().numpy())
    if method == "exact" and which == "encode":
        np.save(f"{base}-latent.npy", out.float().numpy())
    print(json.dumps({"status": "ok", "seconds": seconds, "peak_rss_gib": watchdog.peak_bytes() / 2 ** 30,
                      "rss_before_gib": rss_before / 2 ** 30}))


def psnr(a, ref, which: str) -> float:
    """Decoded pictures: PSNR with peak 1 (RGB in 0..1). Latents: peak = the exact latent's range."""
    import numpy as np

    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    peak = 1.0 if which == "decode" else float(ref.max() - ref.min())
    mse = float(((a - ref) ** 2).mean())
    return round(10 * math.log10(peak ** 2 / mse), 2) if mse > 0 else float("inf")


def _pooled_label(context_side: int | None, refine_share: float | None = None) -> str:
    """What the sweep's method names carry where its context is pooled to context_side a side, or
    refined by a share other than the pack's."""
    notes = [f"context pooled to {context_side}x{context_side}"] if context_side else []
    if refine_share is not None:
        notes.append(f"refined by {refine_share:.0%}" if refine_share else "not refined")
    return f" ({', '.join(notes)})" if notes else ""


def sweep(vae_name: str, which: str, size: int, tmp: str, limit_gib: float, subset: bool,
          lattices: list[int] | None = None, context_side: int | None = None,
          refine_share: float | None = None) -> None:
    """Sampled statistics of every lattice in SWEEP, each measured on exact mode's geometry and on
    sampled mode's tiles, and exact statistics on sampled mode's tiles; one JSON row per line.
    lattices: only these (crops per side), guided, and no rows of exact statistics. context_side:
    the attention context pooled to at most this many tokens a side instead of CONTEXT_SIDE (at
    2048 px, 128 pools the latent 2x2 as CONTEXT_SIDE does at 4096 px). refine_share: instead of
    attention_context.REFINE_SHARE (0: the pooled context not refined)."""
    import numpy as np

    _, vae = _setup(vae_name, limit_gib)
    import torch

    from expanse.core import attention_context, vae_sampled_stats as vs
    from expanse.core.tiled_vae import frozen_tiles
    from expanse.core.vae_geometry import padding_in
    from expanse.core.vae_runner import Runner
    from expanse.core.tiling import Box
    from expanse.runtime import vae as rv

    base = pathlib.Path(tmp) / vae_name
    cpu, f32 = torch.device("cpu"), torch.float32
    if context_side:
        attention_context.CONTEXT_SIDE = context_side
    if refine_share is not None:
        attention_context.REFINE_SHARE = refine_share  # Refinement's default
    if which == "decode":
        program, x = rv.compile_program(vae, "decoder"), torch.from_numpy(np.load(f"{base}-latent.npy"))[0]
        padding, finish = 96, lambda t: vae.process_output(t.float())
    else:
        program = rv.compile_program(vae, "encoder")
        x = vae.process_input(picture(size).movedim(-1, 1))[0]
        padding, finish = 64, lambda t: t.float()
    reference = np.load(f"{base}-{which}-exact.npy")
    reference = reference.transpose(0, 3, 1, 2)[0] if which == "decode" else reference[0]
    height, width = x.shape[-2:]
    out_h, out_w = program.out_size(height, width)
    scale = program.output_scale
    tile_px = 512  # the sweep's tiles, on the pixel side
    tile_in = int(tile_px / program.pixel_scale)
    if subset:  # a corner tile and the centre tile: where the border and the inside are
        c = (height // tile_in // 2) * tile_in
        boxes = [Box(0, tile_in, 0, tile_in), Box(c, c + tile_in, c, c + tile_in)]
    else:
        boxes = [Box(0, height, 0, width)]
    pad_in = padding_in(program, padding)

    def padded_tiles(stats, context=None):
        """Sampled mode's tiles (tile_px with padding, frozen statistics, the attention context
        given) over the evaluated boxes."""
        out = torch.zeros(program.out_channels, out_h, out_w)

        def sink(_, box, y):
            out[:, box.y0:box.y1, box.x0:box.x1] = y
        frozen_tiles(program, x, 0, stats, sink, tile_px=tile_px, pad_in=pad_in, device=cpu, dtype=f32,
                     context=context, areas=boxes)
        return [out[:, a.y0:a.y1, a.x0:a.x1] for a in (b.scaled(scale) for b in boxes)]

    def exact_geometry(stats):
        """The statistics given, on exact mode's geometry (streamed, no padding): their error alone."""
        out = torch.zeros(program.out_channels, out_h, out_w)

        def sink(box, y):
            out[:, box.y0:box.y1, box.x0:box.x1] = y
        Runner(program, device=cpu, dtype=f32, park_device=cpu, tile_px=256, frozen=stats).run(x, sink)
        return [out[:, a.y0:a.y1, a.x0:a.x1] for a in (b.scaled(scale) for b in boxes)]

    def score(pieces) -> float:
        ours = np.concatenate([finish(p).numpy().reshape(p.shape[0], -1) for p in pieces], axis=1)
        ref = np.concatenate([reference[:, a.y0:a.y1, a.x0:a.x1].reshape(reference.shape[0], -1)
                              for a in (b.scaled(scale) for b in boxes)], axis=1)
        return psnr(ours, ref, which)

    if lattices is None:
        exact_stats: dict = {}
        Runner(program, device=cpu, dtype=f32, park_device=cpu, tile_px=256, record=exact_stats).run(x, lambda *a: None)
        print(json.dumps({"method": "exact statistics, sampled tiles, blind (before the context)",
                          "psnr_padding_only_db": score(padded_tiles(exact_stats))}), flush=True)
        # The whole canvas's attention context, as sampled mode builds it where it takes the whole canvas.
        whole = Box(0, height, 0, width)
        context = vs.attention_context(program, height, width)
        vs.estimate_stats(program, [x], [whole], device=cpu, dtype=f32, context=context, crop_boxes=[whole])
        print(json.dumps({"method": "exact statistics, sampled tiles",
                          "psnr_padding_only_db": score(padded_tiles(exact_stats, context))}), flush=True)
    for per_side, crop_px in SWEEP if lattices is None else [(n, 256) for n in lattices]:
        for guided in (False, True) if lattices is None else (True,):
            # The estimator itself, never sampled mode's fallback to the whole canvas where the
            # sample would cover it: lattices up to 4x4 stay under the canvas's area at 2048 px.
            sample = vs.Sample(per_side=per_side, crop_px=crop_px, border_px=rv.SAMPLE.border_px,
                               guide_px=rv.SAMPLE.guide_px if guided else 0)
            inner, weights = zip(*vs.sample_boxes(program, height, width, sample))
            crops = [b.grown(pad_in, height, width) for b in inner]
            guide = vs.guide_for(program, x, list(inner), sample) if guided else None
            # The guide is the crops' attention context too; crops alone have nothing to see beyond.
            context = vs.attention_context(program, height, width) if guided else None
            start = time.perf_counter()
            stats = vs.estimate_stats(program, [x[:, c.y0:c.y1, c.x0:c.x1] for c in crops],
                                      [b.relative_to(c) for b, c in zip(inner, crops)], weights=weights,
                                      guide=guide, device=cpu, dtype=f32, context=context, crop_boxes=crops,
                                      whole=x if guided else None, pass_tile_px=256)
            seconds = time.perf_counter() - start
            row = {"method": ("sampled, guided (sweep)" if guided else "sampled, crops alone (sweep)")
                   + _pooled_label(context_side, refine_share),
                   "sample": f"{per_side}x{per_side} x {crop_px} px", "seconds": f"{seconds:.1f} (estimate)"}
            if subset or (guided and (per_side, crop_px) == (rv.SAMPLE.per_side, rv.SAMPLE.crop_px)):
                row["psnr_db"] = score(padded_tiles(stats, context))
            if not subset:
                row["psnr_stats_only_db"] = score(exact_geometry(stats))
            print(json.dumps(row), flush=True)


def _sweep_row(row: dict) -> bool:
    return "(sweep)" in row.get("method", "") or row.get("method", "").startswith("exact statistics, sampled tiles")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vaes", nargs="+", default=["demo", "sd15"], choices=["demo", "sd15"])
    parser.add_argument("--which", nargs="+", default=["decode", "encode"], choices=["decode", "encode"])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--memory-limit-gib", type=float, default=20.0)
    parser.add_argument("--tmp", help="folder for the intermediate arrays (default: a temporary one)")
    parser.add_argument("--sweep-only", action="store_true",
                        help="only the sweeps, on the arrays an earlier run left in --tmp; the full runs' rows "
                             "in bench/results/vae_stats.json are kept")
    parser.add_argument("--only", nargs="+", choices=["exact", "sampled", "fast"],
                        help="only these full runs, no sweep; their rows are replaced where they stand and every "
                             "other row is kept (the exact run an earlier run left in --tmp is the reference)")
    parser.add_argument("--lattices", nargs="+", type=int, metavar="N",
                        help="the sweep for these lattices only (N x N crops), guided, without the rows of exact "
                             "statistics; their rows are replaced and every other row is kept")
    parser.add_argument("--context-side", type=int,
                        help="with --lattices: the attention context pooled to at most this many tokens a side")
    parser.add_argument("--refine-share", type=float,
                        help="with --lattices: refine the pooled context by this share of extra tokens instead "
                             "of the pack's (attention_context.REFINE_SHARE; 0: not refined)")
    parser.add_argument("--worker", nargs=4, metavar=("VAE", "WHICH", "METHOD", "TMP"))
    parser.add_argument("--sweep", nargs=4, metavar=("VAE", "WHICH", "SUBSET", "TMP"))
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker[:3], args.size, args.worker[3], args.memory_limit_gib)
        return
    if args.sweep:
        vae_name, which, subset, tmp = args.sweep
        sweep(vae_name, which, args.size, tmp, args.memory_limit_gib, subset == "subset", args.lattices,
              args.context_side, args.refine_share)
        return

    import numpy as np

    common.start_host()  # for the pack's settings (workers run in their own processes)
    from expanse.runtime import vae as rv

    script = pathlib.Path(__file__).resolve()
    # Rows of VAEs and directions this run does not measure are kept; --sweep-only keeps the full runs' too.
    path = common.RESULTS / "vae_stats.json"
    kept = json.loads(path.read_text())["rows"] if path.exists() else []
    pooled = _pooled_label(args.context_side, args.refine_share)
    rows = [r for r in kept if r["vae"] not in args.vaes or r["which"] not in args.which
            or (args.sweep_only and not _sweep_row(r))
            or (args.lattices and (r["method"] != "sampled, guided (sweep)" + pooled
                                   or r["sample"] not in [f"{n}x{n} x 256 px" for n in args.lattices]))]
    if args.lattices:
        args.sweep_only = True
    if args.sweep_only and not args.tmp:
        parser.error("--sweep-only reads the arrays an earlier run left in --tmp")
    if args.only:
        if not args.tmp:
            parser.error("--only reads the arrays an earlier run left in --tmp")
        rows = list(kept)
    sample = rv.SAMPLE
    default = f"{sample.per_side}x{sample.per_side} x {sample.crop_px} px"

    def write():
        common.write_results(
            "vae_stats", rows, COLUMNS,
            f"Tiled VAE statistics beyond RAM: sampled and fast against exact, {args.size}x{args.size} px",
            notes=["picture: a drawn landscape (demo/scenes.py); decode: its exact latent, so the latents are real",
                   "VAEs: demo = the demo model's (trained); sd15 = SD1.5 architecture, seeded random weights",
                   f"fast and sampled: {rv.SAMPLED_TILE_PX} px tiles, padding 96 (decode) / 64 (encode); sampled "
                   f"with the pack's SAMPLE ({default} crops inside {sample.border_px} px border bands)",
                   "psnr_db against exact mode: decoded pictures with peak 1, latents with peak = the exact latent's "
                   "range; full runs in fresh processes (peak RSS their own)",
                   "sweep rows: psnr_stats_only_db = sampled statistics on exact geometry (the statistics' error "
                   "alone); 'exact statistics, sampled tiles' = psnr_padding_only_db (the tiles' error alone); the "
                   "sweep's tiles are 512 px (pixel side) with the same padding; on sd15 it is measured on two of "
                   "them (a corner and the centre)",
                   f"crops alone: the lattice's crops pooled by their strata's shares; guided: the same crops "
                   f"correcting a {sample.guide_px} px shrunk copy of the whole latent run beside them (the pack's "
                   "sampled mode)"])

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.tmp or scratch
        for vae_name in args.vaes:
            for which in ["encode", "decode"]:  # the exact encode writes the latent the decodes read
                methods = ["exact"] + (["sampled", "fast"] if which in args.which else [])
                if args.sweep_only:
                    methods = []
                if args.only:
                    methods = [m for m in methods if m in args.only]
                if which == "encode" and "encode" not in args.which and \
                        (pathlib.Path(tmp) / f"{vae_name}-latent.npy").exists():
                    continue
                for method in methods:
                    res = common.run_worker(script, [vae_name, which, method, tmp, "--size", str(args.size),
                                                     "--memory-limit-gib", str(args.memory_limit_gib)], timeout=14400)
                    print(f"{vae_name} {which} {method}: {res}", flush=True)
                    row = {"vae": vae_name, "which": which, "method": method,
                           "sample": default if method == "sampled" else "", "status": res["status"]}
                    if res["status"] == "ok":
                        row.update(seconds=round(res["seconds"], 1), peak_rss_gib=round(res["peak_rss_gib"], 2))
                        if method != "exact":
                            ref = np.load(f"{tmp}/{vae_name}-{which}-exact.npy")
                            row["psnr_db"] = psnr(np.load(f"{tmp}/{vae_name}-{which}-{method}.npy"), ref, which)
                    same = [i for i, r in enumerate(rows) if not _sweep_row(r)
                            and (r["vae"], r["which"], r["method"]) == (vae_name, which, method)]
                    if same:
                        rows[same[0]] = row
                    else:
                        rows.append(row)
                    write()
                if which not in args.which or args.only:
                    continue
                subset = "subset" if vae_name == "sd15" else "whole"
                import subprocess
                import sys

                lattices = ["--lattices", *map(str, args.lattices)] if args.lattices else []
                if args.context_side:
                    lattices += ["--context-side", str(args.context_side)]
                if args.refine_share is not None:
                    lattices += ["--refine-share", str(args.refine_share)]
                proc = subprocess.Popen([sys.executable, str(script), "--sweep", vae_name, which, subset, tmp,
                                         "--size", str(args.size), "--memory-limit-gib", str(args.memory_limit_gib),
                                         *lattices], stdout=subprocess.PIPE, text=True)
                for line in proc.stdout:
                    if line.startswith("{"):
                        rows.append({"vae": vae_name, "which": which, "status": "ok", **json.loads(line)})
                        print(rows[-1], flush=True)
                        write()
                proc.wait()


if __name__ == "__main__":
    main()
