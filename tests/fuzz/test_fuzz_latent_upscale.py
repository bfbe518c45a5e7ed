"""LatentUpscaleAdvanced against hostile values and latents, by widget and through links, on the
real server: a 64 px picture's latent resized (1.5x by default) and decoded."""

from fuzzlib import FINISH, Combo, Named, Num, Table, table_tests, Tensor, upscale_prompt

BY_SIZE = {"scale_by": 0.0}  # width and height are read when scale_by is 0


def through_pixels(prompt: dict) -> dict:
    prompt["upscale"]["inputs"]["vae"] = ["model", 2]
    return prompt


TABLE = Table("ExpanseLatentUpscaleAdvanced", "upscale", upscale_prompt, [
    Combo("upscale_method", ok=("lanczos", "nearest", "nearest-exact", "bilinear", "bicubic", "area")),
    # 0 with no width/height: a clear refusal; 0.05 shrinks 8x8 latent pixels below one
    Num("scale_by", "FLOAT", 0.0, 16.0, 0.05, ok=(0.05, 4.0)),
    Num("width", "INT", 0, 65536, 8, ok=(8, 12, 256), settings=BY_SIZE),
    Num("height", "INT", 0, 65536, 8, ok=(8, 12, 256), settings=BY_SIZE),
    # A 16-channel latent is a latent (SD3, Flux), and a video latent can be resized frame by frame: resized
    # (or refused clearly), then refused by the 4-channel image VAE's decode.
    Tensor("samples", "LATENT", expect={"sd3_16ch": FINISH, "video_5d": FINISH}),
    Named("vae", "pixel_space", through_pixels, FINISH, why="resized through pixel space with the tiled VAE"),
], unchecked={"antialias": "BOOLEAN (any widget value is bool()-converted by ComfyUI)", "vae": "VAE"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
