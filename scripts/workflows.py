"""The example workflows in example_workflows/: built from compact graph descriptions, written as
UI-format JSON the way ComfyUI's frontend saves a workflow, each with a thumbnail drawn by the
pack's demo model.

    .venv/bin/python scripts/workflows.py                  # start a server, write every JSON and .jpg
    .venv/bin/python scripts/workflows.py --only tiled_diffusion_panorama
    .venv/bin/python scripts/workflows.py --no-thumbnails --object-info object_info.json
    .venv/bin/python scripts/workflows.py --url http://127.0.0.1:8188   # use a running server
    .venv/bin/python scripts/workflows.py --threads 0   # the server with torch's own thread count (default 1)

How it works:
- `Graph` holds a workflow's nodes as the user would wire them (`graph.add(type, title, **inputs)`,
  an input being a value or another node's output) and its `Note`s. The node definitions
  (`/object_info`, from a server or a saved file) give each node its inputs in the frontend's
  order, which of them are widgets, their defaults, and which INT inputs carry the extra
  `control_after_generate` value in widgets_values.
- `Graph.to_ui()` writes the frontend's save format (LGraph.serialize, version 0.4): nodes laid out
  left to right by depth, sockets first and widget inputs after them (as the frontend adds them),
  links as [id, from_node, from_slot, to_node, to_slot, type].
- `ui_to_api()` converts a UI workflow back to the API prompt the frontend would queue (graphToPrompt:
  widget values in widget order with the control values skipped, links as [node_id, slot], Note
  nodes dropped), and `for_demo()` swaps the checkpoint loader for DemoModelLoader, the prompts for
  ones the demo model knows, and scales sizes, tiles and steps down so the workflow runs on a CPU.
  The end-to-end tests use the same two functions on the files this script writes.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import pathlib
import sys
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from comfy_server import ROOT, ComfyServer  # noqa: E402

OUT_DIR = ROOT / "example_workflows"
FRONTEND_VERSION = "1.32.9"
DEMO_WEIGHTS = "expanse-demo.safetensors"
SD15 = "v1-5-pruned-emaonly.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
EXAMPLE_IMAGE = "example.png"  # ComfyUI ships input/example.png; users pick their own picture

WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}  # frontend-only, never queued
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
MODE_NEVER, MODE_BYPASS = 2, 4
OPTIONAL_SHAPE, LIST_SHAPE = 7, 6  # litegraph RenderShape.HollowCircle, LiteGraph.GRID_SHAPE


# --- node definitions (/object_info) -----------------------------------------------------------

class Widget:
    """One entry of a node's widgets_values: an input's widget, or a frontend-only companion
    (control_after_generate, the image upload button) that the API prompt never carries."""

    def __init__(self, name: str, input_name: str | None, default=None):
        self.name, self.input_name, self.default = name, input_name, default

    @property
    def serialized(self) -> bool:
        return self.input_name is not None


class NodeDef:
    """A node type as the frontend builds it from /object_info: its input sockets (widget inputs
    too, after the others), its widgets in widgets_values order, and its outputs."""

    def __init__(self, name: str, info: dict):
        self.name, self.info = name, info
        order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
        specs = []
        for section in ("required", "optional"):
            for input_name in order.get(section, []):
                spec = info["input"][section][input_name]
                specs.append((input_name, spec, section == "optional"))
        self.inputs: list[dict] = []  # {"name", "type", "optional", "widget"}
        self.widgets: list[Widget] = []
        sockets, widget_inputs = [], []
        for input_name, spec, optional in specs:
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(kind, list):
                kind = "COMBO"
            entry = {"name": input_name, "type": kind, "optional": optional, "options": opts}
            if kind in WIDGET_TYPES and not opts.get("forceInput"):
                widget_inputs.append(entry)
            else:
                sockets.append(entry)
        for entry in sockets:
            self.inputs.append(dict(entry, widget=False))
        for entry in widget_inputs:
            name, opts = entry["name"], entry["options"]
            self.inputs.append(dict(entry, widget=True))
            self.widgets.append(Widget(name, name, _default(entry)))
            if entry["type"] == "INT" and opts.get("control_after_generate", name in ("seed", "noise_seed")):
                self.widgets.append(Widget("control_after_generate", None, "fixed"))
            elif entry["type"] == "COMBO" and opts.get("control_after_generate"):
                self.widgets.append(Widget("control_after_generate", None, "fixed"))
                self.widgets.append(Widget("control_filter_list", None, ""))
            if opts.get("image_upload"):  # LoadImage's upload button: a widget and a socket of its own
                self.inputs.append({"name": "upload", "type": "IMAGEUPLOAD", "optional": False, "options": {},
                                    "widget": True})
                self.widgets.append(Widget("upload", None, "image"))
        self.outputs = [{"name": n, "type": t, "is_list": bool(lst)}
                        for n, t, lst in zip(info["output_name"], info["output"],
                                             info.get("output_is_list") or [False] * len(info["output"]))]

    def input(self, name: str) -> dict:
        for entry in self.inputs:
            if entry["name"] == name:
                return entry
        raise KeyError(f"{self.name} has no input {name!r}; it has {[i['name'] for i in self.inputs]}")

    def output_index(self, key) -> int:
        if isinstance(key, int):
            return key
        names = [o["name"] for o in self.outputs]
        if key in names:
            return names.index(key)
        types = [o["type"] for o in self.outputs]
        if types.count(key) == 1:
            return types.index(key)
        raise KeyError(f"{self.name} has no output {key!r}; it has {names}")


def _default(entry: dict):
    opts = entry["options"]
    if "default" in opts:
        return opts["default"]
    if entry["type"] == "COMBO":
        values = opts.get("options") or []
        return values[0] if values else ""
    return {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}.get(entry["type"])


class Definitions:
    """/object_info, with the frontend's own Note nodes added."""

    def __init__(self, object_info: dict):
        self.object_info = object_info
        self._defs: dict[str, NodeDef] = {}

    def __getitem__(self, name: str) -> NodeDef:
        if name not in self._defs:
            if name not in self.object_info:
                raise KeyError(f"node type {name!r} is not in /object_info")
            self._defs[name] = NodeDef(name, self.object_info[name])
        return self._defs[name]


# --- compact graph descriptions -----------------------------------------------------------------

class Out:
    """An output of a node in a Graph: what an input is wired to."""

    def __init__(self, node: "Node", slot: int):
        self.node, self.slot = node, slot


class Node:
    def __init__(self, graph: "Graph", node_id: int, type_: str, title: str | None, inputs: dict):
        self.graph, self.id, self.type, self.title, self.inputs = graph, node_id, type_, title, inputs

    def __getitem__(self, key) -> Out:
        return Out(self, self.graph.defs[self.type].output_index(key))


class Graph:
    """A workflow as the user wires it; to_ui() writes it in the frontend's save format.

    demo: what the thumbnail (and the end-to-end test) changes to run it with the demo model:
      prompts: CLIPTextEncode title -> text the demo model knows (other prompts become "");
      scale: sizes, tiles and canvases are divided by it (the demo model was trained at 256 px:
        4 for SDXL's 1024 px, 2-4 for SD1.5's 512 px);
      steps: the most sampling steps any sampler runs;
      images: LoadImage file -> (width, height, demo prompt) of the picture to draw for it, at full size.
    """

    def __init__(self, name: str, defs: Definitions, demo: dict):
        self.name, self.defs, self.demo = name, defs, demo
        self.nodes: list[Node] = []
        self.notes: list[tuple[int, str, str, Node | None]] = []  # (id, title, text, next to)
        self._next_id = 1

    def _id(self) -> int:
        node_id, self._next_id = self._next_id, self._next_id + 1
        return node_id

    def add(self, type_: str, title: str | None = None, **inputs) -> Node:
        definition = self.defs[type_]
        for name in inputs:
            definition.input(name)  # fails early on a misspelt input
        for entry in definition.inputs:
            if not entry["widget"] and not entry["optional"] and entry["name"] not in inputs:
                raise ValueError(f"{self.name}: {type_} needs its {entry['name']} input connected")
        node = Node(self, self._id(), type_, title, inputs)
        self.nodes.append(node)
        return node

    def note(self, text: str, title: str = "Note", near: Node | None = None) -> None:
        self.notes.append((self._id(), title, text.strip(), near))

    # --- the frontend's save format --------------------------------------------------------------

    def to_ui(self) -> dict:
        links, node_links_in, node_links_out = [], {}, {}
        for node in self.nodes:
            definition = self.defs[node.type]
            for slot, entry in enumerate(definition.inputs):
                value = node.inputs.get(entry["name"])
                if isinstance(value, Out):
                    link_id = len(links) + 1
                    out_type = self.defs[value.node.type].outputs[value.slot]["type"]
                    links.append([link_id, value.node.id, value.slot, node.id, slot, out_type])
                    node_links_in[(node.id, entry["name"])] = link_id
                    node_links_out.setdefault((value.node.id, value.slot), []).append(link_id)

        columns = self._columns()
        order = self._execution_order()
        positions = self._layout(columns)
        ui_nodes = []
        for node in self.nodes:
            definition = self.defs[node.type]
            inputs = []
            for entry in definition.inputs:
                item = {"localized_name": entry["name"], "name": entry["name"], "type": entry["type"]}
                if entry["optional"]:
                    item["shape"] = OPTIONAL_SHAPE
                if entry["widget"]:
                    item["widget"] = {"name": entry["name"]}
                item["link"] = node_links_in.get((node.id, entry["name"]))
                inputs.append(item)
            outputs = []
            for slot, out in enumerate(definition.outputs):
                item = {"localized_name": out["name"], "name": out["name"], "type": out["type"]}
                if out["is_list"]:
                    item["shape"] = LIST_SHAPE
                item["links"] = node_links_out.get((node.id, slot))
                outputs.append(item)
            values = []
            for widget in definition.widgets:
                if widget.input_name is None:
                    values.append(widget.default)
                    continue
                value = node.inputs.get(widget.input_name, widget.default)
                values.append(None if isinstance(value, Out) else _js_number(value))
            entry = {"id": node.id, "type": node.type, "pos": positions[node.id], "size": self._size(node),
                     "flags": {}, "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": outputs}
            if node.title:
                entry["title"] = node.title
            entry["properties"] = {"Node name for S&R": node.type}
            entry["widgets_values"] = values
            ui_nodes.append(entry)
        for note_id, title, text, _ in self.notes:
            entry = {"id": note_id, "type": "Note", "pos": positions[note_id], "size": _note_size(text),
                     "flags": {}, "order": order[note_id], "mode": 0, "inputs": [], "outputs": []}
            if title != "Note":
                entry["title"] = title
            entry.update({"properties": {}, "widgets_values": [text], "color": NOTE_COLOR, "bgcolor": NOTE_BGCOLOR})
            ui_nodes.append(entry)
        ui_nodes.sort(key=lambda n: n["id"])
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/expanse-nodes/expanse/{self.name}")),
            "revision": 0,
            "last_node_id": self._next_id - 1,
            "last_link_id": len(links),
            "nodes": ui_nodes,
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}, "frontendVersion": FRONTEND_VERSION},
            "version": 0.4,
        }

    def _parents(self, node: Node) -> list[Node]:
        return [v.node for v in node.inputs.values() if isinstance(v, Out)]

    def _columns(self) -> dict[int, int]:
        """Each node's column: one left of its nearest consumer (so an Empty Latent Image or a
        region's prompt sits next to the node it feeds); an output node, after the longest chain of
        links that leads to it."""
        depth: dict[int, int] = {}

        def visit(node: Node) -> int:
            if node.id not in depth:
                depth[node.id] = 1 + max((visit(p) for p in self._parents(node)), default=-1)
            return depth[node.id]

        for node in self.nodes:
            visit(node)
        consumers: dict[int, list[Node]] = {}
        for node in self.nodes:
            for parent in self._parents(node):
                consumers.setdefault(parent.id, []).append(node)
        column: dict[int, int] = {}
        for node in sorted(self.nodes, key=lambda n: -depth[n.id]):  # consumers before their inputs
            users = consumers.get(node.id)
            column[node.id] = min(column[u.id] for u in users) - 1 if users else depth[node.id]
        return column

    def _execution_order(self) -> dict[int, int]:
        """The frontend's `order`: nodes without inputs first (notes among them), then by dependency."""
        order: dict[int, int] = {}
        sources = [n.id for n in self.nodes if not self._parents(n)] + [n[0] for n in self.notes]
        for node_id in sorted(sources):
            order[node_id] = len(order)
        remaining = [n for n in self.nodes if n.id not in order]
        while remaining:
            ready = [n for n in remaining if all(p.id in order for p in self._parents(n))]
            for node in sorted(ready, key=lambda n: n.id):
                order[node.id] = len(order)
            remaining = [n for n in remaining if n.id not in order]
        return order

    def _size(self, node: Node) -> list[int]:
        definition = self.defs[node.type]
        sockets = sum(1 for i in definition.inputs if not i["widget"])
        rows = max(sockets, len(definition.outputs), 1)
        height = 26 + rows * 22 + len(definition.widgets) * 24
        width = 320
        if node.type == "CLIPTextEncode":
            width, height = 420, 200
        elif node.type in ("SaveImage", "PreviewImage"):
            width, height = 420, 460
        elif node.type == "LoadImage":
            width, height = 320, 420
        elif node.type == "RegionPrompt":
            height += 300  # the region editor's picture of the canvas
        return [width, height]

    def _layout(self, columns: dict[int, int]) -> dict[int, list[int]]:
        """Columns left to right by depth; in each column its nodes, then the notes about them."""
        by_column: dict[int, list] = {}
        for node in self.nodes:
            by_column.setdefault(columns[node.id], []).append((node.id, self._size(node)))
        for note_id, _, text, near in self.notes:
            column = columns[near.id] if near is not None else 0
            by_column.setdefault(column, [])
            item = (note_id, _note_size(text))
            if near is None:
                by_column[column].insert(0, item)
            else:
                by_column[column].append(item)
        positions, x = {}, 40
        for column in sorted(by_column):
            y, width = 60, 0
            for node_id, size in by_column[column]:
                positions[node_id] = [x, y]
                y += size[1] + 70  # the title bar (30) and a gap
                width = max(width, size[0])
            x += width + 60
        return positions


def _js_number(value):
    """JSON.stringify writes 7.0 as 7."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    return value


def _note_size(text: str) -> list[int]:
    lines = sum(max(1, math.ceil(len(line) / 52)) for line in text.splitlines()) or 1
    return [400, 30 + 18 * lines]


# --- UI format -> API prompt -------------------------------------------------------------------

def ui_to_api(workflow: dict, defs: Definitions) -> dict:
    """The API prompt the frontend queues for a saved workflow (its graphToPrompt): every widget's
    value by name from widgets_values (control_after_generate and the upload button skipped),
    linked inputs as [source node id, output slot], frontend-only nodes and muted nodes left out."""
    links = {link[0]: link for link in workflow["links"]}
    kept = {n["id"] for n in workflow["nodes"]
            if n["type"] not in VIRTUAL_NODES and n.get("mode", 0) not in (MODE_NEVER, MODE_BYPASS)}
    prompt = {}
    for node in workflow["nodes"]:
        if node["id"] not in kept:
            continue
        definition = defs[node["type"]]
        inputs = {}
        for widget, value in zip(definition.widgets, node.get("widgets_values") or []):
            if widget.serialized:
                inputs[widget.input_name] = {"__value__": value} if isinstance(value, list) else value
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            _, from_node, from_slot, *_ = links[slot["link"]]
            if from_node in kept:
                inputs[slot["name"]] = [str(from_node), int(from_slot)]
            else:
                inputs.pop(slot["name"], None)
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node.get("title") or node["type"]}}
    return prompt


# --- running a workflow with the demo model ------------------------------------------------------

# Pixel sizes divided by the demo scale: (node type, input) -> smallest value after scaling
# (multiples of 8, but ImageStitch's spacing, a multiple of 2).
PIXEL_INPUTS = {
    ("EmptyLatentImage", "width"): 64, ("EmptyLatentImage", "height"): 64,
    ("TiledDiffusion", "tile_width"): 64, ("TiledDiffusion", "tile_height"): 64, ("TiledDiffusion", "overlap"): 0,
    ("ChessTileRedraw", "tile_width"): 64, ("ChessTileRedraw", "tile_height"): 64,
    ("ChessTileRedraw", "padding"): 0, ("ChessTileRedraw", "mask_feather"): 0,
    ("ChessTileRedraw", "seam_fix_width"): 8, ("ChessTileRedraw", "seam_fix_feather"): 0,
    ("TiledVAEEncode", "tile_size"): 32, ("TiledVAEDecode", "tile_size"): 32,
    ("TiledVAEEncode", "padding"): 0, ("TiledVAEDecode", "padding"): 0,
    ("RegionPrompt", "canvas_width"): 64, ("RegionPrompt", "canvas_height"): 64,
    ("LatentUpscaleAdvanced", "width"): 0, ("LatentUpscaleAdvanced", "height"): 0,
    ("ImageStitch", "spacing_width"): 0,
}
GRIDS = {("ImageStitch", "spacing_width"): 2}
STEP_INPUTS = {("KSampler", "steps"), ("KSamplerAdvanced", "steps"), ("ProgressiveGrowSampler", "steps"),
               ("ProgressiveGrowSampler", "refine_steps"), ("ChessTileRedraw", "steps")}
LOADERS = {"CheckpointLoaderSimple"}


def scaled_px(value: int, scale: float, minimum: int, grid: int = 8) -> int:
    """value / scale on the grid, at least minimum (0 stays 0: it means 'automatic' or 'none' for
    these inputs)."""
    if value == 0:
        return 0
    return max(minimum, grid, int(math.floor(value / scale / grid + 0.5)) * grid)


def for_demo(prompt: dict, demo: dict, *, scale: float | None = None, steps: int | None = None,
             prefix: str | None = None) -> dict:
    """A copy of an API prompt that runs with the demo model on a CPU: every checkpoint loader
    becomes DemoModelLoader (same MODEL, CLIP, VAE outputs), each CLIPTextEncode gets the demo
    prompt of its title ("" if none: negatives), pixel sizes, tiles and canvases are divided by
    scale (default demo["scale"]) and sampling steps capped at steps (default demo["steps"])."""
    scale = demo.get("scale", 1) if scale is None else scale
    steps = demo.get("steps") if steps is None else steps
    prompts = demo.get("prompts", {})
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in LOADERS:
            node["class_type"], node["inputs"] = "DemoModelLoader", {"weights": DEMO_WEIGHTS}
            continue
        if kind == "CLIPTextEncode" and not isinstance(inputs.get("text"), list):
            inputs["text"] = prompts.get(node.get("_meta", {}).get("title"), "")
        for name, value in list(inputs.items()):
            if isinstance(value, list):
                continue
            if (kind, name) in PIXEL_INPUTS and isinstance(value, (int, float)):
                inputs[name] = scaled_px(int(value), scale, PIXEL_INPUTS[(kind, name)], GRIDS.get((kind, name), 8))
            elif (kind, name) in STEP_INPUTS and steps is not None:
                inputs[name] = min(int(value), steps)
        if kind == "SaveImage" and prefix is not None:
            inputs["filename_prefix"] = prefix
    return out


def demo_images(demo: dict, scale: float | None = None) -> dict[str, tuple[int, int, str]]:
    """LoadImage file -> (width, height, demo prompt) of the picture to draw for it at this scale."""
    scale = demo.get("scale", 1) if scale is None else scale
    return {name: (scaled_px(w, scale, 64), scaled_px(h, scale, 64), text)
            for name, (w, h, text) in demo.get("images", {}).items()}


def picture_prompt(width: int, height: int, text: str, steps: int = 20, seed: int = 11,
                   prefix: str = "expanse_input") -> dict:
    """A plain txt2img API prompt with the demo model: the picture a LoadImage of a workflow gets."""
    import main_job

    loader = {"class_type": "DemoModelLoader", "inputs": {"weights": DEMO_WEIGHTS}}
    return main_job.text_to_image_prompt(loader, text, width, height, steps, seed, tile=min(512, width, height),
                                         prefix=prefix)


def upload_demo_images(server: ComfyServer, demo: dict, scale: float | None = None, steps: int = 20) -> None:
    """Draws each picture a workflow's LoadImage nodes expect with the demo model and uploads it
    under the file name the workflow names."""
    for name, (width, height, text) in demo_images(demo, scale).items():
        status, answer = server.queue(picture_prompt(width, height, text, steps=steps))
        if status != 200:
            raise RuntimeError(f"the input picture's prompt was refused: {answer}")
        entry = server.wait(answer["prompt_id"], timeout=600)
        if entry["status"]["status_str"] != "success":
            raise RuntimeError(f"the input picture failed: {entry['status']}")
        upload(server, server.images(entry)[0], name)


def upload(server: ComfyServer, data: bytes, name: str) -> None:
    """POST /upload/image with overwrite, so the file keeps its name (another workflow's picture of
    the same name is replaced instead of the upload being renamed)."""
    boundary = uuid.uuid4().hex
    body = b"".join([
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n".encode(),
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
        f"Content-Type: image/png\r\n\r\n".encode(), data, f"\r\n--{boundary}--\r\n".encode()])
    status, answer = server.request("POST", "/upload/image", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    if status != 200 or json.loads(answer)["name"] != name:
        raise RuntimeError(f"uploading {name} failed: HTTP {status}: {answer[:300]!r}")


# --- the example workflows -----------------------------------------------------------------------

NEGATIVE_SD15 = "blurry, lowres, jpeg artifacts, watermark, text, deformed"
NEGATIVE_SDXL = "blurry, lowres, oversaturated, watermark, text, deformed, extra fingers"


def _prompts(g: Graph, clip: Out, positive: str, negative: str) -> tuple[Node, Node]:
    pos = g.add("CLIPTextEncode", "Positive prompt", text=positive, clip=clip)
    neg = g.add("CLIPTextEncode", "Negative prompt", text=negative, clip=clip)
    return pos, neg


def progressive_portrait(defs: Definitions) -> Graph:
    g = Graph("progressive_grow_portrait_2048", defs, demo={
        "prompts": {"Positive prompt": "a sunset sky with a sun and clouds over mountains and a lake"},
        "scale": 4, "steps": 20})
    g.note("""Progressive growing, 1536x2048 portrait with SDXL.

SDXL composes well near 1024x1024 and repeats subjects when asked for 2048 px at once. Progressive Grow Sampler draws the picture at half size first (768x1024, min_scale 0.5: SDXL's own size), then grows the latent in 3 stages to the Empty Latent Image's size, refining each stage with img2img. Composition comes from the small pass, detail from the large ones.

Put sd_xl_base_1.0.safetensors (or any SDXL checkpoint) in models/checkpoints. For SD1.5 use min_scale 0.25 (512 px first stage).""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SDXL)", ckpt_name=SDXL)
    pos, neg = _prompts(g, ckpt["CLIP"],
                        "portrait of an old lighthouse keeper with a white beard and a knitted cap, standing on "
                        "a rocky coast at golden hour, soft rim light, detailed skin and wool texture, "
                        "85mm photograph, shallow depth of field", NEGATIVE_SDXL)
    latent = g.add("EmptyLatentImage", "Final size", width=1536, height=2048, batch_size=1)
    grow = g.add("ProgressiveGrowSampler", model=ckpt["MODEL"], positive=pos["CONDITIONING"],
                 negative=neg["CONDITIONING"], latent_image=latent["LATENT"], seed=424242, steps=30, cfg=6.5,
                 sampler_name="dpmpp_2m", scheduler="karras", min_scale=0.5, max_scale=1.0, stages=3,
                 spacing="geometric", refine=True, denoise_second=0.5, denoise_last=0.3, refine_steps=10,
                 upscale_method="bislerp", stage_noise=0.03)
    g.note("""Stages: 768x1024 (30 steps) -> 1088x1448 (refine 10 steps at denoise 0.5) -> 1536x2048 (10 steps at 0.3).

denoise_second / denoise_last: how much each refine redraws; higher adds detail but can change the composition. stage_noise 0.03 adds a little fresh texture before each refine so skin and fabric do not go smooth.

The stage_latents output lists every stage's latent, smallest first, to inspect how the picture grew.""",
           title="Progressive Grow settings", near=grow)
    decode = g.add("TiledVAEDecode", samples=grow[0], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.note("""Tiled VAE Decode in exact mode gives the same picture as a whole-image decode, with GPU memory bounded by the 1024 px tile. tile_size 0 picks the largest tile that fits the free memory.""",
           title="Decode", near=decode)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/progressive_portrait")
    return g


def tiled_panorama(defs: Definitions) -> Graph:
    g = Graph("tiled_diffusion_panorama", defs, demo={
        "prompts": {"Positive prompt": "a sunset sky with clouds over mountains and a lake"},
        "scale": 3, "steps": 20})
    g.note("""A 3072x1024 panorama with SD1.5 and Tiled Diffusion.

SD1.5 was trained at 512 px: asked for 3072x1024 in one go it repeats the scene and loses the horizon. Tiled Diffusion patches the model so the sampler denoises the canvas in 768x768 tiles (128 px overlap) whose predictions are fused at every step: each tile sees a size the model knows, and the overlaps tie them into one picture.

Put v1-5-pruned-emaonly.safetensors (or any SD1.5 checkpoint) in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", ckpt_name=SD15)
    pos, neg = _prompts(g, ckpt["CLIP"],
                        "panoramic landscape photograph, snow-capped mountain range above a calm alpine lake at "
                        "sunset, pine forest on the shore, warm light on the peaks, reflections, wide angle, "
                        "highly detailed", NEGATIVE_SD15)
    tiled = g.add("TiledDiffusion", model=ckpt["MODEL"], method="mixture_of_diffusers", tile_width=768,
                  tile_height=768, overlap=128, tile_batch_size=4, seed=0)
    g.note("""mixture_of_diffusers blends the tiles with Gaussian weights (smoother than multidiffusion at the same cost); shifted is the fastest (no overlap, the grid moves every step; give it 25+ steps).

3072x1024 with 768 px tiles and 128 px overlap: 5 x 2 = 10 tiles per step, 4 per model call. Raise tile_batch_size until the GPU is full.""",
           title="Tiled Diffusion settings", near=tiled)
    latent = g.add("EmptyLatentImage", "Panorama size", width=3072, height=1024, batch_size=1)
    sample = g.add("KSampler", model=tiled["MODEL"], seed=7, steps=30, cfg=7.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    decode = g.add("TiledVAEDecode", samples=sample["LATENT"], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.note("""Any sampler works with the patched model (KSampler, KSamplerAdvanced, SamplerCustom). Tiled VAE Decode (exact) decodes the 3072x1024 latent without seams in bounded GPU memory.""",
           title="Sampling and decoding", near=sample)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/panorama")
    return g


def region_composition(defs: Definitions) -> Graph:
    g = Graph("region_prompt_composition", defs, demo={
        "prompts": {"Positive prompt": "a day sky with clouds over a green field",
                    "Sofa prompt": "a day sky over a golden field",
                    "First character prompt": "a night sky with a moon over a forest",
                    "Second character prompt": "a sunset sky with a sun over a lake"},
        "scale": 4, "steps": 20})
    g.note("""Regional prompts with SDXL, 1536x1024: a living room (main prompt), a sofa across the lower half (background region) and two people on it (foreground regions).

Region Prompt nodes are chained: each takes the chain so far and adds one region. x / y / width / height are fractions of the canvas (drag the box in the node's editor, or type them), so the layout survives a size change. Set canvas_width / canvas_height to the Empty Latent Image's size so the feather is measured on the right canvas.

Put sd_xl_base_1.0.safetensors in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SDXL)", ckpt_name=SDXL)
    clip = ckpt["CLIP"]
    pos, neg = _prompts(g, clip, "a cozy living room in the evening, warm lamp light, bookshelves, large window, "
                                 "wooden floor, photograph", NEGATIVE_SDXL)
    sofa_text = g.add("CLIPTextEncode", "Sofa prompt",
                      text="a large green velvet sofa with soft cushions, photograph", clip=clip)
    left_text = g.add("CLIPTextEncode", "First character prompt",
                      text="a young woman with red hair in a yellow sweater, sitting, reading a book", clip=clip)
    right_text = g.add("CLIPTextEncode", "Second character prompt",
                       text="an old man with a grey beard in a blue cardigan, sitting, holding a cup of tea",
                       clip=clip)
    canvas = dict(canvas_width=1536, canvas_height=1024)
    sofa = g.add("RegionPrompt", "Sofa (background)", conditioning=pos["CONDITIONING"],
                 region_conditioning=sofa_text["CONDITIONING"], x=0.0, y=0.45, width=1.0, height=0.55,
                 type="background", feather=0.25, strength=1.0, **canvas)
    g.note("""A background region blends with the prompt under it (a weighted average), good for a setting or an object that should sit in the scene: the sofa fills the lower 55% of the canvas.""",
           title="Background region", near=sofa)
    left = g.add("RegionPrompt", "First character (foreground)", conditioning=sofa["CONDITIONING"],
                 region_conditioning=left_text["CONDITIONING"], x=0.08, y=0.15, width=0.36, height=0.8,
                 type="foreground", feather=0.2, strength=1.0, **canvas)
    right = g.add("RegionPrompt", "Second character (foreground)", conditioning=left["CONDITIONING"],
                  region_conditioning=right_text["CONDITIONING"], x=0.56, y=0.12, width=0.36, height=0.83,
                  type="foreground", feather=0.2, strength=1.0, **canvas)
    g.note("""Foreground regions replace what is under them inside their feathered edge: one subject each. Later regions lie on top of earlier ones where they overlap. feather 0.2 fades the edge over a fifth of the box's smaller side.""",
           title="Foreground regions", near=left)
    tiled = g.add("TiledDiffusion", model=ckpt["MODEL"], method="multidiffusion", tile_width=1024,
                  tile_height=1024, overlap=128, tile_batch_size=4, seed=0)
    g.note("""Through Tiled Diffusion the foregrounds are composited exactly (each evaluated on its own and blended by its mask) and each 1024 px tile evaluates only the regions it meets. A plain KSampler without it also works (ComfyUI's own area/mask conditioning).""",
           title="Why Tiled Diffusion here", near=tiled)
    latent = g.add("EmptyLatentImage", "Canvas", width=1536, height=1024, batch_size=1)
    sample = g.add("KSampler", model=tiled["MODEL"], seed=1234, steps=30, cfg=6.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=right["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    decode = g.add("TiledVAEDecode", samples=sample["LATENT"], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/regions")
    return g


def chess_upscale(defs: Definitions) -> Graph:
    g = Graph("chess_redraw_upscale_2x_4x", defs, demo={
        "prompts": {"Positive prompt": "a sunset sky with a sun and clouds over mountains and a lake"},
        "scale": 4, "steps": 12,
        "images": {EXAMPLE_IMAGE: (512, 384, "a sunset sky with a sun and clouds over mountains and a lake")}})
    g.note("""Upscale a picture 2x, then 2x again (4x in all), redrawing it tile by tile with SD1.5 (Ultimate SD Upscale's technique).

Each Chess Tile Redraw resizes the picture (float lanczos, or an upscale model on its optional input), encodes it once with the tiled VAE, redraws 512 px tiles at low denoise in chess order and in batches, fixes the seams, and decodes once. Two 2x steps keep more detail than one 4x step: the second pass redraws what the first one added.

Load your picture in Load Image; the prompt should describe it. Put v1-5-pruned-emaonly.safetensors in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", ckpt_name=SD15)
    picture = g.add("LoadImage", "Picture to upscale", image=EXAMPLE_IMAGE)
    pos, neg = _prompts(g, ckpt["CLIP"], "a detailed landscape photograph, sharp focus, fine texture, high quality",
                        NEGATIVE_SD15)
    sampling = dict(model=ckpt["MODEL"], positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                    vae=ckpt["VAE"], cfg=7.0, sampler_name="dpmpp_2m", scheduler="karras", tile_width=512,
                    tile_height=512, tile_batch_size=4, redraw_order="chess")
    first = g.add("ChessTileRedraw", "Chess Tile Redraw 2x", image=picture["IMAGE"], upscale_by=2.0, seed=101,
                  steps=20, denoise=0.35, padding=64, mask_feather=32, seam_fix="band", seam_fix_denoise=0.3,
                  seam_fix_width=64, seam_fix_feather=16, **sampling)
    g.note("""2x: denoise 0.35 adds detail and keeps the picture; 512 px tiles suit SD1.5 (768-1024 for SDXL). padding 64 is the context each tile sees around itself; mask_feather fades its result into the neighbours. seam_fix band redraws a 64 px strip on each tile border afterwards.""",
           title="First pass", near=first)
    g.add("PreviewImage", "2x result", images=first["IMAGE"])
    second = g.add("ChessTileRedraw", "Chess Tile Redraw 4x", image=first["IMAGE"], upscale_by=2.0, seed=202,
                   steps=20, denoise=0.3, padding=96, mask_feather=48, seam_fix="half_tile", seam_fix_denoise=0.25,
                   seam_fix_width=64, seam_fix_feather=32, **sampling)
    g.note("""4x: a lower denoise (0.3) at the larger size, where each tile covers less of the picture; seam_fix half_tile redraws tiles centred on the borders. tile_batch_size only changes speed, never the picture.""",
           title="Second pass", near=second)
    g.add("SaveImage", images=second["IMAGE"], filename_prefix="expanse/chess_upscale_4x")
    return g


def poster(defs: Definitions) -> Graph:
    g = Graph("poster_progressive_chess_redraw", defs, demo={
        "prompts": {"Positive prompt": "a sunset sky with a sun and clouds over mountains and a lake"},
        "scale": 4, "steps": 12})
    g.note("""A 2048x3072 poster with SD1.5: Progressive Grow Sampler composes it (512x768 first, grown to 1024x1536), Chess Tile Redraw upscales the latent 2x and redraws it tile by tile for detail, Tiled VAE Decode turns it into the picture.

The latent goes from node to node without a decode/encode round trip. Put v1-5-pruned-emaonly.safetensors in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", ckpt_name=SD15)
    pos, neg = _prompts(g, ckpt["CLIP"],
                        "vintage travel poster of a mountain village above a turquoise lake, bold flat colours, "
                        "art deco style, dramatic clouds, clean shapes, screen print texture", NEGATIVE_SD15)
    latent = g.add("EmptyLatentImage", "Composition size", width=1024, height=1536, batch_size=1)
    grow = g.add("ProgressiveGrowSampler", model=ckpt["MODEL"], positive=pos["CONDITIONING"],
                 negative=neg["CONDITIONING"], latent_image=latent["LATENT"], seed=2024, steps=25, cfg=7.0,
                 sampler_name="euler_ancestral", scheduler="normal", min_scale=0.5, max_scale=1.0, stages=2,
                 spacing="geometric", refine=True, denoise_second=0.5, denoise_last=0.35, refine_steps=12,
                 upscale_method="bislerp", stage_noise=0.0)
    g.note("""512x768 (SD1.5's own size) then 1024x1536 at denoise 0.5. Ancestral samplers work: each stage is an ordinary sampling run.""",
           title="Composition", near=grow)
    redraw = g.add("ChessTileRedraw", "Chess Tile Redraw 2x (latent)", model=ckpt["MODEL"],
                   positive=pos["CONDITIONING"], negative=neg["CONDITIONING"], vae=ckpt["VAE"], latent=grow[0],
                   upscale_by=2.0, seed=77, steps=20, cfg=6.0, sampler_name="dpmpp_2m", scheduler="karras",
                   denoise=0.3, tile_width=512, tile_height=512, padding=64, mask_feather=32, tile_batch_size=4,
                   redraw_order="chess", seam_fix="band", seam_fix_denoise=0.25, seam_fix_width=64,
                   seam_fix_feather=16)
    g.note("""With a latent connected, Chess Tile Redraw resizes it with float lanczos and redraws 512 px tiles at denoise 0.3: 24 tiles at 2048x3072, in chess order, 4 at a time. Its LATENT output goes on to the decode; its IMAGE output is the same picture, decoded.""",
           title="Detail pass", near=redraw)
    decode = g.add("TiledVAEDecode", samples=redraw["LATENT"], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/poster")
    return g


def latent_upscale_grid(defs: Definitions) -> Graph:
    g = Graph("latent_upscale_methods_grid", defs, demo={
        "prompts": {"Positive prompt": "red and white checks"}, "scale": 4, "steps": 20})
    g.note("""Compare Latent Upscale Advanced's methods on one latent: a 512x512 SD1.5 picture, its latent upscaled 2x with lanczos, bislerp, bicubic and nearest-exact, each decoded without any refine, stitched into a 2x2 grid (top: lanczos, bislerp; bottom: bicubic, nearest-exact).

Decoding an upscaled latent directly shows what each method does to the latent: lanczos stays sharp, bislerp keeps the latent's vector lengths, bicubic blurs, nearest-exact is blocky. Before a refine (img2img at 0.4-0.6) the differences shrink but do not vanish.

Put v1-5-pruned-emaonly.safetensors in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", ckpt_name=SD15)
    pos, neg = _prompts(g, ckpt["CLIP"], "a red brick house with white windows in a garden of flowers, sunny day, "
                                         "detailed photograph", NEGATIVE_SD15)
    latent = g.add("EmptyLatentImage", width=512, height=512, batch_size=1)
    sample = g.add("KSampler", model=ckpt["MODEL"], seed=5, steps=25, cfg=7.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    decoded = []
    for method in ("lanczos", "bislerp", "bicubic", "nearest-exact"):
        up = g.add("LatentUpscaleAdvanced", f"Upscale 2x ({method})", samples=sample["LATENT"], method=method,
                   scale_by=2.0, width=0, height=0, antialias=True)
        decoded.append(g.add("TiledVAEDecode", f"Decode ({method})", samples=up["LATENT"], vae=ckpt["VAE"],
                             tile_size=512, mode="exact", padding=96))
        if method == "lanczos":
            g.note("""scale_by 2: 512 -> 1024 px. Set scale_by to 0 to give a width/height in pixels instead (0 keeps the aspect ratio). antialias matters only when shrinking. Connect a VAE to resize in pixel space instead (decode, resize, encode).""",
                   title="Upscale settings", near=up)
    stitch = dict(direction="right", match_image_size=True, spacing_width=16, spacing_color="white")
    top = g.add("ImageStitch", "Top row", image1=decoded[0]["IMAGE"], image2=decoded[1]["IMAGE"], **stitch)
    bottom = g.add("ImageStitch", "Bottom row", image1=decoded[2]["IMAGE"], image2=decoded[3]["IMAGE"], **stitch)
    grid = g.add("ImageStitch", "Grid", image1=top["IMAGE"], image2=bottom["IMAGE"],
                 **dict(stitch, direction="down"))
    g.add("SaveImage", images=grid["IMAGE"], filename_prefix="expanse/latent_upscale_grid")
    return g


def tiled_vae_roundtrip(defs: Definitions) -> Graph:
    g = Graph("tiled_vae_roundtrip", defs, demo={
        "scale": 4, "steps": 20,
        "images": {EXAMPLE_IMAGE: (1024, 1024, "a night sky with a moon over mountains and a forest")}})
    g.note("""Encode a picture to SDXL's latent and back with the tiled VAE, and compare: the original (left) and the round trip (right), stitched side by side.

Exact mode shares the GroupNorm statistics of all tiles, so the result equals a whole-image encode/decode whatever the tile size, with GPU memory bounded by the tile: a 4K or 8K picture goes through a GPU that cannot hold it whole. What differs from the original is only the VAE's own loss.

Put sd_xl_base_1.0.safetensors (its VAE is used) in models/checkpoints and load any picture.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SDXL)", ckpt_name=SDXL)
    picture = g.add("LoadImage", "Picture", image=EXAMPLE_IMAGE)
    encode = g.add("TiledVAEEncode", pixels=picture["IMAGE"], vae=ckpt["VAE"], tile_size=512, mode="exact",
                   padding=64)
    g.note("""tile_size 512: the tile in input pixels; 0 picks one from free memory. mode fast estimates the statistics from a shrunken copy and decodes padded tiles independently: it bounds host memory too, and is approximate (padding is the context each tile sees).""",
           title="Tiled VAE settings", near=encode)
    decode = g.add("TiledVAEDecode", samples=encode["LATENT"], vae=ckpt["VAE"], tile_size=512, mode="exact",
                   padding=96)
    compare = g.add("ImageStitch", "Original | round trip", image1=picture["IMAGE"], image2=decode["IMAGE"],
                    direction="right", match_image_size=True, spacing_width=16, spacing_color="white")
    g.add("SaveImage", images=compare["IMAGE"], filename_prefix="expanse/vae_roundtrip")
    return g


WORKFLOWS = {
    "progressive_grow_portrait_2048": progressive_portrait,
    "tiled_diffusion_panorama": tiled_panorama,
    "region_prompt_composition": region_composition,
    "chess_redraw_upscale_2x_4x": chess_upscale,
    "poster_progressive_chess_redraw": poster,
    "latent_upscale_methods_grid": latent_upscale_grid,
    "tiled_vae_roundtrip": tiled_vae_roundtrip,
}


def demo_settings(name: str, defs: Definitions) -> dict:
    """The demo-run settings (prompts, scale, steps, input pictures) of a workflow by name."""
    return WORKFLOWS[name](defs).demo


# --- thumbnails ----------------------------------------------------------------------------------

def run_prompt(server: ComfyServer, prompt: dict, timeout: float = 900.0) -> dict:
    status, answer = server.queue(prompt)
    if status != 200:
        raise RuntimeError(f"ComfyUI refused the prompt: {json.dumps(answer)[:2000]}")
    entry = server.wait(answer["prompt_id"], timeout=timeout)
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(f"the prompt failed: {json.dumps(entry['status'])[:2000]}")
    return entry


def thumbnail(server: ComfyServer, graph: Graph, workflow: dict, defs: Definitions, max_side: int = 512) -> bytes:
    """The workflow run with the demo model, its largest saved picture as a JPEG (max side max_side)."""
    from PIL import Image

    upload_demo_images(server, graph.demo)
    prompt = for_demo(ui_to_api(workflow, defs), graph.demo, prefix=f"thumb_{graph.name}")
    entry = run_prompt(server, prompt)
    pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in server.images(entry)]
    if not pictures:
        raise RuntimeError(f"{graph.name}: the workflow saved no picture")
    picture = max(pictures, key=lambda p: p.width * p.height)
    picture.thumbnail((max_side, max_side), Image.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=88, optimize=True)
    return out.getvalue()


def attach(url: str) -> ComfyServer:
    """A ComfyServer for a server started elsewhere (nothing is started or stopped)."""
    server = ComfyServer.__new__(ComfyServer)
    server.url, server.proc = url.rstrip("/"), None
    return server


def write_json(path: pathlib.Path, workflow: dict) -> None:
    path.write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(WORKFLOWS), help="these workflows only")
    parser.add_argument("--no-thumbnails", action="store_true", help="write the JSON files only")
    parser.add_argument("--object-info", type=pathlib.Path, help="node definitions from a saved /object_info")
    parser.add_argument("--save-object-info", type=pathlib.Path, help="save the server's /object_info here")
    parser.add_argument("--url", help="a running ComfyUI with the pack (else one is started)")
    parser.add_argument("--out", type=pathlib.Path, default=OUT_DIR)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of the server this script starts (OMP_NUM_THREADS; 0: torch's default). "
                             "One thread is fast enough for these small runs, many times faster on a machine busy "
                             "with other jobs, and keeps the thumbnails the same from machine to machine")
    args = parser.parse_args(argv)
    names = args.only or list(WORKFLOWS)
    args.out.mkdir(parents=True, exist_ok=True)

    server = None
    if args.url:
        server = attach(args.url)
    elif not (args.no_thumbnails and args.object_info):
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server inherits the environment
        server = ComfyServer(workdir=ROOT / ".cache" / "workflows")
        print("starting ComfyUI ...", flush=True)
        server.start()
    try:
        object_info = json.loads(args.object_info.read_text()) if args.object_info else server.get("/object_info")
        if args.save_object_info:
            args.save_object_info.write_text(json.dumps(object_info))
        defs = Definitions(object_info)
        for name in names:
            graph = WORKFLOWS[name](defs)
            workflow = graph.to_ui()
            write_json(args.out / f"{name}.json", workflow)
            print(f"wrote {args.out / (name + '.json')} ({len(workflow['nodes'])} nodes)", flush=True)
            if not args.no_thumbnails:
                started = time.monotonic()
                (args.out / f"{name}.jpg").write_bytes(thumbnail(server, graph, workflow, defs))
                print(f"  thumbnail {name}.jpg in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        if server is not None and server.proc is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
