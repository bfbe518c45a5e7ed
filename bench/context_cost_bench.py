"""What a lone tile's attention context costs: one sampled-mode tile (1024 px with 96 px padding)
decoded with frozen statistics, attending to its own keys only and to a large canvas's context
pooled to 64x64, 128x128 and 256x256 tokens (attention_context.CONTEXT_SIDE is 256: a decoder's
context of a canvas above 2048 px holds that many since 80eb5fd, the 1024 px copy's 128x128
before), and 256x256 refined as sampled mode refines a decoder's mid-block attention's context
wherever it is pooled (attention_context.REFINE_SHARE: 100% more tokens). The context's values do
not change the cost, so they are random; the tile is the best of two runs. Results: bench/results/context_cost.{json,csv,md}.

    python bench/context_cost_bench.py                 # the demo VAE
    python bench/context_cost_bench.py --vaes demo sd15
"""
from __future__ import annotations

import argparse
import time

import common  # bench/common.py (a script's own folder comes first on sys.path)
from vae_stats_bench import _setup

COLUMNS = ["vae", "context_tokens", "seconds", "vs_no_context"]
TILE_PX, PADDING_PX, CANVAS_PX = 1024, 96, 16384
SIDES = [0, 64, 128, 256, "256 refined"]


def measure(vae_name: str) -> list[dict]:
    _, vae = _setup(vae_name, 20.0)
    import torch

    from expanse.core import vae_sampled_stats as vs
    from expanse.core.attention_context import REFINE_SHARE, ContextTokens
    from expanse.core.tiled_vae import run_frozen
    from expanse.core.tiling import Box
    from expanse.core.vae_program import AttentionPass
    from expanse.core.vae_runner import Runner
    from expanse.runtime import vae as rv

    cpu, f32 = torch.device("cpu"), torch.float32
    program = rv.compile_program(vae, "decoder")
    side_in = int((TILE_PX + 2 * PADDING_PX) / program.pixel_scale)
    canvas = int(CANVAS_PX / program.pixel_scale)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(program.in_channels, side_in, side_in, generator=g)
    stats: dict = {}
    Runner(program, device=cpu, dtype=f32, park_device=cpu, tile_px=256, record=stats).run(z[:, :64, :64],
                                                                                          lambda *a: None)
    crop = Box(canvas // 2, canvas // 2 + side_in, canvas // 2, canvas // 2 + side_in)
    rows, alone = [], None
    for label in SIDES:
        side, refined = (256, vs.full_context_passes(program)) if label == "256 refined" else (label, [])
        context = None
        if side:
            context = vs.attention_context(program, canvas, canvas)
            for index, p in enumerate(program.passes):
                if isinstance(p, AttentionPass):
                    keys, values = (torch.randn(c.out_channels, side, side, generator=g) for c in (p.k, p.v))
                    tokens = ContextTokens.pooled(keys, values, canvas, canvas, side=side)
                    if index in refined:  # the parts of split cells: more tokens, each in a cell
                        share = REFINE_SHARE
                        extra = int(share * side * side)
                        tokens = tokens.select(torch.arange(side * side + extra) % (side * side))
                    context.tokens[index] = tokens
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            run_frozen(program, z, stats, device=cpu, dtype=f32, context=context, at=crop if side else None)
            best = min(best, time.perf_counter() - start)
        alone = alone or best
        name = f"{side}x{side}" + (f" + {share:.0%} refined" if refined else "")
        rows.append({"vae": vae_name, "context_tokens": name if side else "none",
                     "seconds": round(best, 2), "vs_no_context": round(best / alone, 2)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vaes", nargs="+", default=["demo"], choices=["demo", "sd15"])
    args = parser.parse_args()
    rows = [row for name in args.vaes for row in measure(name)]
    common.write_results(
        "context_cost", rows, COLUMNS,
        f"One sampled-mode tile ({TILE_PX} px, {PADDING_PX} px padding) with its attention context, "
        f"{CANVAS_PX} px canvas",
        notes=["VAEs: demo = the demo model's (trained); sd15 = SD1.5 architecture, seeded random weights",
               "context_tokens: the context's tokens outside the tile (a few hundred inside it are left out); "
               "seconds: the tile's decode with frozen statistics, best of two"])


if __name__ == "__main__":
    main()
