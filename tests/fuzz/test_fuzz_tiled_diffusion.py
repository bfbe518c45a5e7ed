"""TiledDiffusion against hostile values, by widget and through links, on the real server: the
patched model samples a 128x64 canvas (three 64 px tiles) with KSampler.

The issue's case: 64 px tiles with 56 px overlap on a 512 px canvas (thousands of tiles, no bound)
must be refused quickly, not run."""

from fuzzlib import (FINISH, REFUSE, Combo, Named, Num, Table, table_tests, empty_latent, hostile_tensors, set_link,
                     tiled_prompt)

U64 = 2 ** 64 - 1
TILE_INPUTS = ("overlap", "tile_width", "tile_height")


def dense_grid(via: str):
    """512x512 canvas, 64 px tiles, 56 px overlap: 57 x 57 = 3249 tiles a step."""
    def change(prompt: dict) -> dict:
        prompt["latent"]["inputs"].update(width=512, height=512)
        if via == "link":
            return set_link(prompt, "tiled", "overlap", "INT", 56)
        prompt["tiled"]["inputs"]["overlap"] = 56
        return prompt
    return change


def overlap_of_a_tile(via: str):
    def change(prompt: dict) -> dict:
        if via == "link":
            return set_link(prompt, "tiled", "overlap", "INT", 64)
        prompt["tiled"]["inputs"]["overlap"] = 64
        return prompt
    return change


def sampled_latent(label: str):
    """KSampler gets a hostile latent and samples it through the patched model."""
    add = hostile_tensors("LATENT")[label][0]

    def change(prompt: dict) -> dict:
        prompt["sample"]["inputs"]["latent_image"] = add(prompt)
        return prompt
    return change


def wide_canvas(prompt: dict) -> dict:
    prompt["latent"] = empty_latent(256, 64)
    prompt["tiled"]["inputs"]["overlap"] = 0
    return prompt


TABLE = Table("ExpanseTiledDiffusion", "tiled", tiled_prompt, [
    Combo("method", ok=("mixture_of_diffusers", "shifted")),
    Num("tile_width", "INT", 64, 16384, 8, ok=(68, 16384)),
    Num("tile_height", "INT", 64, 16384, 8, ok=(68, 16384)),
    Num("overlap", "INT", 0, 8192, 8, ok=(60, 56)),
    Num("tile_batch_size", "INT", 1, 64, ok=(64,)),
    Num("seed", "INT", 0, U64, ok=(U64,)),
    Named("overlap", "64_of_a_64_tile", overlap_of_a_tile("widget"), REFUSE, names=TILE_INPUTS, via="widget"),
    Named("overlap", "64_of_a_64_tile", overlap_of_a_tile("link"), REFUSE, names=TILE_INPUTS, via="link"),
    Named("overlap", "56_of_64_on_512px", dense_grid("widget"), REFUSE, names=TILE_INPUTS, limit=30, via="widget",
          why="3249 tiles a step: refused quickly with the count, not run"),
    Named("overlap", "56_of_64_on_512px", dense_grid("link"), REFUSE, names=TILE_INPUTS, limit=30, via="link",
          why="3249 tiles a step: refused quickly with the count, not run"),
    Named("canvas", "256x64_no_overlap", wide_canvas, FINISH, why="four tiles side by side, no overlap"),
    *[Named("sampled_latent", label, sampled_latent(label), FINISH,
            why=f"KSampler samples {why} through the patched model: success or a clear error")
      for label, (_, _, why) in hostile_tensors("LATENT").items()],
], unchecked={"model": "MODEL"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
