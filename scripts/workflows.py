"""The templates in example_workflows/: written as UI-format JSON the way ComfyUI's frontend saves
a workflow, each with a thumbnail drawn from a real run on the pack's demo model, and the file
names are the titles the template browser shows. Write them on the newest host (.venv-latest):

    .venv-latest/bin/python scripts/workflows.py                  # start a server, write every JSON and .jpg
    .venv-latest/bin/python scripts/workflows.py --only tiled_diffusion_panorama tiled_diffusion_demo
    .venv-latest/bin/python scripts/workflows.py --no-thumbnails --object-info object_info.json
    .venv-latest/bin/python scripts/workflows.py --url http://127.0.0.1:8188   # use a running server
    .venv-latest/bin/python scripts/workflows.py --threads 0   # the server with torch's own thread count (default 1)
    .venv-latest/bin/python scripts/workflows.py --list        # the templates' ids and titles

Files of templates that no longer exist (a renamed title) are removed when every template is
written. The workflows, the save format, the conversion to the API prompt, the demo-model runs and
the thumbnails live in harness/expanse_harness/workflows/ (its __init__ lists a module per job);
this is their command line.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

from expanse_harness.host import ROOT
from expanse_harness.server import ComfyServer
from expanse_harness.workflows import EXAMPLE_DIR, TEMPLATES, Definitions, thumbnail, write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(TEMPLATES), metavar="ID",
                        help="these templates only (ids: see --list)")
    parser.add_argument("--list", action="store_true", help="print each template's id and title, and exit")
    parser.add_argument("--no-thumbnails", action="store_true", help="write the JSON files only")
    parser.add_argument("--object-info", type=pathlib.Path, help="node definitions from a saved /object_info")
    parser.add_argument("--save-object-info", type=pathlib.Path, help="save the server's /object_info here")
    parser.add_argument("--url", help="a running ComfyUI with the pack (else one is started)")
    parser.add_argument("--out", type=pathlib.Path, default=EXAMPLE_DIR)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of the server this script starts (OMP_NUM_THREADS; 0: torch's default). "
                             "One thread is fast enough for these small runs, many times faster on a machine busy "
                             "with other jobs, and keeps the thumbnails the same from machine to machine")
    args = parser.parse_args(argv)
    if args.list:
        for template in TEMPLATES.values():
            print(f"{template.id:34} {template.title}")
        return 0
    names = args.only or list(TEMPLATES)
    args.out.mkdir(parents=True, exist_ok=True)

    server = None
    if args.url:
        server = ComfyServer.attach(args.url)
    elif not (args.no_thumbnails and args.object_info):
        if args.threads:
            os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server inherits the environment
        server = ComfyServer(workdir=ROOT / ".cache" / "workflows")
        print("starting ComfyUI ...", flush=True)
        server.start()
    try:
        object_info = json.loads(args.object_info.read_text()) if args.object_info else server.get("/object_info")
        if args.save_object_info:
            args.save_object_info.write_text(json.dumps(object_info))
        defs = Definitions(object_info)
        for name in names:
            template = TEMPLATES[name]
            workflow = template.build(defs).to_ui()
            path = args.out / f"{template.title}.json"
            write_json(path, workflow)
            print(f"wrote {path} ({len(workflow['nodes'])} nodes)", flush=True)
            if not args.no_thumbnails:
                started = time.monotonic()
                path.with_suffix(".jpg").write_bytes(thumbnail(server, name, workflow, defs))
                print(f"  thumbnail in {time.monotonic() - started:.0f} s", flush=True)
        if not args.only:  # every template written: files of old titles go
            titles = {t.title for t in TEMPLATES.values()}
            for stale in sorted(p for p in args.out.iterdir() if p.suffix in (".json", ".jpg")):
                if stale.stem not in titles:
                    stale.unlink()
                    print(f"removed {stale} (no template has this title)", flush=True)
    finally:
        if server is not None and server.proc is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
