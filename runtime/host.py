"""What every Expanse node shares with the ComfyUI host: the category, progress and Cancel, and
the watch over the node ids it registers."""
from __future__ import annotations

import logging
from typing import Callable

import comfy.model_management
import comfy.samplers
import comfy.utils
from comfy_api.latest import io

CATEGORY = "Expanse"

log = logging.getLogger("expanse")


def progress_ticker(total: int) -> Callable[[], None]:
    """A tick for the core's loops: honours Cancel, then advances ComfyUI's progress bar."""
    bar = comfy.utils.ProgressBar(max(1, total))

    def tick() -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update(1)

    return tick


def sampling_inputs(seed_tooltip: str, steps_tooltip: str) -> list:
    """seed, steps, cfg, sampler_name and scheduler, as KSampler has them (every sampler and
    scheduler ComfyUI offers)."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip=seed_tooltip),
        io.Int.Input("steps", default=20, min=1, max=10000, tooltip=steps_tooltip),
        io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale, as in KSampler."),
        io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="euler",
                       tooltip="Any of ComfyUI's samplers, ancestral and SDE ones included."),
        io.Combo.Input("scheduler", options=list(comfy.samplers.KSampler.SCHEDULERS), default="normal",
                       tooltip="Any of ComfyUI's schedulers."),
    ]



def _on_prompt(handler: Callable[[dict], dict]) -> None:
    """Runs handler on the body of every POST /prompt (UI and API alike) before ComfyUI validates
    it; nothing where no server runs (scripts and in-process tests)."""
    try:
        from server import PromptServer
        server = PromptServer.instance
    except (ImportError, AttributeError):
        return
    server.add_on_prompt_handler(handler)


def _rival(node_id: str, ours: type) -> type | None:
    """The class another pack registered under node_id, if ComfyUI's registry holds one."""
    import nodes as comfy_nodes  # ComfyUI's registry, imported when needed: it imports the whole host

    registered = comfy_nodes.NODE_CLASS_MAPPINGS.get(node_id)
    return registered if registered is not None and registered is not ours else None


def _warn(node_id: str, rival: type, what: str) -> None:
    pack = getattr(rival, "RELATIVE_PYTHON_MODULE", None) or rival.__module__
    log.warning("Expanse: the node id %r %s by another pack (%s); ComfyUI keeps one node per id. "
                "Remove one of the two packs, or ask its author to rename the node.", node_id, what, pack)


def watch_node_ids(node_classes: list[type[io.ComfyNode]]) -> Callable[[dict], dict]:
    """Warns in the log when another pack registers one of our node ids: ComfyUI lets the pack
    that loads last replace the other's node without a word. Packs loaded before us are seen now;
    those loaded after us at the first prompt, the one hook both hosts run once all packs are in."""
    ours = {cls.define_schema().node_id: cls for cls in node_classes}
    for node_id, cls in ours.items():
        if (rival := _rival(node_id, cls)) is not None:
            _warn(node_id, rival, "is already registered (Expanse's node replaces it)")
    warned: set[str] = set()

    def check(json_data):
        for node_id, cls in ours.items():
            if node_id not in warned and (rival := _rival(node_id, cls)) is not None:
                warned.add(node_id)
                _warn(node_id, rival, "was taken over")
        return json_data

    _on_prompt(check)
    return check


# The input the prompt hook adds to a node that skips work for outputs nothing reads: the indexes
# of its outputs that some node reads. It is not a declared input, so the node never receives it,
# but ComfyUI's cache key holds every input of a prompt's node, so a cached result computed
# without an output is not reused once something reads that output.
OUTPUTS_READ_KEY = "expanse_outputs_read"


def _read_outputs(prompt: dict, node_id: str) -> list[int]:
    read = {value[1] for node in prompt.values() if isinstance(node, dict)
            for value in (node.get("inputs") or {}).values()
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == str(node_id)}
    return sorted(index for index in read if isinstance(index, int))


def track_output_reads(node_ids: set[str]) -> None:
    """Marks, in every prompt the server receives, which outputs of these nodes are read."""
    def mark(json_data):
        prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
        if isinstance(prompt, dict):
            for node_id, node in prompt.items():
                if isinstance(node, dict) and node.get("class_type") in node_ids \
                        and isinstance(node.get("inputs"), dict):
                    node["inputs"][OUTPUTS_READ_KEY] = _read_outputs(prompt, node_id)
        return json_data

    _on_prompt(mark)


def output_read(hidden, index: int) -> bool:
    """Whether a node of the running prompt reads output `index` of the node whose hidden inputs
    (io.Hidden.prompt and unique_id) these are; True where the prompt is unknown (a direct call)."""
    prompt, node_id = getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None)
    if not isinstance(prompt, dict) or not prompt or node_id is None:
        return True
    return index in _read_outputs(prompt, node_id)
