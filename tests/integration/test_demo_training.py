"""demo/train.py: deterministic from its seed and resumable from its checkpoints (a few steps of
each stage, so the test takes seconds rather than the hour a real run takes)."""
import json
import pathlib
import subprocess
import sys

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_train(workdir: pathlib.Path, out: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "demo" / "train.py"), "--quick", "--workdir", str(workdir),
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=600)


def train(workdir: pathlib.Path, out: pathlib.Path, *extra: str) -> str:
    proc = run_train(workdir, out, *extra)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def training_record(path: pathlib.Path) -> dict:
    """The `training` settings a weight file's metadata records."""
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["expanse_demo"])["training"]


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


def test_joint_refit_changes_only_the_vae_and_records_itself(first_run, tmp_path):
    """--joint-from on an exported file: the UNet and text encoder are copied through bit for bit,
    the VAE moves, and the file's metadata lists the refit with its loss."""
    _, out_a, _ = first_run
    out_r = tmp_path / "refit.safetensors"
    log = train(tmp_path, out_r, "--joint-from", str(out_a), "--joint-loss", "log-mse")
    assert "[vae-joint] 3/3" in log and "[unet]" not in log
    a, r = load_file(str(out_a)), load_file(str(out_r))
    assert a.keys() == r.keys()
    changed = {k for k in a if not (a[k] == r[k]).all()}
    assert changed and all(k.startswith("vae.") for k in changed)
    training = training_record(out_r)
    assert training["refits"][-1]["stage"] == "fit_joint"
    assert training["refits"][-1]["joint_loss"] == "log-mse"
    assert training["joint_loss"] == "log-mse"


def test_hour_schedule_skips_stages_1b_1c_and_frees_the_encoder(tmp_path):
    """--schedule hour: no crop or decoder-only stage, stage 1d without the anchor (the UNet comes
    after it), and the file records the schedule; an explicit flag still overrides the preset."""
    out = tmp_path / "hour.safetensors"
    log = train(tmp_path, out, "--schedule", "hour", "--joint-lr", "2e-4")
    assert "[vae] 4/4" in log and "[vae-joint] 3/3" in log and "[unet] 6/6" in log
    assert "[vae-fit]" not in log and "[vae-decoder]" not in log and "latent drift" not in log
    training = training_record(out)
    assert training["schedule"] == "hour" and training["fit_steps"] == training["dec_steps"] == 0
    assert training["joint_loss"] == "log-mse" and training["joint_anchor"] == 0.0
    assert training["joint_lr"] == 2e-4


def test_hour_schedule_refuses_to_refit_an_exported_file(first_run, tmp_path):
    """A refit must keep the latents the file's UNet was trained on; the hour preset frees the encoder."""
    _, out_a, _ = first_run
    proc = run_train(tmp_path, tmp_path / "r.safetensors", "--schedule", "hour", "--joint-from", str(out_a))
    assert proc.returncode != 0 and "--schedule hour trains from scratch" in proc.stderr
    assert not (tmp_path / "r.safetensors").exists()


def test_log_mse_loss_is_minus_a_tenth_of_the_mean_psnr(monkeypatch):
    """The refit's loss is the model card's measure: per-picture PSNR on the 0..1 scale of the
    clamped decode, averaged over pictures."""
    import math

    import torch
    from expanse.demo import train as demo_train

    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    recon = x + torch.randn(3, 3, 16, 16, generator=g) * torch.tensor([0.1, 0.2, 0.4]).view(3, 1, 1, 1)
    psnrs = []
    for picture, target in zip(recon, x):
        mse = torch.mean(((picture.clamp(-1, 1) + 1) / 2 - (target + 1) / 2) ** 2).item()
        psnrs.append(10 * math.log10(1 / mse))
    loss = demo_train.log_mse_loss(recon, x).item()
    # Within 0.01 dB: the loss's 1e-6 guard against log(0) is negligible at these errors.
    assert loss == pytest.approx(-sum(psnrs) / len(psnrs) / 10, abs=1e-3)
    assert max(psnrs) - min(psnrs) > 10  # pictures of very different quality, averaged in dB
