"""Driving a real ComfyUI server with the pack installed: start it (or attach to a running one),
upload pictures, queue an API-format prompt, follow its progress, fetch the images. Used by the
main job, the example-workflow script and the end-to-end tests.

Only the standard library and aiohttp (a ComfyUI requirement, so always in the host's venv); torch
is asked about the machine's accelerator in a child process, never imported here.

Device: the tests run ComfyUI with --cpu (CPU-only CI, results that do not depend on the machine),
the default here; the main job asks for "auto", which leaves ComfyUI on the CUDA, MPS or XPU device
that torch in the server's Python sees, and on the CPU where it sees none.
"""
from __future__ import annotations

import asyncio
import json
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from .host import comfy_dir


# Where the server computes: CPU always passes --cpu; AUTO passes it only where torch sees no accelerator.
CPU, AUTO = "cpu", "auto"
DEVICES = (CPU, AUTO)

# The accelerators ComfyUI's model management uses, in the order it looks for them; run in a child.
_PROBE = """import torch
xpu = getattr(torch, "xpu", None)
mps = getattr(torch.backends, "mps", None)
print("xpu" if xpu is not None and xpu.is_available() else "cuda" if torch.cuda.is_available()
      else "mps" if mps is not None and mps.is_available() else "")
"""


def accelerator(python: str = sys.executable) -> str | None:
    """The accelerator ("cuda", "mps" or "xpu") torch sees in `python` (the server's: this one),
    or None. A child process asks, so the harness never imports torch (nor CUDA into a parent
    that later forks)."""
    try:
        found = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = found.stdout.split()
    return lines[-1] if found.returncode == 0 and lines else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI server on 127.0.0.1 in its own process, with its input, output, temp and user
    folders in `workdir` so runs leave the host clean. Extra model folders (name -> path) are
    passed through an extra_model_paths.yaml. device: CPU (--cpu, the tests' default) or AUTO
    (ComfyUI's own choice where torch sees an accelerator, else --cpu); `runs_on` says which
    ("cpu", "cuda", "mps" or "xpu") once the command line is built."""

    def __init__(self, workdir: pathlib.Path | None = None, model_dirs: dict[str, pathlib.Path] | None = None,
                 log_path: pathlib.Path | None = None, device: str = CPU):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        self.workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="expanse-comfy-"))
        self.device = device
        self.runs_on: str | None = None
        self.model_dirs = model_dirs or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def attach(cls, url: str) -> "ComfyServer":
        """A ComfyServer for a server started elsewhere (nothing is started or stopped)."""
        server = cls.__new__(cls)
        server.url, server.proc = url.rstrip("/"), None
        return server

    def __enter__(self) -> "ComfyServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def command(self) -> list[str]:
        """ComfyUI's command line (main.py in the host folder), with --cpu unless device is AUTO and
        torch sees an accelerator; sets runs_on. Writes the extra model paths file it names."""
        self.runs_on = (accelerator() if self.device == AUTO else None) or CPU
        args = [sys.executable, "main.py", *(["--cpu"] if self.runs_on == CPU else []),
                "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--input-directory", str(self.workdir / "input"),
                "--output-directory", str(self.workdir / "output"), "--temp-directory", str(self.workdir / "temp"),
                "--user-directory", str(self.workdir / "user"),
                "--database-url", f"sqlite:///{self.workdir / 'user' / 'comfyui.db'}"]
        if self.model_dirs:
            config = self.workdir / "extra_model_paths.yaml"
            lines = ["expanse_run:", f"  base_path: {self.workdir}"]
            lines += [f"  {kind}: {path}" for kind, path in self.model_dirs.items()]
            config.write_text("\n".join(lines) + "\n")
            args += ["--extra-model-paths-config", str(config)]
        return args

    def start(self, timeout: float = 180.0) -> None:
        for sub in ("input", "output", "temp", "user"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        args = self.command()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=comfy_dir(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # --- HTTP -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str):
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:300]!r}")
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post_json(self, path: str, payload: dict) -> tuple[int, dict]:
        status, body = self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        return status, (json.loads(body) if body else {})

    def upload_image(self, image: pathlib.Path | bytes, name: str | None = None, overwrite: bool = False) -> str:
        """POST /upload/image (a PNG file, or its bytes under `name`); returns the name the server
        stored it under. overwrite=True keeps the name: a picture of the same name is replaced
        instead of the upload being renamed."""
        if isinstance(image, bytes):
            data = image
        else:
            data, name = image.read_bytes(), name or image.name
        boundary = uuid.uuid4().hex
        part = f"--{boundary}\r\nContent-Disposition: form-data; name="
        head = f"{part}\"overwrite\"\r\n\r\ntrue\r\n" if overwrite else ""
        head += f"{part}\"image\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n"
        body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
        status, resp = self.request("POST", "/upload/image", body,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise RuntimeError(f"uploading {name} failed: HTTP {status}: {resp[:300]!r}")
        stored = json.loads(resp)["name"]
        if overwrite and stored != name:
            raise RuntimeError(f"uploading {name} failed: the server stored it as {stored}")
        return stored

    def queue(self, prompt: dict, client_id: str | None = None) -> tuple[int, dict]:
        """POST /prompt; returns (HTTP status, answer) so callers can inspect node_errors."""
        return self.post_json("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})

    def wait(self, prompt_id: str, timeout: float = 1800.0, on_progress=None, client_id: str | None = None) -> dict:
        """Waits for the prompt's /history entry. With on_progress, follows the websocket's progress
        messages (value, max, node id) while waiting."""
        if on_progress is not None and client_id is not None:
            try:
                asyncio.run(asyncio.wait_for(self._follow(prompt_id, client_id, on_progress), timeout))
            except asyncio.TimeoutError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                if history[prompt_id]["status"].get("status_str") in ("success", "error"):
                    return history[prompt_id]
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, timeout: float = 1800.0, on_progress=None, what: str = "the prompt") -> dict:
        """Queue, wait, check: the prompt's /history entry once it succeeded. Raises RuntimeError
        naming `what` if ComfyUI refuses the prompt (with its node_errors) or the run fails.
        on_progress(value, max, node id) follows the progress while it runs."""
        client_id = uuid.uuid4().hex
        status, answer = self.queue(prompt, client_id)
        if status != 200:
            raise RuntimeError(f"ComfyUI refused {what}: {json.dumps(answer)[:2000]}")
        entry = self.wait(answer["prompt_id"], timeout=timeout, on_progress=on_progress, client_id=client_id)
        if entry["status"]["status_str"] != "success":
            raise RuntimeError(f"{what} failed: {json.dumps(entry['status'])[:2000]}")
        return entry

    async def _follow(self, prompt_id: str, client_id: str, on_progress) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.url}/ws?clientId={client_id}") as ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    data = event.get("data", {})
                    if data.get("prompt_id") not in (None, prompt_id):
                        continue
                    if event["type"] == "progress":
                        on_progress(data["value"], data["max"], data.get("node"))
                    elif event["type"] == "executing" and data.get("node") is None:
                        return
                    elif event["type"] in ("execution_error", "execution_interrupted", "execution_success"):
                        return

    def images(self, entry: dict) -> list[bytes]:
        """The PNG bytes of every image a finished prompt saved, fetched through /view."""
        out = []
        for node_output in entry.get("outputs", {}).values():
            for img in node_output.get("images", []):
                query = urllib.parse.urlencode({k: img[k] for k in ("filename", "subfolder", "type")})
                out.append(self.get(f"/view?{query}"))
        return out
