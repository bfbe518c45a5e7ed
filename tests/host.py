"""The real ComfyUI host, for the integration and e2e tiers.

`comfy_dir()` is the host the set-up script built (or COMFYUI_PATH). `start_in_process()` imports
it into this process on the CPU and loads the pack through ComfyUI's own custom-node loader,
exactly as the server does at start-up.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def comfy_dir() -> pathlib.Path:
    if os.environ.get("COMFYUI_PATH"):
        return pathlib.Path(os.environ["COMFYUI_PATH"]).resolve()
    recorded = ROOT / ".venv" / ".expanse-comfyui-path"
    if recorded.exists():
        return pathlib.Path(recorded.read_text().strip())
    return ROOT / ".comfyui"


_started = False


def start_in_process():
    """Imports ComfyUI (CPU only) and loads the pack; returns ComfyUI's `nodes` module."""
    global _started
    host = comfy_dir()
    if not (host / "main.py").exists():
        raise RuntimeError(f"no ComfyUI at {host}: run `make setup` (or set COMFYUI_PATH)")
    if str(host) not in sys.path:
        sys.path.insert(0, str(host))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before anything imports comfy.model_management
    import nodes as comfy_nodes

    if not _started:
        asyncio.run(comfy_nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        pack = host / "custom_nodes" / "expanse"
        if not asyncio.run(comfy_nodes.load_custom_node(str(pack))):
            raise RuntimeError(f"ComfyUI could not load the pack from {pack}")
        _started = True
    return comfy_nodes
