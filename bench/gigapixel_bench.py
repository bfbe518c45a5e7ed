"""How big can I go? A 2x ChessTileRedraw of a latent canvas, LATENT to LATENT, and its streamed
save with Save Large Image, at growing sizes, each in a fresh process.

Per size: peak RSS of the redraw and of the save (the process's high-water mark, reset after the
model is loaded and warmed up, so the figure is what the work adds on top of the host and model),
the latent canvas's own size, and the wall time split into the UNet's calls, the VAE's tiled runs,
the TIFF writing (tiles to rows, halving, compression and writes) and the rest, per megapixel of
the result. At the smallest size the saved file is read back: level 0 (tifffile) against an
in-memory decode of the same latent in the same mode (up to 4096 px; above, the pyramid only), the
level sizes, and the overview as Pillow opens it.

The model is the pack's demo model (1 step per tile: the point is memory and overhead, not
pictures); `--sd15` uses the SD1.5 UNet and VAE architectures (random weights; half precision on
a GPU). Results: bench/results/gigapixel.{json,csv,md} (or gigapixel_gpu.* on a GPU).

    python bench/gigapixel_bench.py                          # 2048 4096 8192 16384 px results
    python bench/gigapixel_bench.py --results 2048 4096 --vae-mode sampled
    python bench/gigapixel_bench.py --memory --vae-mode sampled   # peaks only: gigapixel_memory.*

`--memory` measures the peaks alone, in a fraction of the time: the whole redraw, then the save up
to the end of its first row of tiles (its statistics, its first decoded tiles, the file's first
rows; the full rows show the save's peak is its statistics, taken before any tile), stopped there
as a cancel would. Its workers run with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_), so
a freed large tensor goes back to the system at once and the peak is what the work holds, not
what the allocator kept from earlier: with the default, dynamic threshold the same run's peak
varies by about 0.1 GiB from run to run, more than a latent canvas grows between these sizes.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import tempfile
import time
import types

import common  # bench/common.py (a script's own folder comes first on sys.path)

PROMPT = "a wide mountain lake under a red sky, forest on the shore"
NEGATIVE = "checks, stripes"
BASE_PX = 256  # the demo picture the source latent is grown from


def _vm_hwm() -> int:
    """This process's peak resident memory (VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> None:
    """Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _rss() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Timer:
    """Wraps a method on a class so its calls' seconds add up (nested calls once)."""

    def __init__(self, cls, name: str):
        self.seconds, self._depth = 0.0, 0
        original = getattr(cls, name)

        def timed(*args, **kwargs):
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self._depth -= 1

        setattr(cls, name, timed)


class _FirstRowDone(Exception):
    """Stops a --memory run's save at its first tile below the first row."""


def worker(result_px: int, vae_mode: str, sd15: bool, check: bool, memory: bool = False) -> None:
    comfy_nodes = common.start_host()
    import folder_paths
    import torch

    from expanse.core import latent_resample as lr
    from expanse.runtime import large_image
    from expanse.runtime.demo_model import WEIGHTS_DIR, load_demo

    torch.set_grad_enabled(False)
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip, vae = load_demo(WEIGHTS_DIR / "expanse-demo.safetensors")
    positive = nodes["CLIPTextEncode"]().encode(clip, PROMPT)[0]
    negative = nodes["CLIPTextEncode"]().encode(clip, NEGATIVE)[0]
    channels, ratio = vae.latent_channels, vae.spacial_compression_decode()
    base = nodes["EmptyLatentImage"]().generate(BASE_PX, BASE_PX)[0]
    base["samples"] = torch.zeros(1, channels, BASE_PX // ratio, BASE_PX // ratio)
    picture = nodes["KSampler"]().sample(model, 1, 4, 5.0, "euler", "normal", positive, negative, base)[0]
    if sd15:  # SD1.5's UNet and VAE architectures: their costs, not the demo model's
        from expanse_harness import tiny_models

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = common.sd15_model(device)
        vae = tiny_models.full_size_vae(latent_channels=4, seed=0, device=None)
        context = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(0))
        positive, negative = [[context, {}]], [[torch.zeros_like(context), {}]]
        channels, ratio = vae.latent_channels, vae.spacial_compression_decode()
    source_side = result_px // 2 // ratio
    samples = lr.resample(picture["samples"][:, :channels], source_side, source_side, "lanczos")
    if samples.shape[1] < channels:
        samples = samples.repeat(1, channels // samples.shape[1] + 1, 1, 1)[:, :channels]
    unet_meter, vae_meter = common.ModelMeter(model), common.VAEMeter()
    write_timer = _Timer(large_image.LargeImageFile, "add")
    finish_timer = _Timer(large_image.LargeImageFile, "finish")
    nodes["KSampler"]().sample(model, 0, 1, 5.0, "euler", "normal", positive, negative,
                               {"samples": torch.zeros(1, channels, 8, 8)})  # load and warm up
    out_dir = tempfile.mkdtemp(prefix="expanse-gigapixel-")
    folder_paths.set_output_directory(out_dir)
    redraw_cls, save_cls = nodes["ExpanseChessTileRedraw"], nodes["ExpanseSaveLargeImage"]
    # The prompt as the server hands it over: only the latent output is read, so no image is decoded.
    redraw_cls.hidden = types.SimpleNamespace(
        prompt={"1": {"class_type": "ExpanseChessTileRedraw", "inputs": {}},
                "2": {"class_type": "ExpanseSaveLargeImage", "inputs": {"samples": ["1", 1]}}}, unique_id="1")
    unet_meter.reset()
    vae_meter.reset()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rss_base = _rss()
    _reset_hwm()
    start = time.perf_counter()
    redrawn = redraw_cls.execute(model, positive, negative, vae, latent={"samples": samples}, upscale_by=2.0,
                                 seed=1, steps=1, cfg=5.0, denoise=0.35, tile_width=512, tile_height=512, padding=64,
                                 mask_feather=32, tile_batch_size=4, vae_mode=vae_mode)
    redraw_seconds = time.perf_counter() - start
    redraw_unet = unet_meter.seconds
    peak_redraw = _vm_hwm()
    z = redrawn.result[1]["samples"]
    if memory:
        add = large_image.LargeImageFile.add

        def first_row_only(self, box, pixels):
            if box.y0 > 0:
                raise _FirstRowDone()
            add(self, box, pixels)
        large_image.LargeImageFile.add = first_row_only
    _reset_hwm()
    vae_before = vae_meter.seconds
    start = time.perf_counter()
    try:
        saved = save_cls.execute(samples={"samples": z}, vae=vae, filename_prefix="bench/giga", vae_mode=vae_mode,
                                 compression="deflate", deep_zoom=False)
    except _FirstRowDone:
        print(json.dumps({"status": "ok", "redraw_s": redraw_seconds, "rss_base": rss_base,
                          "peak_redraw": peak_redraw, "peak_save": _vm_hwm(),
                          "latent_bytes": z.numel() * z.element_size(),
                          "source_bytes": samples.numel() * samples.element_size(),
                          "left_behind": sorted(str(f) for f in pathlib.Path(out_dir).rglob("*") if f.is_file())}))
        return
    save_seconds = time.perf_counter() - start
    peak_save = _vm_hwm()
    path = saved.result[1].splitlines()[0]
    result = {"status": "ok", "redraw_s": redraw_seconds, "save_s": save_seconds, "unet_s": redraw_unet,
              "redraw_vae_s": vae_before, "save_vae_s": vae_meter.seconds - vae_before,
              "write_s": write_timer.seconds, "finish_s": finish_timer.seconds, "calls": unet_meter.calls,
              "rss_base": rss_base, "peak_redraw": peak_redraw, "peak_save": peak_save,
              "latent_bytes": z.numel() * z.element_size(), "file_bytes": pathlib.Path(path).stat().st_size,
              "device_peak": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None}
    if check:
        result["check"] = _check_readback(path, vae, z, vae_mode)
    shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(result))


# Level 0 is compared with an in-memory decode up to this side; above it the whole-picture decode
# would take as long as the save itself (an hour at 16384 px here), so only the pyramid is checked.
COMPARE_MAX_PX = 4096


def _check_readback(path: str, vae, z, vae_mode: str) -> dict:
    """The saved file against an in-memory decode of the same latent in the same mode (up to
    COMPARE_MAX_PX), its pyramid's level sizes and its overview page as Pillow opens it."""
    import numpy as np
    import tifffile
    import torch
    from PIL import Image

    from expanse.core.large_image import pyramid_sizes
    from expanse.runtime import large_image
    from expanse.runtime import vae as runtime_vae

    ratio = vae.spacial_compression_decode()
    height, width = z.shape[-2] * ratio, z.shape[-1] * ratio
    result = {"level0_max_abs_diff": "not compared at this size", "level0_equal": None}
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        sizes = [tuple(level.shape[:2]) for level in levels]
        if max(height, width) <= COMPARE_MAX_PX:
            decoded = runtime_vae.decode("bench", vae, z, mode=vae_mode)
            expected = (decoded[0].float() * 255.0).clamp(0, 255).to(torch.uint8).numpy()
            diff = np.abs(levels[0].asarray().astype(np.int16) - expected.astype(np.int16))
            result = {"level0_max_abs_diff": int(diff.max()), "level0_equal": bool((diff == 0).all())}
    Image.MAX_IMAGE_PIXELS = None  # only the last (overview) page is decoded
    with Image.open(path) as im:
        im.seek(im.n_frames - 1)
        overview = np.asarray(im.convert("RGB"))
    wanted_sizes = pyramid_sizes(height, width, large_image.OVERVIEW_PX)
    return {**result, "levels": sizes, "levels_right": sizes == [tuple(s) for s in wanted_sizes],
            "overview_size_right": overview.shape[:2] == tuple(wanted_sizes[-1])}


GIB = 2 ** 30
DEFAULT_RESULTS = [2048, 4096, 8192, 16384]


def _row(result_px: int, res: dict) -> dict:
    row = {"result": f"{result_px}x{result_px}", "status": res["status"]}
    if res["status"] != "ok":
        return row
    mp = result_px * result_px / 1e6
    seconds = res["redraw_s"] + res["save_s"]
    vae_s = res["redraw_vae_s"] + res["save_vae_s"] - res["write_s"]  # the sink's writes run inside the decode
    write_s = res["write_s"] + res["finish_s"]
    other = seconds - res["unet_s"] - vae_s - write_s
    row.update({
        "megapixels": round(mp, 1), "seconds": round(seconds, 1), "unet_s": round(res["unet_s"], 1),
        "vae_s": round(vae_s, 1), "write_s": round(write_s, 1), "other_s": round(other, 1),
        "s_per_mp": round(seconds / mp, 2), "other_s_per_mp": round(other / mp, 3),
        "latent_mib": round(res["latent_bytes"] / 2 ** 20, 1),
        "rss_base_gib": round(res["rss_base"] / GIB, 2),
        "peak_redraw_gib": round(res["peak_redraw"] / GIB, 2), "peak_save_gib": round(res["peak_save"] / GIB, 2),
        "file_mib": round(res["file_bytes"] / 2 ** 20, 1),
        "device_peak_gib": round(res["device_peak"] / GIB, 2) if res.get("device_peak") else "-",
        "model_calls": res["calls"]})
    if "check" in res:
        c = res["check"]
        row["readback"] = (f"level 0 max diff {c['level0_max_abs_diff']}, levels "
                           f"{'right' if c['levels_right'] else 'WRONG'} {c['levels']}, overview "
                           f"{'right' if c['overview_size_right'] else 'WRONG'}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, nargs="+", default=DEFAULT_RESULTS,
                        help="result sides in pixels (the source latent is half that)")
    parser.add_argument("--vae-mode", default="auto", help="the redraw's and the save's vae_mode")
    parser.add_argument("--sd15", action="store_true", help="the SD1.5 UNet and VAE architectures (for a GPU)")
    parser.add_argument("--name", default="gigapixel")
    parser.add_argument("--update", action="store_true",
                        help="replace only these sizes' rows in the existing results, keep the others")
    parser.add_argument("--memory", action="store_true",
                        help="peaks only (see above), written to <name>_memory.*; default sizes 4096 8192 16384")
    parser.add_argument("--worker", nargs=5, metavar=("RESULT", "VAE_MODE", "SD15", "CHECK", "MEMORY"))
    args = parser.parse_args()
    if args.worker:
        result_px, vae_mode, sd15, check, memory = args.worker
        worker(int(result_px), vae_mode, sd15 == "1", check == "1", memory == "1")
        return
    if args.memory:
        memory_run(args, pathlib.Path(__file__).resolve())
        return

    rows = []
    script = pathlib.Path(__file__).resolve()
    smallest = min(args.results)
    done = {f"{px}x{px}" for px in args.results}
    kept = []
    if args.update:
        path = common.RESULTS / f"{args.name}{'' if common.machine()['device'] == 'cpu' else '_gpu'}.json"
        kept = [r for r in json.loads(path.read_text())["rows"] if r["result"] not in done] if path.exists() else []
    for result_px in args.results:
        res = common.run_worker(script, [str(result_px), args.vae_mode, "1" if args.sd15 else "0",
                                         "1" if result_px == smallest else "0", "0"], timeout=4 * 3600)
        print(f"{result_px} px: {res}", flush=True)
        rows.append(_row(result_px, res))
        print(rows[-1], flush=True)
        # After every size: a long run stopped part way keeps what it measured.
        write(args.name, sorted(kept + rows, key=lambda r: int(r["result"].split("x")[0])), args.vae_mode, args.sd15)


MMAP_THRESHOLD = 1 << 20  # bytes: every tensor of a megabyte or more is its own mapping


def memory_run(args, script: pathlib.Path) -> None:
    """The peaks alone at each size (see the module's docstring), each against the smallest size's."""
    import os

    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)  # the workers inherit it
    sizes = args.results if args.results != DEFAULT_RESULTS else [4096, 8192, 16384]
    rows, first = [], None
    for result_px in sizes:
        res = common.run_worker(script, [str(result_px), args.vae_mode, "1" if args.sd15 else "0", "0", "1"],
                                timeout=4 * 3600)
        print(f"{result_px} px: {res}", flush=True)
        row = {"result": f"{result_px}x{result_px}", "status": res["status"]}
        if res["status"] == "ok":
            mib = lambda v: round(v / 2 ** 20, 1)  # noqa: E731
            latents = res["latent_bytes"] + res["source_bytes"]
            first = first or res
            row.update({"latent_mib": mib(res["latent_bytes"]), "source_mib": mib(res["source_bytes"]),
                        "rss_base_gib": round(res["rss_base"] / GIB, 3),
                        "peak_redraw_gib": round(res["peak_redraw"] / GIB, 3),
                        "peak_save_gib": round(res["peak_save"] / GIB, 3),
                        "latents_growth_mib": mib(latents - first["latent_bytes"] - first["source_bytes"]),
                        "redraw_growth_mib": mib(res["peak_redraw"] - first["peak_redraw"]),
                        "save_growth_mib": mib(res["peak_save"] - first["peak_save"]),
                        "files_left": len(res["left_behind"])})
        rows.append(row)
        common.write_results(
            f"{args.name}_memory", rows,
            ["result", "latent_mib", "source_mib", "rss_base_gib", "peak_redraw_gib", "peak_save_gib",
             "latents_growth_mib", "redraw_growth_mib", "save_growth_mib", "files_left", "status"],
            "Peak RSS of a 2x ChessTileRedraw (latent to latent) and of its streamed save, the demo model",
            notes=["as the full rows (bench/results/gigapixel.md), vae_mode " + args.vae_mode + "; the save stopped "
                   "at its first tile below the first row of tiles, as a cancel would (files_left: what it left in "
                   "the output folder)",
                   f"workers run with MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}: the peak is what the work holds",
                   "peak_redraw_gib / peak_save_gib: the process's peak during each (VmHWM reset before each); "
                   "the growth columns against the first size: latents = the redraw's output and its source latent, "
                   "which the save's caller holds too"])


def write(name: str, rows: list[dict], vae_mode: str, sd15: bool) -> None:
    model = "SD1.5 UNet and VAE architectures (random weights)" if sd15 else "the demo model"
    common.write_results(
        name, rows, ["result", "megapixels", "seconds", "s_per_mp", "unet_s", "vae_s", "write_s", "other_s",
                     "other_s_per_mp", "latent_mib", "rss_base_gib", "peak_redraw_gib", "peak_save_gib",
                     "device_peak_gib", "file_mib", "model_calls", "readback", "status"],
        f"2x ChessTileRedraw, latent to latent, and its streamed save (Save Large Image), {model}",
        notes=[f"source: a {BASE_PX} px demo picture's latent resized (lanczos) to half the result; ChessTileRedraw "
               "upscale_by 2 with its latent input, 512 px tiles, 64 px padding, 32 px feather, 4 tiles per batch, "
               f"1 step at denoise 0.35; Save Large Image with deflate; vae_mode {vae_mode} for both",
               "rss_base_gib: the process after loading and warming up the model; peak_redraw_gib / peak_save_gib: "
               "the process's peak during each (VmHWM reset before each), so peak minus base is what the work takes",
               "unet_s: the UNet's calls; vae_s: the tiled VAE's runs less the time its tiles spend in the writer; "
               "write_s: tiles to rows, halving, compression and writing; other_s: the rest (pasting, masks, "
               "conditioning, resizing), other_s_per_mp flat when it grows linearly with the area",
               "readback (the smallest size of a run): the TIFF's level 0 (tifffile) against an in-memory decode of "
               f"the same latent in the same mode (up to {COMPARE_MAX_PX} px), the pyramid's level sizes, and the "
               "overview page as Pillow opens it"])


if __name__ == "__main__":
    main()
