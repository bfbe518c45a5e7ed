"""SaveLargeImage against hostile values and latents, by widget and through links, on the real
server: a 128x64 picture's latent saved as a large TIFF. Its file name prefix gets paths that leave
the output folder, names no file system takes, and nothing at all."""

from fuzzlib import FINISH, REFUSE, Combo, Named, Table, Tensor, save_large_prompt, set_link, table_tests


def prefix(value, via="widget"):
    def change(prompt: dict) -> dict:
        if via == "link":
            return set_link(prompt, "large", "filename_prefix", "STRING", value)
        prompt["large"]["inputs"]["filename_prefix"] = value
        return prompt
    return change


def deep_zoom(prompt: dict) -> dict:
    prompt["large"]["inputs"]["deep_zoom"] = True
    return prompt


TABLE = Table("ExpanseSaveLargeImage", "large", save_large_prompt, [
    Combo("vae_mode", ok=("exact", "fast", "local_attention", "sampled")),
    Combo("compression", ok=("lzma", "none")),
    Tensor("samples", "LATENT", expect={"sd3_16ch": REFUSE}),
    Named("filename_prefix", "dotdot", prefix("../escape"), REFUSE, why="a folder above the output folder"),
    Named("filename_prefix", "dotdot", prefix("fuzz/../../escape", "link"), REFUSE, via="link",
          why="a folder above the output folder, through a link"),
    Named("filename_prefix", "absolute", prefix("/etc/expanse_fuzz"), REFUSE, why="an absolute path elsewhere"),
    Named("filename_prefix", "empty_string", prefix(""), REFUSE, why="no file name"),
    Named("filename_prefix", "null_byte", prefix("fuzz/a\x00b"), REFUSE, why="a name no file system takes"),
    Named("filename_prefix", "300_chars", prefix("fuzz/" + "x" * 300), REFUSE, why="a name too long for a file"),
    Named("filename_prefix", "width_height", prefix("fuzz/%width%x%height%/large"), FINISH,
          why="ComfyUI's %width% and %height% fields"),
    Named("deep_zoom", "on", deep_zoom, FINISH, why="the Deep Zoom tiles too"),
], unchecked={"vae": "VAE", "filename_prefix": "STRING: the named cases above",
              "deep_zoom": "BOOLEAN (any widget value is bool()-converted by ComfyUI); on: the named case above"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
