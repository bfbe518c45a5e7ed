"""Shared by all three tiers: the pack importable as `expanse` (without ComfyUI) before any test
module is collected. The harness (expanse_harness) is importable through the venv's .pth file."""
from expanse_harness.host import register_pack


def pytest_configure(config):
    register_pack()
