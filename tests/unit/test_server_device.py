"""Where the ComfyUI server computes (harness/expanse_harness/server.py): the tests keep --cpu (the
default: CPU-only CI, results independent of the machine); the main job (scripts/main_job.py)
asks for auto, which drops --cpu where torch in the server's Python sees an accelerator. No GPU is
needed: the accelerator probe is replaced where a test says what it finds."""
import importlib.util
import pathlib

import pytest

from expanse_harness import server as server_module
from expanse_harness.server import AUTO, CPU, ComfyServer

ROOT = pathlib.Path(__file__).resolve().parents[2]


def command_line(monkeypatch, tmp_path, found, **kwargs):
    """(ComfyUI's command line, runs_on) with the probe answering `found` (None: no accelerator)."""
    asked = []
    monkeypatch.setattr(server_module, "accelerator", lambda *a: asked.append(True) or found)
    server = ComfyServer(workdir=tmp_path, **kwargs)
    return server.command(), server.runs_on, asked


@pytest.mark.parametrize("found", [None, "cuda", "mps"])
def test_the_default_the_tests_use_is_the_cpu_whatever_the_machine_has(monkeypatch, tmp_path, found):
    args, runs_on, asked = command_line(monkeypatch, tmp_path, found)
    assert "--cpu" in args and runs_on == CPU
    assert not asked  # the default never even asks


@pytest.mark.parametrize("found", ["cuda", "mps", "xpu"])
def test_auto_leaves_comfyui_on_the_accelerator_torch_sees(monkeypatch, tmp_path, found):
    args, runs_on, asked = command_line(monkeypatch, tmp_path, found, device=AUTO)
    assert "--cpu" not in args and runs_on == found and asked
    assert args[1:2] == ["main.py"] and "--listen" in args  # the rest of the command line is unchanged


def test_auto_without_an_accelerator_is_the_cpu(monkeypatch, tmp_path):
    args, runs_on, _ = command_line(monkeypatch, tmp_path, None, device=AUTO)
    assert "--cpu" in args and runs_on == CPU


def test_the_command_line_differs_only_by_the_cpu_flag(monkeypatch, tmp_path):
    on_gpu, _, _ = command_line(monkeypatch, tmp_path, "cuda", device=AUTO, model_dirs={"checkpoints": tmp_path})
    on_cpu, _, _ = command_line(monkeypatch, tmp_path, "cuda", model_dirs={"checkpoints": tmp_path})
    port = lambda args: args[args.index("--port") + 1]  # noqa: E731 (each server picks a free port)
    assert [a for a in on_cpu if a not in ("--cpu", port(on_cpu))] == \
        [a for a in on_gpu if a != port(on_gpu)]


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device must be one of cpu, auto"):
        ComfyServer(device="gpu")


def test_the_probe_asks_torch_in_the_servers_python():
    """The real probe, in a child process of this venv's Python: it answers what torch here says."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    expected = ("xpu" if xpu is not None and xpu.is_available() else "cuda" if torch.cuda.is_available()
                else "mps" if mps is not None and mps.is_available() else None)
    assert server_module.accelerator() == expected


def test_a_python_that_cannot_run_finds_no_accelerator():
    assert server_module.accelerator("/nonexistent/python") is None


def load_main_job():
    spec = importlib.util.spec_from_file_location("expanse_main_job", ROOT / "scripts" / "main_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_main_job_asks_for_the_gpu_unless_told_otherwise(monkeypatch):
    main_job = load_main_job()
    monkeypatch.delenv("EXPANSE_DEVICE", raising=False)
    assert main_job.server_device() == AUTO
    monkeypatch.setenv("EXPANSE_DEVICE", "cpu")
    assert main_job.server_device() == CPU
    monkeypatch.setenv("EXPANSE_DEVICE", "tpu")
    with pytest.raises(SystemExit, match="EXPANSE_DEVICE=tpu"):
        main_job.server_device()
