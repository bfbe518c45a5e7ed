"""The fuzz tier: one real server (main.py --cpu, one CPU thread) for the whole session, restarted
only if a hang leaves it busy; each module's good prompt drawn at its start and again after its
table; every case's outcome written to tests/output/fuzz-<ComfyUI version>.json."""
from __future__ import annotations

import json
import os
import pathlib
import re
import resource
import time

import pytest

from expanse_harness.host import ROOT, comfy_dir
from expanse_harness.server import ComfyServer
from fuzzlib import RESULTS, Runner


def pytest_configure(config):
    # Each failure's message says the case, what was expected and what came back: one line each
    # (hundreds of cases fail the same way while a node lacks its entry checks). Only when this
    # tier runs alone and no --tb was given.
    here = pathlib.Path(__file__).parent.resolve()
    alone = config.args and all(here in [p, *p.parents] for p in
                                (pathlib.Path(config.invocation_params.dir, a.split("::")[0]).resolve()
                                 for a in config.args))
    if alone and config.option.tbstyle == "auto":
        config.option.tbstyle = "line"


def host_version() -> str:
    found = re.search(r'__version__\s*=\s*"([^"]+)"', (comfy_dir() / "comfyui_version.py").read_text())
    return found.group(1) if found else "unknown"


# The server's heap (RLIMIT_DATA: heap and private anonymous mappings, what torch allocates; a fresh
# server with the demo model holds about 1.3 GiB): a size that should have been refused and reaches
# an allocation fails there instead of taking a shared machine's memory.
SERVER_DATA_LIMIT = int(float(os.environ.get("EXPANSE_FUZZ_SERVER_GIB", "4")) * 2 ** 30)


@pytest.fixture(scope="session")
def runner(tmp_path_factory):
    """Runs the cases; one CPU thread, as the e2e tier's one_thread_server (many small runs on a
    machine whose cores are shared), and a bounded heap (SERVER_DATA_LIMIT)."""
    def start() -> ComfyServer:
        server = ComfyServer(workdir=tmp_path_factory.mktemp("comfy-fuzz"))
        previous = os.environ.get("OMP_NUM_THREADS")
        limits = resource.getrlimit(resource.RLIMIT_DATA)
        os.environ["OMP_NUM_THREADS"] = "1"  # the server process inherits it, and the limit
        hard = limits[1]
        resource.setrlimit(resource.RLIMIT_DATA, (SERVER_DATA_LIMIT if hard == resource.RLIM_INFINITY
                                                  else min(SERVER_DATA_LIMIT, hard), hard))
        try:
            server.start()
        finally:
            resource.setrlimit(resource.RLIMIT_DATA, limits)
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
        return server

    run = Runner(start, lambda server: server.stop())
    yield run
    run.close()


@pytest.fixture(scope="session")
def object_info(runner) -> dict:
    return runner.server.get("/object_info")


@pytest.fixture(scope="module", autouse=True)
def good_picture(request, runner):
    """The module's good prompt (its table's base prompt), drawn on an emptied cache before the
    table; the module's last test draws it again and compares."""
    return runner.picture(request.module.TABLE.build())


def pytest_sessionfinish(session):
    if not RESULTS:
        return
    out = ROOT / "tests" / "output"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fuzz-{host_version()}.json"
    path.write_text(json.dumps({"comfyui": host_version(), "date": time.strftime("%Y-%m-%d %H:%M"),
                                "cases": RESULTS}, indent=1))


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    by_node: dict[str, list[int]] = {}
    for r in RESULTS:
        counts = by_node.setdefault(r["node"], [0, 0, 0.0])
        counts[0 if r["passed"] else 1] += 1
        counts[2] += r["seconds"]
    terminalreporter.write_line(f"fuzz cases on ComfyUI {host_version()} (passed / failed / seconds):")
    for node, (ok, bad, seconds) in sorted(by_node.items()):
        terminalreporter.write_line(f"  {node}: {ok} / {bad} / {seconds:.0f}")
    slow = sorted(RESULTS, key=lambda r: -r["seconds"])[:5]
    terminalreporter.write_line("  slowest: " + ", ".join(f"{r['node']} {r['case']} {r['seconds']:.1f} s" for r in slow))
