"""Latent lanczos's memory beside its output: a 2x upscale of a latent canvas, each size in a fresh
process, measured as the growth of the process's peak resident memory over the input's.

Latent lanczos runs before a chess redraw of a LATENT (ChessTileRedraw's default latent_resize), so
at poster sizes its temporaries add to the peak the redraw is measured by (issue 21: growth no more
than the latent canvas's own). It runs band by band of output rows (core.latent_resample), so the
temporaries are a band's; --whole runs the picture as one band, as it did before, for comparison.

    python bench/lanczos_memory_bench.py
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import time

import common  # bench/common.py (a script's own folder comes first on sys.path)

SIDES = [1024, 2048]  # latent px: the 8192 -> 16384 and 16384 -> 32768 px steps


def worker(side: int, whole: bool) -> None:
    import torch
    from expanse_harness.host import register_pack

    register_pack()
    from expanse.core import latent_resample as lr

    torch.set_num_threads(1)
    if whole:
        lr.LANCZOS_BAND_ROWS = 10 ** 9
    x = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    out = lr.resample(x, 2 * side, 2 * side, "lanczos")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"output_mib": round(out.numel() * out.element_size() / 2 ** 20),
                      "growth_mib": round((peak - before) / 2 ** 20), "seconds": round(seconds, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, metavar=("SIDE", "WHOLE"))
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), args.worker[1] == "whole")
        return
    script = pathlib.Path(__file__).resolve()
    rows = []
    for side in SIDES:
        for mode in ("bands", "whole"):
            result = common.run_worker(script, [str(side), mode], timeout=600)
            row = {"latent": f"{side}x{side} -> {2 * side}x{2 * side}", "computed": mode, **result}
            if "growth_mib" in result:
                row["beside_output_mib"] = result["growth_mib"] - result["output_mib"]
            rows.append(row)
    common.write_results(
        "lanczos_memory", rows, ["latent", "computed", "output_mib", "growth_mib", "beside_output_mib", "seconds"],
        "Latent lanczos 2x: peak memory beside the output, band by band against the whole picture at once",
        ["A 4-channel float32 latent of random values, 2x with lanczos (antialiased), one thread, each in a "
         "fresh process.",
         "growth_mib: the peak resident memory's growth over the input's (ru_maxrss); beside_output_mib: what "
         "of it is not the output itself (the temporaries, and what the allocator keeps of them).",
         "bands: 256 output rows at a time (core.latent_resample.LANCZOS_BAND_ROWS), the pack's way; whole: "
         "one band of the whole picture, as before. Both give the same values bit for bit (unit-tested)."])


if __name__ == "__main__":
    main()
