"""ChessTileRedraw against hostile values, by widget and through links, on the real server.

The issue's cases: a negative tile_width through a link (hung), tile_batch_size 0 through a link
("range() arg 3 must not be zero"), a negative padding ("cannot reshape tensor of 0 elements"),
NaN upscale_by / denoise / seam_fix_denoise ("cannot convert float NaN to integer"), a 5-D latent
("x must be a 4-D latent", naming neither node nor input)."""

from fuzzlib import FINISH, REFUSE, Combo, Named, Num, Table, table_tests, Tensor, chess_prompt

U64 = 2 ** 64 - 1
SEAMS = {"seam_fix": "band"}  # the seam-fix inputs are read only with a seam fix on


def picture_input(prompt: dict) -> dict:
    prompt["picture"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                                "color": 0x4080c0}}
    prompt["chess"]["inputs"]["image"] = ["picture", 0]
    del prompt["chess"]["inputs"]["latent"]
    return prompt


def both_inputs(prompt: dict) -> dict:
    picture_input(prompt)["chess"]["inputs"]["latent"] = ["sample", 0]
    return prompt


def no_input(prompt: dict) -> dict:
    del prompt["chess"]["inputs"]["latent"]
    return prompt


def tile(size: int):
    def change(prompt: dict) -> dict:
        prompt["chess"]["inputs"].update(tile_width=size, tile_height=size)
        return prompt
    return change


def inversion_on(prompt: dict) -> dict:
    prompt["chess"]["inputs"]["noise_inversion"] = True
    return prompt


TABLE = Table("ExpanseChessTileRedraw", "chess", chess_prompt, [
    Num("upscale_by", "FLOAT", 1.0, 8.0, 0.05, ok=(1.02,)),  # 1.02: a 65.28 px canvas, off the grid
    Num("seed", "INT", 0, U64, ok=(U64,)),
    Num("steps", "INT", 1, 10000, ok=(2,)),
    Num("cfg", "FLOAT", 0.0, 100.0, 0.1, ok=(100.0,)),
    Num("denoise", "FLOAT", 0.0, 1.0, 0.01, ok=(1.0,)),
    Num("tile_width", "INT", 64, 8192, 8, ok=(68, 8192)),
    Num("tile_height", "INT", 64, 8192, 8, ok=(68, 8192)),
    Num("padding", "INT", 0, 1024, 8, ok=(12, 1024)),
    Num("mask_feather", "INT", 0, 512, 8, ok=(12, 512)),
    Num("tile_batch_size", "INT", 1, 64, ok=(64,)),
    Num("seam_fix_denoise", "FLOAT", 0.0, 1.0, 0.01, ok=(1.0,), settings=SEAMS),
    Num("seam_fix_width", "INT", 8, 1024, 8, ok=(12, 1024), settings=SEAMS),
    Num("seam_fix_feather", "INT", 0, 512, 8, ok=(12, 512), settings=SEAMS),
    Combo("sampler_name", ok=("euler_ancestral",)),
    Combo("scheduler", ok=("karras",)),
    Combo("redraw_order", ok=("linear", "none")),
    Combo("seam_fix", ok=("band", "half_tile", "half_tile_intersections")),
    Combo("vae_mode", ok=("exact", "fast", "local_attention", "sampled")),
    Combo("latent_resize", ok=("pixels",)),
    Tensor("latent", "LATENT"),
    Tensor("image", "IMAGE", drop=("latent",)),
    Tensor("mask", "MASK"),
    Named("image", "picture_64px", picture_input, FINISH, why="the picture input instead of the latent"),
    Named("image", "and_latent", both_inputs, REFUSE, names=("image", "latent")),
    Named("image", "nor_latent", no_input, REFUSE, names=("image", "latent")),
    Named("tile_width", "8192_and_tile_height_8192", tile(8192), FINISH,
          why="a tile larger than the whole picture: a clear error or one tile"),
    Named("noise_inversion", "on", inversion_on, FINISH, why="every tile inverted before it is redrawn"),
], unchecked={"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "vae": "VAE",
              "upscale_model": "UPSCALE_MODEL (no model file here)",
              "sampler": "SAMPLER (an object, not a value)",
              "sigmas": "SIGMAS (bad schedules: tests/integration/test_chess_redraw_node.py)",
              "noise_inversion": "BOOLEAN (any widget value is bool()-converted by ComfyUI); on: the named case "
                                 "above",
              "color_match": "BOOLEAN (any widget value is bool()-converted by ComfyUI; on by default, so every "
                             "case runs it)"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
