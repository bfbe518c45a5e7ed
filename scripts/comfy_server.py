"""Driving a real ComfyUI server with the pack installed: start it, queue an API-format prompt,
follow its progress, fetch the images. Used by the main job and by the end-to-end tests.

Only the standard library and aiohttp (a ComfyUI requirement, so always in the host's venv).
"""
from __future__ import annotations

import asyncio
import json
import os
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

ROOT = pathlib.Path(__file__).resolve().parents[1]


def comfy_dir() -> pathlib.Path:
    """The ComfyUI host: COMFYUI_PATH, else the one the set-up script recorded in the running
    Python's venv (.venv runs .comfyui/, .venv-latest runs .comfyui-latest/), else .comfyui/."""
    if os.environ.get("COMFYUI_PATH"):
        return pathlib.Path(os.environ["COMFYUI_PATH"]).resolve()
    recorded = pathlib.Path(sys.prefix) / ".expanse-comfyui-path"
    return pathlib.Path(recorded.read_text().strip()) if recorded.exists() else ROOT / ".comfyui"


def register_pack() -> None:
    """Makes the pack importable as `expanse` (core/ needs no ComfyUI). The repository root itself
    must not go on sys.path: the pack's `nodes/` would hide ComfyUI's top-level `nodes` module."""
    import importlib.util

    if "expanse" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("expanse", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["expanse"] = pack
    spec.loader.exec_module(pack)


def import_host(cpu: bool = True) -> pathlib.Path:
    """Puts the ComfyUI host on sys.path for in-process use; cpu=True before comfy.model_management
    is imported keeps ComfyUI off any GPU."""
    host = comfy_dir()
    if not (host / "main.py").exists():
        raise RuntimeError(f"no ComfyUI at {host}: run `make setup` (or set COMFYUI_PATH)")
    if str(host) not in sys.path:
        sys.path.insert(0, str(host))
    import comfy.cli_args

    if cpu:
        comfy.cli_args.args.cpu = True
    return host


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI server on 127.0.0.1 in its own process, with its input, output, temp and user
    folders in `workdir` so runs leave the host clean. Extra model folders (name -> path) are
    passed through an extra_model_paths.yaml."""

    def __init__(self, workdir: pathlib.Path | None = None, model_dirs: dict[str, pathlib.Path] | None = None,
                 log_path: pathlib.Path | None = None):
        self.workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="expanse-comfy-"))
        self.model_dirs = model_dirs or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ComfyServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        for sub in ("input", "output", "temp", "user"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
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

    def upload_image(self, png_path: pathlib.Path) -> str:
        boundary = uuid.uuid4().hex
        data = png_path.read_bytes()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{png_path.name}\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        status, resp = self.request("POST", "/upload/image", body,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise RuntimeError(f"upload failed: HTTP {status}: {resp[:300]!r}")
        return json.loads(resp)["name"]

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
