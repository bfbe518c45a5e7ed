import pytest
from expanse_harness.server import ComfyServer
from expanse_harness.workflows import Definitions


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The real ComfyUI server (main.py --cpu) with the pack installed, its folders in a temp dir."""
    with ComfyServer(workdir=tmp_path_factory.mktemp("comfy")) as s:
        yield s


@pytest.fixture(scope="module")
def one_thread_server(tmp_path_factory):
    """A real server of the requesting module's own, with one CPU thread: on a machine whose cores
    are shared with other jobs, torch's threads wait on each other and the many small runs of a
    module take 10-30x longer. A module uses it by defining `server` as this fixture."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # the server process inherits it
        with ComfyServer(workdir=tmp_path_factory.mktemp("comfy-1-thread")) as s:
            yield s


@pytest.fixture(scope="module")
def object_info(server) -> dict:
    return server.get("/object_info")


@pytest.fixture(scope="module")
def defs(object_info):
    return Definitions(object_info)
