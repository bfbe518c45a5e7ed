import os

import pytest
import torch
from expanse_harness import host, tiny_models


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's `nodes` module, in process on the CPU, with the pack loaded by ComfyUI's loader.
    EXPANSE_TEST_GPU=1 lets ComfyUI use a GPU, to check the device paths on a machine with one
    (the stored references were computed on the CPU, so a few comparisons may differ there)."""
    return host.start_in_process(cpu=os.environ.get("EXPANSE_TEST_GPU") != "1")


@pytest.fixture(scope="session")
def nodes(comfy_nodes):
    """NODE_CLASS_MAPPINGS of the in-process host: ComfyUI's nodes and ours."""
    return comfy_nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="session")
def pack_node_ids(comfy_nodes) -> list[str]:
    """The ids of the node classes the pack's nodes package defines (what ComfyUI must register)."""
    import expanse.nodes
    from comfy_api.latest import io

    return sorted(cls.define_schema().node_id for cls in vars(expanse.nodes).values()
                  if isinstance(cls, type) and issubclass(cls, io.ComfyNode) and cls is not io.ComfyNode)


@pytest.fixture(scope="module")
def single_thread():
    """Ops on the tiny models take microseconds; with two threads on a busy 2-core machine each op
    waits ~30 ms at OpenMP barriers, which turns a 3-step KSampler into seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def progress_updates(comfy_nodes, monkeypatch):
    """Every (value, total) given to a ComfyUI ProgressBar during the test. Recorded at the bar,
    not at the global hook: ComfyUI 0.33.0 throttles what reaches the hook (first, last, and one
    update per interval)."""
    import comfy.utils

    seen = []
    update_absolute = comfy.utils.ProgressBar.update_absolute

    def record(bar, value, total=None, preview=None):
        update_absolute(bar, value, total, preview)
        seen.append((bar.current, bar.total))

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", record)
    return seen


@pytest.fixture(scope="session")
def node(comfy_nodes):
    """node("KSampler") -> the registered class, ours or ComfyUI's."""
    return lambda name: comfy_nodes.NODE_CLASS_MAPPINGS[name]


@pytest.fixture(scope="session")
def tiny_vae(comfy_nodes):
    return tiny_models.tiny_vae()


@pytest.fixture(scope="session")
def conds(nodes):
    """(positive, negative) CONDITIONING from the tiny CLIP through ComfyUI's CLIPTextEncode."""
    clip = tiny_models.tiny_clip()
    encode = nodes["CLIPTextEncode"]()
    return encode.encode(clip, "a lake under a night sky")[0], encode.encode(clip, "")[0]


@pytest.fixture(scope="session")
def unet(comfy_nodes):
    """The tiny SD1.5-layout UNet (tiny_models.tiny_unet), as a ModelPatcher."""
    return tiny_models.tiny_unet()
