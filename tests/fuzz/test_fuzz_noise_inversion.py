"""NoiseInversion against hostile values and latents, by widget and through links, on the real
server: a 64 px picture's latent inverted and redrawn by SamplerCustomAdvanced from its noise."""

from fuzzlib import FINISH, Combo, Num, Table, Tensor, inversion_prompt, table_tests

TABLE = Table("ExpanseNoiseInversion", "invert", inversion_prompt, [
    Num("steps", "INT", 1, 10000, ok=(1, 3)),
    # 0: nothing to invert, a clear refusal
    Num("denoise", "FLOAT", 0.0, 1.0, 0.01, ok=(0.01, 1.0)),
    Combo("scheduler", ok=("karras", "simple")),
    # An empty 16-channel latent is made the model's own empty latent, as ComfyUI's samplers do. A
    # latent of another size than the sampler's: refused by the noise, by name (off_grid_60px, batch_2).
    Tensor("latent", "LATENT", expect={"sd3_16ch": FINISH}),
], unchecked={"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING",
              "sigmas": "SIGMAS (bad schedules: tests/integration/test_noise_inversion.py)"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
