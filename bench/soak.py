"""Soak test: 50 mixed prompts queued at once through the API of a fresh ComfyUI server with the
demo model, 10 of them interrupted in the middle of their tiles.

- The 40 good prompts are small workflows of every node (five kinds, eight of each, every one with
  its own seed, so nothing is served from ComfyUI's cache); the 10 long ones (ChessTileRedraw,
  TiledDiffusion under KSampler, ProgressiveGrowSampler) get POST /interrupt (with their prompt_id)
  once their node has reported progress, i.e. while it is in the middle of its tiles or stages.
- Memory: the server process's RSS (psutil) when the first 5 prompts have finished (one of each
  kind) and when all 50 have; the target is the latter within 10% of the former.
- Results: every good prompt's picture is compared with the same prompt's picture on a second,
  fresh server that runs the 40 alone, one at a time.

    .venv/bin/python bench/soak.py                   # on ComfyUI 0.33.0 (.venv-latest) where set-up built it
    .venv/bin/python bench/soak.py --host bundled    # on ComfyUI 0.3.75 (.venv)

Both servers run with one CPU thread (OMP_NUM_THREADS=1, --threads): the machine may be shared,
and the comparison needs the same thread count on both. Writes bench/results/soak.{json,csv,md}
(`--name`), with the machine, its load average during the run and the host's ComfyUI version.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pathlib
import re
import sys
import tempfile
import time
import uuid

import common  # bench/common.py (a script's own folder comes first on sys.path)

ROOT = common.ROOT
VENVS = {"bundled": ROOT / ".venv", "latest": ROOT / ".venv-latest"}
DEMO = {"class_type": "ExpanseDemoModelLoader", "inputs": {"weights": "expanse-demo.safetensors"}}
TEXT = "a day sky with clouds over a green field"
KINDS = ["tiled_region", "grow_upscale", "chess", "vae_roundtrip", "txt2img"]
LONG_KINDS = ["chess_long", "tiled_long", "grow_long"]


# --- the prompts -----------------------------------------------------------------------------------

def base(width: int, height: int, seed: int, steps: int = 2) -> dict:
    from expanse_harness.workflows import text_to_image_prompt  # the harness is importable once re-run in a venv

    return text_to_image_prompt(DEMO, TEXT, width, height, steps=steps, seed=seed, tile=64, prefix="soak")


def tiled(prompt: dict, tile: int, overlap: int, method: str, seed: int) -> dict:
    prompt["tiled"] = {"class_type": "ExpanseTiledDiffusion",
                       "inputs": {"model": ["model", 0], "method": method, "tile_width": tile, "tile_height": tile,
                                  "overlap": overlap, "tile_batch_size": 4, "seed": seed}}
    prompt["sample"]["inputs"]["model"] = ["tiled", 0]
    return prompt


def grow(prompt: dict, seed: int, steps: int, stages: int, refine_steps: int) -> dict:
    prompt["sample"] = {"class_type": "ExpanseProgressiveGrowSampler",
                        "inputs": {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                                   "latent_image": ["latent", 0], "seed": seed, "steps": steps, "cfg": 5.0,
                                   "sampler_name": "euler", "scheduler": "normal", "min_scale": 0.5,
                                   "max_scale": 1.0, "stages": stages, "spacing": "geometric", "refine": True,
                                   "denoise_second": 0.5, "denoise_last": 0.35, "refine_steps": refine_steps,
                                   "upscale_method": "bislerp", "stage_noise": 0.0}}
    return prompt


def chess(prompt: dict, seed: int, steps: int, upscale_by: float) -> dict:
    del prompt["decode"]
    prompt["chess"] = {"class_type": "ExpanseChessTileRedraw",
                       "inputs": {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                                  "vae": ["model", 2], "latent": ["sample", 0], "upscale_by": upscale_by,
                                  "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
                                  "scheduler": "normal", "denoise": 0.3, "tile_width": 64, "tile_height": 64,
                                  "padding": 16, "mask_feather": 8, "tile_batch_size": 2, "redraw_order": "chess",
                                  "seam_fix": "band", "seam_fix_denoise": 0.3, "seam_fix_width": 16,
                                  "seam_fix_feather": 8, "vae_mode": "auto"}}
    prompt["save"]["inputs"]["images"] = ["chess", 0]
    return prompt


def make(kind: str, index: int) -> tuple[dict, str | None]:
    """(prompt, id of the node to interrupt or None) for the index-th prompt of a kind."""
    seed = 1000 + index
    methods = ["multidiffusion", "mixture_of_diffusers", "shifted"]
    if kind == "tiled_region":
        prompt = tiled(base(128, 64, seed), 64, 32, methods[index % 3], seed)
        prompt["region_text"] = {"class_type": "CLIPTextEncode",
                                 "inputs": {"clip": ["model", 1], "text": "red and yellow checks"}}
        prompt["region"] = {"class_type": "ExpanseRegionPrompt",
                            "inputs": {"conditioning": ["positive", 0], "region_conditioning": ["region_text", 0],
                                       "x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0, "type": "foreground",
                                       "feather": 0.1, "strength": 1.0, "canvas_width": 128, "canvas_height": 64}}
        prompt["sample"]["inputs"]["positive"] = ["region", 0]
        return prompt, None
    if kind == "grow_upscale":
        prompt = grow(base(64, 64, seed), seed, steps=2, stages=2, refine_steps=1)
        prompt["upscale"] = {"class_type": "ExpanseLatentUpscaleAdvanced",
                             "inputs": {"samples": ["sample", 0], "upscale_method": "lanczos", "scale_by": 1.5,
                                        "width": 0, "height": 0, "antialias": True}}
        prompt["decode"]["inputs"]["samples"] = ["upscale", 0]
        return prompt, None
    if kind == "chess":
        return chess(base(64, 64, seed, steps=1), seed, steps=1, upscale_by=1.5), None
    if kind == "vae_roundtrip":
        prompt = base(64, 64, seed)
        prompt["encode"] = {"class_type": "ExpanseTiledVAEEncode",
                            "inputs": {"pixels": ["decode", 0], "vae": ["model", 2], "tile_size": 32,
                                       "mode": "exact", "padding": 64}}
        prompt["redecode"] = {"class_type": "ExpanseTiledVAEDecode",
                              "inputs": {"samples": ["encode", 0], "vae": ["model", 2], "tile_size": 32,
                                         "mode": "fast", "padding": 32}}
        prompt["save"]["inputs"]["images"] = ["redecode", 0]
        return prompt, None
    if kind == "txt2img":
        return base(96, 96, seed), None
    # The long ones: each node's tiles or stages take tens of seconds, interrupted after the first ticks.
    if kind == "chess_long":
        return chess(base(128, 128, seed, steps=1), seed, steps=30, upscale_by=2.0), "chess"
    if kind == "tiled_long":
        return tiled(base(256, 256, seed, steps=40), 64, 32, methods[index % 3], seed), "sample"
    if kind == "grow_long":
        return grow(base(256, 256, seed), seed, steps=30, stages=3, refine_steps=20), "sample"
    raise ValueError(kind)


def plan() -> list[dict]:
    """The 50 prompts in queue order: one of each kind first, then the rest with the 10 long ones
    spread among them."""
    good = [(kind, i) for i in range(8) for kind in KINDS]  # 40, the first five one of each kind
    long = [(LONG_KINDS[i % 3], i) for i in range(10)]
    order = good[:5]
    rest = good[5:]
    while rest or long:
        order += rest[:4]
        rest = rest[4:]
        if long:
            order.append(long.pop(0))
    out = []
    for position, (kind, index) in enumerate(order):
        prompt, interrupt_at = make(kind, index)
        prompt["save"]["inputs"]["filename_prefix"] = f"soak_{position:02d}_{kind}"
        out.append({"position": position, "kind": kind, "prompt": prompt, "interrupt_node": interrupt_at})
    return out


# --- running ---------------------------------------------------------------------------------------

def start_server(threads: int):
    from expanse_harness.server import ComfyServer

    os.environ["OMP_NUM_THREADS"] = str(threads)  # the server process inherits it
    server = ComfyServer(workdir=pathlib.Path(tempfile.mkdtemp(prefix="expanse-soak-")))
    server.start()
    return server


def rss(server) -> int:
    import psutil

    return psutil.Process(server.proc.pid).memory_info().rss


def pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


async def soak(server, items: list[dict], limit: float) -> dict:
    """Queues every prompt at once, interrupts the long ones mid-node, records RSS as prompts finish."""
    import aiohttp

    client_id = uuid.uuid4().hex
    by_id, rss_after, samples = {}, {}, []
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
            for item in items:
                body = json.dumps({"prompt": item["prompt"], "client_id": client_id})
                async with session.post(f"{server.url}/prompt", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    answer = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"prompt {item['position']} ({item['kind']}) refused: {answer}")
                item["prompt_id"] = answer["prompt_id"]
                by_id[answer["prompt_id"]] = item
            print(f"queued {len(items)} prompts in {time.monotonic() - started:.1f} s", flush=True)
            done = 0
            while done < len(items):
                remaining = limit - (time.monotonic() - started)
                if remaining <= 0:
                    raise TimeoutError(f"{len(items) - done} prompts unfinished after {limit:.0f} s")
                msg = await ws.receive(timeout=remaining)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                data = event.get("data", {})
                item = by_id.get(data.get("prompt_id"))
                if item is None:
                    continue
                if event["type"] == "execution_start":
                    item["started"] = time.monotonic()
                elif event["type"] == "progress" and item["interrupt_node"] and "interrupted_at" not in item:
                    if data.get("node") == item["interrupt_node"] and 1 <= data["value"] < data["max"]:
                        item["interrupted_at"] = f"{data['value']}/{data['max']}"
                        item["interrupt_sent"] = time.monotonic()
                        async with session.post(f"{server.url}/interrupt", json={"prompt_id": item["prompt_id"]}):
                            pass
                elif event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                    if "status" in item:
                        continue
                    item["status"] = event["type"].removeprefix("execution_")
                    item["finished"] = time.monotonic()
                    if event["type"] == "execution_error":
                        item["error"] = f"{data.get('node_type')}: {data.get('exception_message', '').strip()[:300]}"
                    done += 1
                    samples.append(rss(server))
                    if done in (5, len(items)):
                        rss_after[done] = samples[-1]
                    print(f"{done:2d}/{len(items)} #{item['position']:02d} {item['kind']:<13} {item['status']:<11} "
                          f"{item['finished'] - item.get('started', item['finished']):5.1f} s  "
                          f"RSS {samples[-1] / 2**20:6.0f} MiB"
                          + (f"  interrupted at {item['interrupted_at']}" if "interrupted_at" in item else ""),
                          flush=True)
    return {"rss_after": rss_after, "rss_peak": max(samples), "seconds": time.monotonic() - started}


def fetch_pictures(server, items: list[dict]) -> None:
    for item in items:
        if item.get("status") != "success":
            continue
        entry = server.get(f"/history/{item['prompt_id']}")[item["prompt_id"]]
        item["png"] = server.images(entry)[0]


def reference_pictures(server, items: list[dict]) -> None:
    """Each good prompt alone on the fresh server, one after the other."""
    for item in items:
        if item["interrupt_node"]:
            continue
        entry = server.run(item["prompt"], timeout=600, what=f"prompt {item['position']} ({item['kind']})")
        item["reference_png"] = server.images(entry)[0]


def reexec_on(host: str) -> None:
    """Runs this script with the host's venv Python (each venv records its ComfyUI)."""
    python = VENVS[host] / "bin" / "python"
    if pathlib.Path(sys.prefix).resolve() != VENVS[host].resolve():
        if not python.exists():
            sys.exit(f"no {VENVS[host].name} (host {host}); run `make setup`")
        os.execv(str(python), [str(python), *sys.argv])


def host_version() -> str:
    from expanse_harness.host import comfy_dir

    found = re.search(r'__version__\s*=\s*"([^"]+)"', (comfy_dir() / "comfyui_version.py").read_text())
    return found.group(1) if found else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", choices=sorted(VENVS),
                        default="latest" if (VENVS["latest"] / "bin" / "python").exists() else "bundled")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each server (OMP_NUM_THREADS)")
    parser.add_argument("--limit", type=float, default=1800, help="seconds the 50 prompts may take")
    parser.add_argument("--name", default="soak")
    args = parser.parse_args()
    reexec_on(args.host)

    load_before = os.getloadavg()
    items = plan()
    version = host_version()
    print(f"ComfyUI {version}: {len(items)} prompts, {sum(1 for i in items if i['interrupt_node'])} to interrupt; "
          f"load average {load_before[0]:.1f} on {os.cpu_count()} cores", flush=True)

    server = start_server(args.threads)
    try:
        run = asyncio.run(soak(server, items, args.limit))
        fetch_pictures(server, items)
    finally:
        server.stop()
    load_during = os.getloadavg()
    print("the good prompts again, alone, on a fresh server", flush=True)
    reference = start_server(args.threads)
    try:
        started = time.monotonic()
        reference_pictures(reference, items)
        reference_seconds = time.monotonic() - started
    finally:
        reference.stop()
    load_after = os.getloadavg()

    rows = []
    for kind in KINDS + LONG_KINDS:
        mine = [i for i in items if i["kind"] == kind]
        good = [i for i in mine if not i["interrupt_node"]]
        identical = sum(1 for i in good if "png" in i and "reference_png" in i
                        and (pixels(i["png"]) == pixels(i["reference_png"])).all())
        rows.append({
            "workflow": kind, "prompts": len(mine),
            "succeeded": sum(1 for i in mine if i.get("status") == "success"),
            "interrupted": sum(1 for i in mine if i.get("status") == "interrupted"),
            "failed": sum(1 for i in mine if i.get("status") == "error"),
            "identical_to_fresh": f"{identical}/{len(good)}" if good else "",
            "median_s": round(sorted(i["finished"] - i.get("started", i["finished"]) for i in mine)[len(mine) // 2], 2),
            "interrupted_at": ", ".join(i["interrupted_at"] for i in mine if "interrupted_at" in i),
            "stopped_within_s": round(max((i["finished"] - i["interrupt_sent"] for i in mine if "interrupt_sent" in i),
                                          default=0), 2) or "",
        })
    good = [i for i in items if not i["interrupt_node"]]
    long = [i for i in items if i["interrupt_node"]]
    identical = sum(1 for i in good if "png" in i and "reference_png" in i
                    and (pixels(i["png"]) == pixels(i["reference_png"])).all())
    same_bytes = sum(1 for i in good if i.get("png") is not None and i.get("png") == i.get("reference_png"))
    rss5, rss50 = run["rss_after"][5], run["rss_after"][len(items)]
    summary = {
        "comfyui": version, "prompts": len(items), "good": len(good), "interrupt_targets": len(long),
        "succeeded": sum(1 for i in good if i.get("status") == "success"),
        "interrupted": sum(1 for i in long if i.get("status") == "interrupted"),
        "errors": [f"#{i['position']} {i['kind']}: {i['error']}" for i in items if i.get("status") == "error"],
        "not_interrupted": [f"#{i['position']} {i['kind']}: {i.get('status')}" for i in long
                            if i.get("status") != "interrupted"],
        "identical_to_fresh_server": identical, "identical_png_bytes": same_bytes,
        "rss_after_5_mib": round(rss5 / 2**20, 1), "rss_after_50_mib": round(rss50 / 2**20, 1),
        "rss_growth_pct": round(100 * (rss50 / rss5 - 1), 1), "rss_peak_mib": round(run["rss_peak"] / 2**20, 1),
        "within_10_pct": rss50 <= 1.10 * rss5,
        "soak_seconds": round(run["seconds"], 1), "reference_seconds": round(reference_seconds, 1),
        "threads": args.threads,
        "load_average_1min": {"before": round(load_before[0], 2), "after_soak": round(load_during[0], 2),
                              "after_reference": round(load_after[0], 2)},
        "order": [f"#{i['position']:02d} {i['kind']} {i.get('status')}" for i in items],
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "order"}, indent=1))
    notes = [
        f"ComfyUI {version}; {len(items)} prompts queued at once through POST /prompt on a fresh server "
        f"(main.py --cpu, {args.threads} CPU thread), the demo model; {len(long)} long ones interrupted "
        f"(POST /interrupt with their prompt_id) after their node's first progress ticks",
        f"Server RSS after the first 5 prompts {summary['rss_after_5_mib']:.0f} MiB, after all {len(items)} "
        f"{summary['rss_after_50_mib']:.0f} MiB ({summary['rss_growth_pct']:+.1f}%, target within 10%: "
        f"{'met' if summary['within_10_pct'] else 'missed'}); peak {summary['rss_peak_mib']:.0f} MiB",
        f"{summary['succeeded']}/{len(good)} good prompts succeeded, {summary['interrupted']}/{len(long)} "
        f"interrupted; {identical}/{len(good)} pictures identical (pixels) to the same prompt run alone on a "
        f"fresh server ({same_bytes} byte for byte)",
        f"Wall time: soak {summary['soak_seconds']:.0f} s, the good prompts alone on the fresh server "
        f"{summary['reference_seconds']:.0f} s",
        f"Machine load (1-min load average; the machine is shared): {load_before[0]:.1f} before, "
        f"{load_during[0]:.1f} after the soak, {load_after[0]:.1f} after the reference run, on "
        f"{os.cpu_count()} cores",
        "interrupted_at: the node's progress (value/max) when the interrupt was sent; stopped_within_s: the "
        "longest time from the interrupt to the prompt's end",
    ]
    if summary["errors"] or summary["not_interrupted"]:
        notes.append("Not as planned: " + "; ".join(summary["errors"] + summary["not_interrupted"]))
    common.write_results(args.name, rows, ["workflow", "prompts", "succeeded", "interrupted", "failed",
                                           "identical_to_fresh", "median_s", "interrupted_at", "stopped_within_s"],
                         f"Soak: {len(items)} mixed prompts queued at once, {len(long)} interrupted mid-node "
                         f"(ComfyUI {version})", notes)
    name = f"{args.name}_gpu" if common.machine()["device"] != "cpu" else args.name
    path = common.RESULTS / f"{name}.json"
    record = json.loads(path.read_text())
    record["summary"] = summary
    path.write_text(json.dumps(record, indent=2))
    if not (summary["within_10_pct"] and identical == len(good) and not summary["errors"]
            and not summary["not_interrupted"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
