"""A saved UI workflow to the API prompt the frontend queues for it (its graphToPrompt). The
end-to-end tests hold it to the real frontend's own conversion (tests/e2e/test_workflows_frontend.py)."""
from __future__ import annotations

from .save_format import Definitions

VIRTUAL_NODES = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}  # frontend-only, never queued
MODE_NEVER, MODE_BYPASS = 2, 4


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

