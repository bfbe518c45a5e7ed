"""Shared by all three tiers: the pack importable as `expanse` without ComfyUI, and the scripts
(server driver, main job) importable by the tests."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import comfy_server  # noqa: E402

comfy_server.register_pack()
