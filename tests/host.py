"""The real ComfyUI host in this process, for the integration tier (and the benchmarks)."""
from __future__ import annotations

import asyncio

import comfy_server

_started = False


def start_in_process(cpu: bool = True):
    """Imports ComfyUI (on the CPU unless cpu=False) and loads the pack through ComfyUI's own
    custom-node loader, as the server does at start-up; returns ComfyUI's `nodes` module."""
    global _started
    host = comfy_server.import_host(cpu=cpu)
    import nodes as comfy_nodes

    if not _started:
        asyncio.run(comfy_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        pack = host / "custom_nodes" / "expanse"
        if not asyncio.run(comfy_nodes.load_custom_node(str(pack))):
            raise RuntimeError(f"ComfyUI could not load the pack from {pack}")
        _started = True
    return comfy_nodes
