"""TiledVAEEncode against hostile values and pictures, by widget and through links, on the real
server: a 64 px picture encoded in tiles, decoded again by ComfyUI's VAEDecode."""

from fuzzlib import Combo, Num, Table, table_tests, Tensor, encode_prompt

TABLE = Table("ExpanseTiledVAEEncode", "encode", encode_prompt, [
    Num("tile_size", "INT", 0, 16384, 8, ok=(8, 36, 16384)),
    Combo("mode", ok=("fast", "local_attention", "sampled")),
    Num("padding", "INT", 0, 1024, 8, ok=(12, 1024), settings={"mode": "fast"}),
    Tensor("pixels", "IMAGE"),
], unchecked={"vae": "VAE"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
