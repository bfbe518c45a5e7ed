"""Upgrades workflows saved with Expanse 0.1 to the node ids and input names of 0.2.

    python scripts/upgrade_workflow.py my_workflow.json [more.json ...]

Expanse 0.1 registered TiledDiffusion, TiledVAEEncode, TiledVAEDecode and LatentUpscaleAdvanced,
ids other packs register too (shiimizu's ComfyUI-TiledDiffusion, comfyui-yaser-nodes,
ComfyUI-FlowMatching-Upscaler); 0.2 prefixes every id with Expanse, and Latent Upscale Advanced's
`method` became `upscale_method`. Both saved formats are upgraded in place: the frontend's (nodes,
subgraphs included) and the API's ({id: {class_type, inputs}}). A workflow that already uses the
new ids is left as it is. Only run it on workflows made with Expanse: a TiledDiffusion node saved
with shiimizu's pack has other inputs, and is not ours to rename.
"""
from __future__ import annotations

import json
import pathlib
import sys

RENAMED_IDS = {old: f"Expanse{old}" for old in (
    "TiledDiffusion", "TiledVAEEncode", "TiledVAEDecode", "LatentUpscaleAdvanced", "ProgressiveGrowSampler",
    "ChessTileRedraw", "RegionPrompt", "DemoModelLoader")}
RENAMED_INPUTS = {"ExpanseLatentUpscaleAdvanced": {"method": "upscale_method"}}


def _upgrade_ui_node(node: dict) -> bool:
    new_type = RENAMED_IDS.get(node.get("type"))
    if new_type is None:
        return False
    node["type"] = new_type
    properties = node.get("properties") or {}
    if "Node name for S&R" in properties:
        properties["Node name for S&R"] = new_type
    renames = RENAMED_INPUTS.get(new_type, {})
    for slot in node.get("inputs") or []:
        new_name = renames.get(slot.get("name"))
        if new_name:
            slot["name"] = new_name
            if slot.get("localized_name") in renames:
                slot["localized_name"] = new_name
            if isinstance(slot.get("widget"), dict):
                slot["widget"]["name"] = new_name
    return True


def upgrade(workflow: dict) -> int:
    """Upgrades a workflow in place; returns how many nodes changed."""
    if isinstance(workflow.get("nodes"), list):  # the frontend's format
        nodes = list(workflow["nodes"])
        for subgraph in (workflow.get("definitions") or {}).get("subgraphs") or []:
            nodes += subgraph.get("nodes") or []
        return sum(_upgrade_ui_node(node) for node in nodes)
    changed = 0  # the API's format
    for node in workflow.values():
        new_type = RENAMED_IDS.get(node.get("class_type")) if isinstance(node, dict) else None
        if new_type is None:
            continue
        node["class_type"] = new_type
        inputs = node.get("inputs") or {}
        for old, new in RENAMED_INPUTS.get(new_type, {}).items():
            if old in inputs:
                inputs[new] = inputs.pop(old)
        changed += 1
    return changed


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    for path in map(pathlib.Path, paths):
        workflow = json.loads(path.read_text())
        changed = upgrade(workflow)
        if changed:
            path.write_text(json.dumps(workflow, indent=2) + "\n")
        print(f"{path}: {changed} node(s) upgraded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
