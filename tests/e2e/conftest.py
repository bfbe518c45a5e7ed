import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))  # comfy_server.py and main_job.py, shared with the main job

from comfy_server import ComfyServer  # noqa: E402


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The real ComfyUI server (main.py --cpu) with the pack installed, its folders in a temp dir."""
    with ComfyServer(workdir=tmp_path_factory.mktemp("comfy")) as s:
        yield s
