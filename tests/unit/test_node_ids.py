"""Our node ids are ours alone: ComfyUI keeps one node per id, so an id another pack registers
hides one of the two nodes, and ComfyUI-Manager's "install missing nodes" points at the other pack.

The snapshot (data/manager_node_ids.txt.gz) is every id in ComfyUI-Manager's node map,
Comfy-Org/ComfyUI-Manager at f39cbd56 (2026-08-19), 5,590 packs; scripts/node_id_snapshot.py
rewrites it from a newer map."""
import ast
import gzip
import pathlib

import pytest

PACK = pathlib.Path(__file__).resolve().parents[2]
SNAPSHOT = pathlib.Path(__file__).parent / "data" / "manager_node_ids.txt.gz"

# The best-known peers' ids that ours once equalled (the Manager's map, 2026-08): a check that
# holds even if the snapshot is refreshed from a map without these packs.
PEER_IDS = {
    "shiimizu/ComfyUI-TiledDiffusion": {"TiledDiffusion", "SpotDiffusionParams_TiledDiffusion",
                                         "VAEDecodeTiled_TiledDiffusion", "VAEEncodeTiled_TiledDiffusion"},
    "YaserJaradeh/comfyui-yaser-nodes": {"TiledDiffusion", "TiledVAEEncode", "TiledVAEDecode"},
    "ttulttul/ComfyUI-FlowMatching-Upscaler": {"LatentUpscaleAdvanced"},
}


def our_node_ids() -> list[str]:
    """The node_id= of every schema in nodes/, read from the source (no ComfyUI needed)."""
    found = []
    for path in sorted((PACK / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.keyword) and node.arg == "node_id":
                assert isinstance(node.value, ast.Constant), f"{path.name}: node_id must be a literal string"
                found.append(node.value.value)
    return found


def registered_elsewhere() -> set[str]:
    lines = gzip.decompress(SNAPSHOT.read_bytes()).decode().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def test_every_node_is_found():
    assert len(our_node_ids()) == 10 and len(set(our_node_ids())) == 10, our_node_ids()


@pytest.mark.parametrize("node_id", our_node_ids())
def test_node_id_is_prefixed_and_registered_by_no_other_pack(node_id):
    assert node_id.startswith("Expanse"), node_id
    assert node_id not in registered_elsewhere(), f"{node_id} is registered by another pack"
    assert all(node_id not in ids for ids in PEER_IDS.values())


def test_snapshot_is_the_managers_map():
    ids = registered_elsewhere()
    assert len(ids) > 30000  # a truncated snapshot would pass everything
    for peer, peer_ids in PEER_IDS.items():
        assert peer_ids <= ids, f"{peer}: {peer_ids - ids} missing from the snapshot"
