"""How much context a padded tile needs. Fast and sampled modes run every tile alone, with padding
around it and frozen statistics; this measures what that costs with exact statistics and the whole
canvas's attention context: only what a tile sees differs from exact mode, its padding at full
resolution and the rest through the pooled context. Decodes of a drawn 1024x1024 px scene's
latent in 512 px tiles, for paddings from 48 to 320 px, on the demo VAE (trained) and an
SD1.5-architecture VAE with seeded random weights; PSNR against exact mode.

    python bench/vae_padding_bench.py
    python bench/vae_padding_bench.py --vaes demo --paddings 48 96
"""
from __future__ import annotations

import argparse
import json
import time

import common  # bench/common.py (a script's own folder comes first on sys.path)
from vae_stats_bench import _setup, picture, psnr

COLUMNS = ["vae", "padding_px", "tile_px", "psnr_db", "tile_area_share", "seconds"]
SIZE, TILE_PX = 1024, 512


def measure(vae_name: str, paddings: list[int]) -> list[dict]:
    _, vae = _setup(vae_name, 20.0)
    import torch

    from expanse.core import vae_sampled_stats as vs
    from expanse.core.tiled_vae import frozen_tiles
    from expanse.core.tiling import Box
    from expanse.core.vae_geometry import padding_in, tile_boxes
    from expanse.core.vae_runner import Runner
    from expanse.runtime import vae as rv

    cpu, f32 = torch.device("cpu"), torch.float32
    x = rv.encode("bench", vae, picture(SIZE))[0].float()  # a real latent: the scene's exact encode
    program = rv.compile_program(vae, "decoder")
    height, width = x.shape[-2:]
    reference = torch.zeros(program.out_channels, *program.out_size(height, width))
    stats: dict = {}

    def keep(box, y):
        reference[:, box.y0:box.y1, box.x0:box.x1] = y

    Runner(program, device=cpu, dtype=f32, park_device=cpu, tile_px=256, record=stats).run(x, keep)
    whole = Box(0, height, 0, width)
    context = vs.attention_context(program, height, width)
    vs.estimate_stats(program, [x], [whole], device=cpu, dtype=f32, context=context, crop_boxes=[whole],
                      pass_tile_px=256)
    pixels = vae.process_output(reference.unsqueeze(0)).numpy()
    rows = []
    for padding in paddings:
        pad_in = padding_in(program, padding)
        out = torch.zeros_like(reference)

        def sink(_, box, y):
            out[:, box.y0:box.y1, box.x0:box.x1] = y
        start = time.perf_counter()
        frozen_tiles(program, x, 0, stats, sink, tile_px=TILE_PX, pad_in=pad_in, device=cpu, dtype=f32,
                     context=context)
        area = sum(c.height * c.width for c in (b.grown(pad_in, height, width)
                                                 for b in tile_boxes(program, height, width, TILE_PX)))
        rows.append({"vae": vae_name, "padding_px": padding, "tile_px": TILE_PX,
                     "psnr_db": psnr(vae.process_output(out.unsqueeze(0)).numpy(), pixels, "decode"),
                     "tile_area_share": round(area / (height * width), 2),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vaes", nargs="+", default=["demo", "sd15"], choices=["demo", "sd15"])
    parser.add_argument("--paddings", nargs="+", type=int, default=[48, 96, 192, 320])
    args = parser.parse_args()
    path = common.RESULTS / "vae_padding.json"  # rows of VAEs this run does not measure are kept
    rows = [r for r in json.loads(path.read_text())["rows"] if r["vae"] not in args.vaes] if path.exists() else []
    for vae_name in args.vaes:
        rows += measure(vae_name, args.paddings)
        common.write_results(
            "vae_padding", rows, COLUMNS,
            f"Tiled VAE: a padded tile's own error, exact statistics, {SIZE}x{SIZE} px decode",
            notes=["picture: a drawn landscape (demo/scenes.py), its exact encode decoded; demo = the demo model's "
                   "VAE (trained); sd15 = SD1.5 architecture, seeded random weights",
                   f"each {TILE_PX} px tile decoded alone from its padded crop with exact mode's statistics and the "
                   "whole canvas's attention context (unpooled at this size since 11fc1a3, which also has the "
                   "context stand in for a crop's own keys along its cut edges; demo rows measured before it, "
                   "pooled to 64x64 tokens), as fast and sampled modes run tiles: what differs from exact mode "
                   "is only what a tile sees, its padding at full resolution and the rest through the context",
                   "psnr_db against exact mode, RGB in 0..1; tile_area_share: the padded crops' area over the "
                   "canvas's (the tiles' extra work); seconds: the tiles' decode, on a machine shared with other "
                   "work"])


if __name__ == "__main__":
    main()
