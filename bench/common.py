"""What every Expanse benchmark shares: the host, the machine description, fresh-process workers
with peak-memory measurement, and writing results (JSON, CSV, Markdown) to bench/results/."""
from __future__ import annotations

import csv
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def start_host():
    """ComfyUI in this process with the pack loaded; on a GPU machine ComfyUI may use the GPU."""
    from expanse_harness import host

    return host.start_in_process(cpu=not _cuda_available())


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    info = {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_gib, 1), "torch": torch.__version__,
            "python": platform.python_version(), "device": "cpu"}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


class PeakRSS:
    """Peak resident memory of this process; a watchdog ends the process (exit code 3) before it
    takes the machine down, so a baseline that does not fit is reported as such."""

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page
            if rss > self.limit:
                sys.stderr.write(f"memory watchdog: RSS {rss / 2**30:.1f} GiB over the limit\n")
                os._exit(3)
            time.sleep(0.05)

    @staticmethod
    def peak_bytes() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(script: pathlib.Path, args: list[str], timeout: float) -> dict:
    """Runs `script --worker args...` in a fresh process; returns the JSON it prints last."""
    proc = subprocess.run([sys.executable, str(script), "--worker", *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode == 3:
        return {"status": "out of memory"}
    if proc.returncode != 0:
        return {"status": f"failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_results(name: str, rows: list[dict], columns: list[str], header: str, notes: list[str]) -> None:
    """Writes bench/results/<name>.{json,csv,md}; a run on a GPU writes <name>_gpu.*, so the CPU
    and GPU figures of one benchmark sit side by side."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    if info["device"] != "cpu":
        name = f"{name}_gpu"
    stamp = time.strftime("%Y-%m-%d")
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": info, "date": stamp, "rows": rows}, indent=2))
    with open(RESULTS / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    lines = [f"### {header}", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, device {info['device']}, "
             f"torch {info['torch']}; {stamp}.", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    lines += [""] + [f"- {n}" for n in notes]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# SD1.5's UNet layout (ComfyUI's unet_config for an SD1.5 checkpoint).
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_spatial_transformer": True, "use_linear_in_transformer": False, "context_dim": 768, "legacy": False,
    "adm_in_channels": None, "num_heads": 8, "num_head_channels": -1,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def sd15_model(device):
    """A ModelPatcher around ComfyUI's UNetModel in SD1.5's layout with seeded random weights; in
    half precision on a GPU, as ComfyUI runs an SD1.5 checkpoint there."""
    import comfy.latent_formats
    import torch

    from expanse.runtime import small_models
    from expanse_harness import tiny_models

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = small_models.unet_patcher(dict(SD15_UNET), comfy.latent_formats.SD15(), "eps", dtype=dtype,
                                      device=device)
    unet = model.model.diffusion_model
    unet.load_state_dict(tiny_models.seeded_module_state_dict(unet, 0))
    return model


class ModelMeter:
    """Counts and times the UNet's forward calls through ComfyUI's DIFFUSION_MODEL wrapper: calls,
    evaluated latent area (samples x height x width) and seconds. skip_model: return zeros instead
    of running the UNet, to count a schedule's evaluations at sizes too slow to run."""

    def __init__(self, model, skip_model: bool = False):
        import comfy.patcher_extension

        self.calls, self.area, self.seconds = 0, 0, 0.0
        self.skip_model = skip_model
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "bench.meter", self._wrap)

    def reset(self) -> None:
        self.calls, self.area, self.seconds = 0, 0, 0.0

    def _wrap(self, executor, x, *args, **kwargs):
        import torch

        cuda = x.is_cuda
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = torch.zeros_like(x[:, :4]) if self.skip_model else executor(x, *args, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.area += x.shape[0] * x.shape[-2] * x.shape[-1]
        return out


class VAEMeter:
    """Times every VAE run: ComfyUI's own VAE.encode/decode and the pack's tiled VAE (one entry
    point, `_run` in expanse.runtime.vae, the one copy ComfyUI's nodes run), so a benchmark can
    tell model time from the rest. Nested calls (a fallback inside a tiled run) count once."""

    def __init__(self):
        import comfy.sd
        from expanse.runtime import vae as runtime_vae

        self.seconds, self._depth = 0.0, 0
        for name in ("encode", "decode"):
            setattr(comfy.sd.VAE, name, self._timed(getattr(comfy.sd.VAE, name)))
        runtime_vae._run = self._timed(runtime_vae._run)

    def reset(self) -> None:
        self.seconds = 0.0

    def _timed(self, fn):
        def run(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            result = []
            try:
                self.seconds += timed(lambda: result.append(fn(*args, **kwargs)))
            finally:
                self._depth -= 1
            return result[0]
        return run


def timed(fn, *args, **kwargs) -> float:
    """Seconds fn(*args, **kwargs) takes, the device synchronised on both sides."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args, **kwargs)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start
