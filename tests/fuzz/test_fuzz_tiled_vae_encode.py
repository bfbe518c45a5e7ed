"""TiledVAEEncode against hostile values and pictures, by widget and through links, on the real
server: a 64 px picture encoded in tiles, decoded again by ComfyUI's VAEDecode."""
import numpy as np
import pytest

from fuzzlib import Combo, Num, Table, Tensor, check, encode_prompt

TABLE = Table("ExpanseTiledVAEEncode", "encode", encode_prompt, [
    Num("tile_size", "INT", 0, 16384, 8, ok=(8, 36, 16384)),
    Combo("mode", ok=("fast", "local_attention")),
    Num("padding", "INT", 0, 1024, 8, ok=(12, 1024), settings={"mode": "fast"}),
    Tensor("pixels", "IMAGE"),
], unchecked={"vae": "VAE"})
CASES = TABLE.cases()


def test_the_table_follows_the_nodes_inputs(object_info):
    assert not TABLE.schema_problems(object_info)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_value(runner, case):
    check(runner, case)


def test_the_server_still_draws_the_good_prompt(runner, good_picture):
    assert np.array_equal(runner.picture(TABLE.build()), good_picture)
