"""Tiled VAE decode benchmark: ours (exact, fast) against ComfyUI's whole-image VAEDecode and its
built-in VAEDecodeTiled, on a VAE of the real SD1.5 architecture with seeded random weights
(speed and memory do not depend on weight values).

Every (size, method) runs in a fresh process, so peak RSS is that method's own. Runs alternate
between methods and the median wall time is kept. Results go to bench/results/vae_decode.*.

    python bench/vae_bench.py                 # 1024 and 2048 px, 512 px tiles
    python bench/vae_bench.py --sizes 512 --repeats 1
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time

import common  # bench/common.py (a script's own folder comes first on sys.path)

METHODS = ["whole", "builtin", "exact", "fast"]
LABELS = {"whole": "ComfyUI VAEDecode (whole image)", "builtin": "ComfyUI VAEDecodeTiled",
          "exact": "TiledVAEDecode exact", "fast": "TiledVAEDecode fast"}


def worker(method: str, size: int, tile: int, out_path: str, limit_gib: float) -> None:
    watchdog = common.PeakRSS(int(limit_gib * 2 ** 30))
    comfy_nodes = common.start_host()
    import torch

    from expanse_harness import tiny_models

    torch.set_grad_enabled(False)
    vae = tiny_models.full_size_vae(latent_channels=4, seed=0, device=None)
    ratio = vae.spacial_compression_decode()
    g = torch.Generator().manual_seed(0)
    samples = {"samples": torch.randn(1, vae.latent_channels, size // ratio, size // ratio, generator=g)}
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    rss_before = watchdog.peak_bytes()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if method == "whole":
        image = nodes["VAEDecode"]().decode(vae, samples)[0]
    elif method == "builtin":
        image = nodes["VAEDecodeTiled"]().decode(vae, samples, tile, 64, 64, 8)[0]
    else:
        image = nodes["ExpanseTiledVAEDecode"].execute(samples=samples, vae=vae, tile_size=tile, mode=method,
                                                padding=96).result[0]
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    import numpy as np

    np.save(out_path, image.float().cpu().numpy())
    result = {"status": "ok", "seconds": seconds, "peak_rss_gib": watchdog.peak_bytes() / 2 ** 30,
              "rss_before_gib": rss_before / 2 ** 30}
    if cuda:
        result["device_peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    print(json.dumps(result))


def rel_l2(a, b) -> float:
    import numpy as np

    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method at sizes up to 1024 px")
    parser.add_argument("--repeats-large", type=int, default=1, help="timed runs per method above 1024 px")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--memory-limit-gib", type=float, default=20.0)
    parser.add_argument("--worker", nargs=4, metavar=("METHOD", "SIZE", "TILE", "OUT"))
    args = parser.parse_args()
    if args.worker:
        method, size, tile, out = args.worker
        worker(method, int(size), int(tile), out, args.memory_limit_gib)
        return

    import numpy as np

    rows = []
    script = pathlib.Path(__file__).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            repeats = args.repeats if size <= 1024 else args.repeats_large
            runs: dict[str, list[dict]] = {m: [] for m in METHODS}
            for r in range(repeats):
                for method in METHODS:  # alternating, so drift on a shared machine hits all alike
                    out = f"{tmp}/{method}-{size}.npy"
                    res = common.run_worker(script, [method, str(size), str(args.tile), out,
                                                     "--memory-limit-gib", str(args.memory_limit_gib)], timeout=7200)
                    print(f"{size} px {method} run {r + 1}/{repeats}: {res}", flush=True)
                    runs[method].append(res)
            whole_ok = all(r["status"] == "ok" for r in runs["whole"])
            whole_img = np.load(f"{tmp}/whole-{size}.npy") if whole_ok else None
            whole_time = statistics.median(r["seconds"] for r in runs["whole"]) if whole_ok else None
            for method in METHODS:
                ok = [r for r in runs[method] if r["status"] == "ok"]
                row = {"size": f"{size}x{size}", "method": LABELS[method], "tile": "-" if method == "whole" else args.tile}
                if not ok:
                    row["status"] = runs[method][-1]["status"]
                    rows.append(row)
                    continue
                seconds = statistics.median(r["seconds"] for r in ok)
                row.update({
                    "seconds": round(seconds, 1),
                    "time_vs_whole": round(seconds / whole_time, 2) if whole_time else "whole did not fit",
                    "rel_l2_vs_whole": (f"{rel_l2(np.load(f'{tmp}/{method}-{size}.npy'), whole_img):.1e}"
                                        if whole_img is not None else "whole did not fit"),
                    "peak_rss_gib": round(max(r["peak_rss_gib"] for r in ok), 2),
                    "rss_before_decode_gib": round(max(r["rss_before_gib"] for r in ok), 2),
                    "status": "ok",
                })
                if "device_peak_gib" in ok[0]:
                    row["device_peak_gib"] = round(max(r["device_peak_gib"] for r in ok), 2)
                rows.append(row)
    columns = ["size", "method", "tile", "seconds", "time_vs_whole", "rel_l2_vs_whole", "peak_rss_gib",
               "rss_before_decode_gib", "device_peak_gib", "status"]
    common.write_results(
        "vae_decode", rows, columns, "Tiled VAE decode, SD1.5 VAE architecture (random weights)",
        notes=[f"tile {args.tile} px; built-in tiled decode with 64 px overlap; fast mode with 96 px padding",
               "time: median of alternating runs, each in a fresh process; memory: peak RSS of that process "
               "(rss_before_decode_gib is the same process after building the model, before decoding)",
               "rel_l2_vs_whole: ||tiled - whole|| / ||whole|| on the decoded image"])


if __name__ == "__main__":
    main()
