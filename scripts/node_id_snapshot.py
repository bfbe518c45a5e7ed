"""Writes the snapshot of ComfyUI-Manager's node map that tests/unit/test_node_ids.py checks our
node ids against: every node id another pack registers, one per line, gzipped.

    .venv/bin/python scripts/node_id_snapshot.py path/to/extension-node-map.json

The map is ComfyUI-Manager's `extension-node-map.json` (its repository, or ../shared/reference/);
each value is [node ids, metadata]. Refresh the snapshot when choosing a new node id.
"""
from __future__ import annotations

import gzip
import json
import pathlib
import sys

SNAPSHOT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "unit" / "data" / "manager_node_ids.txt.gz"
OUR_REPOSITORY = "https://github.com/expanse-nodes/expanse"


def main(map_path: str) -> None:
    node_map = json.loads(pathlib.Path(map_path).read_text())
    ids = sorted({node_id for repository, (node_ids, _meta) in node_map.items()
                  if repository.rstrip("/") != OUR_REPOSITORY for node_id in node_ids})
    header = f"# node ids registered in ComfyUI-Manager's node map ({len(node_map)} packs): {pathlib.Path(map_path).name}"
    # mtime=0: the same map gives the same bytes, so a refresh without changes leaves no diff
    SNAPSHOT.write_bytes(gzip.compress("\n".join([header, *ids, ""]).encode(), mtime=0))
    print(f"{len(ids)} ids from {len(node_map)} packs -> {SNAPSHOT}")


if __name__ == "__main__":
    main(sys.argv[1])
