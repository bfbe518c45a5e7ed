"""The frontend's save format: node definitions as the frontend builds them from /object_info, and
workflows described compactly (`graph.add(type, title, **inputs)`, an input being a value or
another node's output, plus `Note`s) written as the frontend saves them.

- The node definitions (`/object_info`, from a server or a saved file) give each node its inputs in
  the frontend's order, which of them are widgets, their defaults, and which INT inputs carry the
  extra `control_after_generate` value in widgets_values.
- `Graph.to_ui()` writes the frontend's save format (LGraph.serialize, version 0.4): nodes laid out
  left to right by depth, sockets first and widget inputs after them (as the frontend adds them),
  links as [id, from_node, from_slot, to_node, to_slot, type].
"""
from __future__ import annotations

import json
import math
import pathlib
import uuid

FRONTEND_VERSION = "1.32.9"
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
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
    def __init__(self, graph: "Graph", node_id: int, type_: str, title: str | None, inputs: dict,
                 properties: dict | None = None):
        self.graph, self.id, self.type, self.title, self.inputs = graph, node_id, type_, title, inputs
        self.properties = properties or {}  # written after "Node name for S&R" (e.g. models)

    def __getitem__(self, key) -> Out:
        return Out(self, self.graph.defs[self.type].output_index(key))


class Graph:
    """A workflow as the user wires it; to_ui() writes it in the frontend's save format."""

    def __init__(self, name: str, defs: Definitions):
        self.name, self.defs = name, defs
        self.nodes: list[Node] = []
        self.notes: list[tuple[int, str, str, Node | None]] = []  # (id, title, text, next to)
        self._next_id = 1

    def _id(self) -> int:
        node_id, self._next_id = self._next_id, self._next_id + 1
        return node_id

    def add(self, type_: str, title: str | None = None, *, properties: dict | None = None, **inputs) -> Node:
        """A node of type_ with these inputs (values, or other nodes' outputs); `properties` go
        into its saved properties (a loader's `models`: what the frontend offers to download)."""
        definition = self.defs[type_]
        for name in inputs:
            definition.input(name)  # fails early on a misspelt input
        for entry in definition.inputs:
            if not entry["widget"] and not entry["optional"] and entry["name"] not in inputs:
                raise ValueError(f"{self.name}: {type_} needs its {entry['name']} input connected")
        node = Node(self, self._id(), type_, title, inputs, properties)
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
            entry["properties"] = {"Node name for S&R": node.type, **node.properties}
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
        elif node.type == "ExpanseRegionPrompt":
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


def write_json(path: pathlib.Path, workflow: dict) -> None:
    """A workflow file as the frontend writes one: two-space indents, UTF-8, a final newline."""
    path.write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")
