"""TiledVAEDecode against hostile values and latents, by widget and through links, on the real
server: a 128x64 picture decoded in 64 px tiles."""

from fuzzlib import REFUSE, Combo, Num, Table, table_tests, Tensor, decode_prompt

TABLE = Table("ExpanseTiledVAEDecode", "decode", decode_prompt, [
    # 0 picks the tile; 8 px is one latent pixel a tile (a bounded tile count, or a clear refusal); 36 is off the grid
    Num("tile_size", "INT", 0, 16384, 8, ok=(8, 36, 16384)),
    Combo("mode", ok=("fast", "local_attention", "sampled")),
    Num("padding", "INT", 0, 1024, 8, ok=(12, 1024), settings={"mode": "fast"}),  # read by fast and local_attention
    Tensor("samples", "LATENT", expect={"sd3_16ch": REFUSE}),
], unchecked={"vae": "VAE"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
