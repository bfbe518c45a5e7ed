import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/: host, tiny_models

import host  # noqa: E402


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's `nodes` module, in process on the CPU, with the pack loaded by ComfyUI's loader."""
    return host.start_in_process()


@pytest.fixture(scope="session")
def node(comfy_nodes):
    """node("KSampler") -> the registered class, ours or ComfyUI's."""
    return lambda name: comfy_nodes.NODE_CLASS_MAPPINGS[name]


@pytest.fixture(scope="session")
def tiny_vae(comfy_nodes):
    import tiny_models

    return tiny_models.tiny_vae()
