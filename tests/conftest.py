"""Shared by all three tiers: the pack importable as `expanse` without ComfyUI.

The repository root is deliberately not put on sys.path: the pack has a `nodes/` package and
ComfyUI has a top-level `nodes` module, and the host must keep getting its own.
"""
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

if "expanse" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("expanse", ROOT / "__init__.py",
                                                   submodule_search_locations=[str(ROOT)])
    _pack = importlib.util.module_from_spec(_spec)
    sys.modules["expanse"] = _pack
    _spec.loader.exec_module(_pack)
