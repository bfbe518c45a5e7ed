"""demo/train.py: deterministic from its seed and resumable from its checkpoints (a few steps of
each stage, so the test takes seconds rather than the hour a real run takes)."""
import pathlib
import subprocess
import sys

import pytest
from safetensors.torch import load_file

ROOT = pathlib.Path(__file__).resolve().parents[2]


def train(workdir: pathlib.Path, out: pathlib.Path, *extra: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "demo" / "train.py"), "--quick", "--workdir", str(workdir),
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("train-a")
    out = work / "a.safetensors"
    log = train(work, out)
    return work, out, log


def test_same_seed_gives_the_same_weights(first_run, tmp_path):
    _, out_a, log = first_run
    for line in ("[vae] 4/4", "[vae-fit] 3/3", "[vae-decoder] 3/3", "[vae-joint] 3/3", "[unet] 6/6",
                 "[export] wrote"):
        assert line in log  # every stage shows its progress
    out_b = tmp_path / "b.safetensors"
    train(tmp_path, out_b)
    a, b = load_file(str(out_a)), load_file(str(out_b))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)


def test_rerun_resumes_from_checkpoints_instead_of_retraining(first_run, tmp_path):
    work, out_a, _ = first_run
    out_c = tmp_path / "c.safetensors"
    log = train(work, out_c)
    assert "[vae" not in log  # no VAE step was taken again
    assert "[unet] " not in log
    a, c = load_file(str(out_a)), load_file(str(out_c))
    assert all((a[k] == c[k]).all() for k in a)


def test_another_seed_gives_other_weights(first_run, tmp_path):
    _, out_a, _ = first_run
    out_d = tmp_path / "d.safetensors"
    train(tmp_path, out_d, "--seed", "1")
    a, d = load_file(str(out_a)), load_file(str(out_d))
    assert any(not (a[k] == d[k]).all() for k in a if a[k].is_floating_point())
