"""The example workflows, and the pack under load, interruption and bad input, through a real
ComfyUI server (main.py --cpu) driven only through its HTTP API."""
from __future__ import annotations

import copy
import io
import json
import pathlib
import threading
import time
import urllib.parse
import uuid

import numpy as np
import psutil
import pytest
from PIL import Image

from expanse_harness import workflows as wf
from expanse_harness.host import ROOT, comfy_dir

WORKFLOW_DIR = ROOT / "example_workflows"
WORKFLOW_FILES = sorted(WORKFLOW_DIR.glob("*.json"))  # named by their titles (examples.TEMPLATES)
FRONTEND_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}  # the frontend's own, never queued
CORE_MODULES = ("nodes", "comfy_extras.", "comfy_api_nodes.")
TEST_SIDE = 128  # the largest canvas of a test run, in pixels
TEST_STEPS = 2
DEMO = {"class_type": "ExpanseDemoModelLoader", "inputs": {"weights": wf.DEMO_WEIGHTS}}


def template_id(path: pathlib.Path) -> str:
    """The id of a workflow file's template (examples.TEMPLATES), for test ids and DEMO_RUNS; a file
    no template writes keeps its name (the first test below fails on it)."""
    try:
        return wf.template_for(path).id
    except KeyError:
        return path.stem


def pack_folder() -> str:
    """The pack's folder name in the host's custom_nodes (a link to this checkout)."""
    for entry in (comfy_dir() / "custom_nodes").iterdir():
        if entry.resolve() == ROOT:
            return entry.name
    pytest.fail(f"this checkout is not linked into {comfy_dir() / 'custom_nodes'}")


@pytest.fixture(scope="module")
def server(one_thread_server):
    return one_thread_server  # many small runs: one CPU thread (conftest.one_thread_server)


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def finish(server, prompt: dict, timeout: float = 600) -> dict:
    status, answer = server.queue(prompt)
    assert status == 200, answer
    return server.wait(answer["prompt_id"], timeout=timeout)


def picture(server, entry: dict) -> np.ndarray:
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = server.images(entry)
    assert images, "the prompt saved no picture"
    return np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB")).astype(np.float32) / 255.0


def error_text(entry: dict) -> str:
    return json.dumps(entry["status"]["messages"])


# --- the workflow files -------------------------------------------------------------------------

def test_there_is_a_workflow_for_every_example_and_each_has_a_thumbnail():
    assert {p.stem for p in WORKFLOW_FILES} == {t.title for t in wf.TEMPLATES.values()}
    for path in WORKFLOW_FILES:
        thumb = path.with_suffix(".jpg")
        assert thumb.exists(), f"{thumb.name} is missing: run scripts/workflows.py"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and max(im.size) <= 512


def test_every_workflow_is_listed_by_the_template_browser(server):
    templates = server.get("/workflow_templates")
    folder = pack_folder()
    assert sorted(templates.get(folder, [])) == sorted(p.stem for p in WORKFLOW_FILES), templates.get(folder)
    # The frontend fetches the workflow and its thumbnail from here.
    for path in WORKFLOW_FILES:  # file names with spaces and brackets: quoted as a browser quotes them
        assert server.get(urllib.parse.quote(f"/api/workflow_templates/{folder}/{path.name}")) == load(path)
        status, body = server.request("GET", urllib.parse.quote(f"/api/workflow_templates/{folder}/{path.stem}.jpg"))
        assert status == 200 and body[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=template_id)
def test_workflow_nodes_exist_and_come_from_comfyui_or_this_pack(path, object_info):
    ours = f"custom_nodes.{pack_folder()}"
    for node in load(path)["nodes"]:
        if node["type"] in FRONTEND_NODES:
            continue
        assert node["type"] in object_info, f"{path.name}: node {node['id']} {node['type']} is missing"
        module = object_info[node["type"]]["python_module"]
        assert module == ours or module.startswith(CORE_MODULES), f"{node['type']} comes from {module}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=template_id)
def test_workflow_is_in_the_frontends_save_format(path, defs):
    ui = load(path)
    assert ui["version"] == 0.4 and {"groups", "config", "extra"} <= set(ui)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == len(ui["links"])
    assert any(n["type"] == "Note" and n["widgets_values"][0] for n in ui["nodes"]), "no Note explains it"
    for link_id, from_node, from_slot, to_node, to_slot, kind in ui["links"]:
        assert link_id in nodes[from_node]["outputs"][from_slot]["links"]
        target = nodes[to_node]["inputs"][to_slot]
        assert target["link"] == link_id and kind == nodes[from_node]["outputs"][from_slot]["type"]
    for node in ui["nodes"]:
        assert set(node) >= {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs",
                             "properties", "widgets_values"}
        if node["type"] in FRONTEND_NODES:
            continue
        definition = defs[node["type"]]
        assert node["properties"]["Node name for S&R"] == node["type"]
        assert len(node["widgets_values"]) == len(definition.widgets), node["type"]
        assert [i["name"] for i in node["inputs"]] == [i["name"] for i in definition.inputs]
        for slot, entry in zip(node["inputs"], definition.inputs):
            assert ("widget" in slot) == entry["widget"], (node["type"], slot)
    # A checkpoint template loads SD1.5 or SDXL and carries its download; a demo template loads the
    # demo model and nothing to download.
    loaders = [n for n in ui["nodes"] if n["type"] == "CheckpointLoaderSimple"]
    demo = [n for n in ui["nodes"] if n["type"] == "ExpanseDemoModelLoader"]
    if wf.template_for(path).demo:
        assert demo and not loaders and all(n["widgets_values"][0] == wf.DEMO_WEIGHTS for n in demo)
    else:
        assert loaders and not demo and all(n["widgets_values"][0] in (wf.SD15, wf.SDXL) for n in loaders)
        for node in loaders:
            name = node["widgets_values"][0]
            assert node["properties"]["models"] == [{"name": name, "url": wf.MODEL_URLS[name],
                                                     "directory": "checkpoints"}]


def as_this_host_declares(ui: dict, defs) -> dict:
    """The committed workflow less the unlinked outputs this host's nodes do not declare. The
    files are written on the newest host, whose ComfyUI nodes may have gained outputs (0.33.0's
    SaveImage and PreviewImage return their `images`); inputs and widgets are never dropped."""
    ui = copy.deepcopy(ui)
    for node in ui["nodes"]:
        if node["type"] in FRONTEND_NODES:
            continue
        declared = {o["name"] for o in defs[node["type"]].outputs}
        node["outputs"] = [o for o in node["outputs"] if o["name"] in declared or o.get("links")]
    return ui


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=template_id)
def test_workflow_file_is_what_the_generator_writes(path, defs):
    """The files are generated: a node whose inputs changed shows up here (the frontend reads
    widgets_values by position, so a stale file would load with its values shifted)."""
    committed = load(path)
    assert wf.WORKFLOWS[template_id(path)](defs).to_ui() == as_this_host_declares(committed, defs), \
        "run scripts/workflows.py on the newest host (.venv-latest/bin/python)"


def test_ui_to_api_follows_the_frontend(defs):
    ui = load(wf.TEMPLATES["tiled_diffusion_panorama"].path)
    api = wf.ui_to_api(ui, defs)
    assert not any(n["class_type"] == "Note" for n in api.values())
    sampler = next(n for n in api.values() if n["class_type"] == "KSampler")
    # widgets_values [seed, "fixed", steps, cfg, sampler, scheduler, denoise]: the control value skipped
    assert {k: v for k, v in sampler["inputs"].items() if not isinstance(v, list)} == {
        "seed": 7, "steps": 30, "cfg": 7, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1}
    tiled = next(n for n in api.values() if n["class_type"] == "ExpanseTiledDiffusion")
    assert tiled["inputs"]["seed"] == 0 and tiled["inputs"]["tile_batch_size"] == 4  # no control value there
    assert sampler["inputs"]["model"] == [next(k for k, n in api.items() if n is tiled), 0]


def test_scale_for_the_demo_model(defs):
    ui = load(wf.TEMPLATES["tiled_diffusion_panorama"].path)
    demo = wf.demo_settings("tiled_diffusion_panorama", defs)
    api = wf.for_demo(wf.ui_to_api(ui, defs), demo, scale=4, steps=3)
    kinds = {n["class_type"]: n["inputs"] for n in api.values()}
    assert "CheckpointLoaderSimple" not in kinds and kinds["ExpanseDemoModelLoader"] == {"weights": wf.DEMO_WEIGHTS}
    assert (kinds["EmptyLatentImage"]["width"], kinds["EmptyLatentImage"]["height"]) == (768, 256)
    assert (kinds["ExpanseTiledDiffusion"]["tile_width"], kinds["ExpanseTiledDiffusion"]["overlap"]) == (192, 32)
    assert kinds["KSampler"]["steps"] == 3
    texts = {n["_meta"]["title"]: n["inputs"]["text"] for n in api.values() if n["class_type"] == "CLIPTextEncode"}
    assert texts == {"Positive prompt": demo["prompts"]["Positive prompt"], "Negative prompt": ""}


# --- each workflow runs ---------------------------------------------------------------------------

def run_scale(ui: dict, demo: dict) -> float:
    """The factor that brings the workflow's largest canvas to TEST_SIDE px, and its input pictures
    (which it may upscale) to half that."""
    sides = [side for node in ui["nodes"] if node["type"] == "EmptyLatentImage" for side in node["widgets_values"][:2]]
    sides += [2 * side for w, h, _ in demo.get("images", {}).values() for side in (w, h)]
    return max(sides) / TEST_SIDE


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=template_id)
def test_workflow_runs_with_the_demo_model(path, server, defs):
    ui = load(path)
    demo = wf.demo_settings(template_id(path), defs)
    scale = run_scale(ui, demo)
    wf.upload_demo_images(server, demo, scale=scale, steps=TEST_STEPS)
    prompt = wf.for_demo(wf.ui_to_api(ui, defs), demo, scale=scale, steps=TEST_STEPS,
                         prefix=f"e2e_{template_id(path)}")
    entry = finish(server, prompt)
    result = picture(server, entry)
    assert result.ndim == 3 and min(result.shape[:2]) >= 32
    assert np.isfinite(result).all() and result.std() > 0.01


# --- load, interruption, bad input ----------------------------------------------------------------

def tiled_prompt(size: int, tile: int, steps: int, seed: int, prefix: str, width: int | None = None) -> dict:
    """Demo model -> TiledDiffusion -> KSampler -> TiledVAEDecode -> SaveImage."""
    prompt = wf.picture_prompt(width or size, size, "a day sky with clouds over a green field", steps=steps,
                               seed=seed, prefix=prefix)
    prompt["tiled"] = {"class_type": "ExpanseTiledDiffusion",
                       "inputs": {"model": ["model", 0], "method": "multidiffusion", "tile_width": tile,
                                  "tile_height": tile, "overlap": tile // 2, "tile_batch_size": 4, "seed": 0}}
    prompt["sample"]["inputs"]["model"] = ["tiled", 0]
    prompt["decode"] = {"class_type": "ExpanseTiledVAEDecode",
                        "inputs": {"samples": ["sample", 0], "vae": ["model", 2], "tile_size": 64, "mode": "exact",
                                   "padding": 96}}
    return prompt


def test_twenty_prompts_back_to_back_finish_and_memory_settles(server):
    process = psutil.Process(server.proc.pid)
    picture(server, finish(server, tiled_prompt(64, 64, 2, seed=1000, prefix="e2e_load", width=128)))
    warm = process.memory_info().rss
    ids = []
    for seed in range(20):  # different seeds: nothing is served from the cache
        status, answer = server.queue(tiled_prompt(64, 64, 2, seed=seed, prefix="e2e_load", width=128))
        assert status == 200, answer
        ids.append(answer["prompt_id"])
    for prompt_id in ids:
        assert server.wait(prompt_id, timeout=600)["status"]["status_str"] == "success"
    after = process.memory_info().rss
    print(f"server RSS after the warm-up {warm / 2**20:.0f} MiB, after 20 more prompts {after / 2**20:.0f} MiB")
    assert after <= 1.10 * warm, f"RSS grew from {warm / 2**20:.0f} MiB to {after / 2**20:.0f} MiB"


def test_interrupt_stops_a_tiled_run_and_leaves_no_state_behind(server):
    small = tiled_prompt(128, 64, 4, seed=21, prefix="e2e_interrupt")
    before = picture(server, finish(server, small))

    # Same node ids, same TiledDiffusion settings (its patched model is reused from the cache),
    # a large canvas: 225 tiles a step for 60 steps.
    long_run = tiled_prompt(512, 64, 60, seed=22, prefix="e2e_interrupt")
    client_id = uuid.uuid4().hex
    status, answer = server.queue(long_run, client_id)
    assert status == 200, answer
    prompt_id = answer["prompt_id"]
    steps: list[int] = []  # the sampler's progress, from the websocket
    follow = threading.Thread(target=server.wait, daemon=True, kwargs=dict(
        prompt_id=prompt_id, timeout=300, client_id=client_id,
        on_progress=lambda value, maximum, node: steps.append(value) if node == "sample" else None))
    follow.start()
    deadline = time.monotonic() + 180
    while not steps or steps[-1] < 2:  # in the middle of the tiled sampling
        assert time.monotonic() < deadline and follow.is_alive(), "the long run never got going"
        time.sleep(0.05)
    interrupted_at = time.monotonic()
    assert server.post_json("/interrupt", {})[0] == 200
    entry = server.wait(prompt_id, timeout=60)
    stopped_after = time.monotonic() - interrupted_at
    follow.join(timeout=30)
    print(f"interrupted at step {steps[-1]} of 60; history said so {stopped_after:.2f} s later")
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in error_text(entry)
    assert steps[-1] < 60 and stopped_after < 10, f"stopped at step {steps[-1]} of 60, {stopped_after:.1f} s after"

    entry = finish(server, small)
    cached = next(m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached")
    assert "sample" not in cached  # sampled again, through the patch the interrupted run used
    after = picture(server, entry)
    assert np.array_equal(before, after)


def base_prompt(prefix: str = "e2e_bad") -> dict:
    return tiled_prompt(128, 64, 2, seed=5, prefix=prefix)


def with_region(prompt: dict, **region) -> dict:
    prompt["region_text"] = {"class_type": "CLIPTextEncode",
                             "inputs": {"clip": ["model", 1], "text": "red and yellow checks"}}
    inputs = {"conditioning": ["positive", 0], "region_conditioning": ["region_text", 0], "x": 0.5, "y": 0.0,
              "width": 0.5, "height": 1.0, "type": "foreground", "feather": 0.1, "strength": 1.0,
              "canvas_width": 128, "canvas_height": 128}
    prompt["region"] = {"class_type": "ExpanseRegionPrompt", "inputs": dict(inputs, **region)}
    prompt["sample"]["inputs"]["positive"] = ["region", 0]
    return prompt


def with_grow(prompt: dict, **settings) -> dict:
    inputs = {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
              "latent_image": ["latent", 0], "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
              "scheduler": "normal", "min_scale": 0.5, "max_scale": 1.0, "stages": 2, "spacing": "geometric",
              "refine": True, "denoise_second": 0.5, "denoise_last": 0.35, "refine_steps": 1,
              "upscale_method": "bislerp", "stage_noise": 0.0}
    prompt["sample"] = {"class_type": "ExpanseProgressiveGrowSampler", "inputs": dict(inputs, **settings)}
    return prompt


def with_upscale(prompt: dict, **settings) -> dict:
    inputs = {"samples": ["sample", 0], "upscale_method": "bislerp", "scale_by": 1.5, "width": 0, "height": 0,
              "antialias": True}
    prompt["upscale"] = {"class_type": "ExpanseLatentUpscaleAdvanced", "inputs": dict(inputs, **settings)}
    prompt["decode"]["inputs"]["samples"] = ["upscale", 0]
    return prompt


def with_chess(prompt: dict, **settings) -> dict:
    inputs = {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0], "vae": ["model", 2],
              "latent": ["sample", 0], "upscale_by": 1.5, "seed": 1, "steps": 1, "cfg": 5.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 0.3, "tile_width": 64, "tile_height": 64, "padding": 16,
              "mask_feather": 8, "tile_batch_size": 4, "redraw_order": "chess", "seam_fix": "none",
              "seam_fix_denoise": 0.3, "seam_fix_width": 16, "seam_fix_feather": 8}
    prompt["chess"] = {"class_type": "ExpanseChessTileRedraw", "inputs": dict(inputs, **settings)}
    prompt["save"]["inputs"]["images"] = ["chess", 0]
    return prompt


def with_encode(prompt: dict, **settings) -> dict:
    inputs = {"pixels": ["decode", 0], "vae": ["model", 2], "tile_size": 64, "mode": "exact", "padding": 64}
    prompt["encode"] = {"class_type": "ExpanseTiledVAEEncode", "inputs": dict(inputs, **settings)}
    prompt["redecode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["encode", 0], "vae": ["model", 2]}}
    prompt["save"]["inputs"]["images"] = ["redecode", 0]
    return prompt


def set_input(node: str, **values):
    def change(prompt: dict) -> dict:
        prompt[node]["inputs"].update(values)
        return prompt
    return change


# (name, how to break the base prompt, node id, words the answer must hold)
REFUSED_AT_QUEUE = [
    ("TiledDiffusion overlap >= tile", set_input("tiled", overlap=64), "tiled", ["overlap", "must be smaller"]),
    ("RegionPrompt x + width > 1", lambda p: with_region(p, x=0.8, width=0.5), "region", ["x + width"]),
    ("RegionPrompt y + height > 1", lambda p: with_region(p, y=0.7, height=0.5), "region", ["y + height"]),
    ("LatentUpscaleAdvanced scale_by < 0", lambda p: with_upscale(p, scale_by=-1.0), "upscale", ["scale_by"]),
    ("ChessTileRedraw upscale_by < 1", lambda p: with_chess(p, upscale_by=0.5), "chess", ["upscale_by"]),
    ("ChessTileRedraw denoise > 1", lambda p: with_chess(p, denoise=1.5), "chess", ["denoise"]),
    ("ProgressiveGrowSampler stages 0", lambda p: with_grow(p, stages=0), "sample", ["stages"]),
    ("TiledVAEDecode tile_size < 0", set_input("decode", tile_size=-8), "decode", ["tile_size"]),
    ("TiledVAEEncode tile_size > max", lambda p: with_encode(p, tile_size=99999), "encode", ["tile_size"]),
]
# A node's validate_inputs turns ComfyUI's own min/max check off for the inputs it names (and for
# all of them if it takes **kwargs): these check that ours leave the others checked and range-check
# the ones they name.
REFUSED_AT_QUEUE += [
    ("TiledDiffusion tile_batch_size 0", set_input("tiled", tile_batch_size=0), "tiled", ["tile_batch_size"]),
    ("TiledDiffusion tile_width below its min", set_input("tiled", tile_width=8), "tiled", ["tile_width"]),
    ("RegionPrompt canvas_width below its min", lambda p: with_region(p, canvas_width=8), "region", ["canvas_width"]),
]

# Inputs ComfyUI cannot check before running (a combination of values, a combo of a V3 node):
# the run fails with a message that names the input.
REFUSED_AT_RUN = [
    ("ProgressiveGrowSampler min_scale > max_scale", lambda p: with_grow(p, min_scale=0.8, max_scale=0.5),
     ["min_scale", "max_scale"]),
    ("ChessTileRedraw tile larger than the picture",
     lambda p: with_chess(p, tile_width=512, tile_height=512), ["tile_width", "tile_height"]),
    ("LatentUpscaleAdvanced no size", lambda p: with_upscale(p, scale_by=0.0, width=0, height=0), ["scale_by"]),
    ("TiledVAEEncode tile below the VAE's minimum", lambda p: with_encode(p, tile_size=16), ["tile_size"]),
]


@pytest.mark.parametrize("name, breaking, node, words", REFUSED_AT_QUEUE,
                         ids=[(c.values if hasattr(c, "values") else c)[0] for c in REFUSED_AT_QUEUE])
def test_bad_input_is_refused_with_node_errors_naming_it(server, name, breaking, node, words):
    status, answer = server.queue(breaking(base_prompt()))
    assert status == 400, answer
    errors = answer["node_errors"][node]["errors"]
    text = json.dumps(errors)
    assert all(word in text for word in words), errors
    assert server.get("/system_stats")


@pytest.mark.parametrize("name, breaking, words", REFUSED_AT_RUN, ids=[c[0] for c in REFUSED_AT_RUN])
def test_bad_input_found_at_run_time_names_it(server, name, breaking, words):
    entry = finish(server, breaking(base_prompt()))
    assert entry["status"]["status_str"] == "error"
    text = error_text(entry)
    assert "execution_error" in text and all(word in text for word in words), text


def test_missing_demo_weights_are_refused_naming_the_file(server):
    """ComfyUI 0.33.0 checks a V3 combo's value when the prompt is queued (HTTP 400,
    value_not_in_list); 0.3.75 lets it reach the node, whose own message names it."""
    status, answer = server.queue(set_input("model", weights="missing.safetensors")(base_prompt()))
    if status == 400:
        text = json.dumps(answer["node_errors"]["model"]["errors"])
        assert "value_not_in_list" in text and "weights" in text and "missing.safetensors" in text, text
    else:
        assert status == 200, answer
        entry = server.wait(answer["prompt_id"], timeout=120)
        assert entry["status"]["status_str"] == "error"
        text = error_text(entry)
        assert "execution_error" in text and "ExpanseDemoModelLoader" in text and "missing.safetensors" in text, text
    assert server.get("/system_stats")


def test_server_keeps_serving_after_bad_input(server):
    result = picture(server, finish(server, base_prompt(prefix="e2e_after_bad")))
    assert result.shape == (128, 128, 3)


# --- node metadata --------------------------------------------------------------------------------

def test_every_pack_node_has_a_category_description_and_tooltips(object_info):
    ours = {name: node for name, node in object_info.items()
            if node.get("python_module") == f"custom_nodes.{pack_folder()}"}
    assert len(ours) >= 8
    for name, node in ours.items():
        assert node["category"].startswith("Expanse/"), name
        assert node["description"].strip(), name
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip", "").strip(), f"{name}.{input_name} has no tooltip"
        assert all(t and t.strip() for t in node.get("output_tooltips", [])), f"{name} has an output without tooltip"
        assert len(node.get("output_tooltips", [])) == len(node["output"]), name
