"""ProgressiveGrowSampler against hostile values and latents, by widget and through links, on the
real server: two stages (32 then 64 px), one step each.

The issue's cases: NaN cfg and NaN stage_noise travelled on and were reported much later by
TiledVAEDecode; an empty latent."""

from fuzzlib import FINISH, Combo, Num, Table, table_tests, Tensor, grow_prompt

U64 = 2 ** 64 - 1

TABLE = Table("ExpanseProgressiveGrowSampler", "sample", grow_prompt, [
    Num("seed", "INT", 0, U64, ok=(U64,)),
    Num("steps", "INT", 1, 10000, ok=(2,)),
    Num("cfg", "FLOAT", 0.0, 100.0, 0.1, ok=(100.0,)),
    # min_scale 0.05: a 3 px first stage; 1.0 equals max_scale (one size for two stages): clear errors or runs
    Num("min_scale", "FLOAT", 0.05, 1.0, 0.05, ok=(1.0,)),
    Num("max_scale", "FLOAT", 0.05, 1.0, 0.05, ok=(0.75,)),
    Num("stages", "INT", 1, 16, ok=(16,)),
    Num("denoise_second", "FLOAT", 0.0, 1.0, 0.01, ok=(1.0,)),
    Num("denoise_last", "FLOAT", 0.0, 1.0, 0.01, ok=(1.0,)),
    Num("refine_steps", "INT", 1, 10000, ok=(2,)),
    Num("stage_noise", "FLOAT", 0.0, 1.0, 0.01, ok=(1.0,)),
    Combo("sampler_name", ok=("euler_ancestral",)),
    Combo("scheduler", ok=("karras",)),
    Combo("spacing", ok=("linear",)),
    Combo("upscale_method", ok=("nearest-exact", "lanczos")),
    # An all-zero latent of another channel count is converted as KSampler does (fix_empty_latent_channels).
    Tensor("latent_image", "LATENT", expect={"sd3_16ch": FINISH}),
], unchecked={"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING", "vae": "VAE",
              "sampler": "SAMPLER (an object, not a value)",
              "sigmas": "SIGMAS (bad schedules: tests/integration/test_grow_nodes.py)",
              "refine": "BOOLEAN (any widget value is bool()-converted by ComfyUI)"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
