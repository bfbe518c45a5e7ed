"""RegionPrompt against hostile values and masks, by widget and through links, on the real server:
a foreground region on the right half of a 128x64 canvas, sampled through TiledDiffusion.

The issue's cases: a NaN strength sampled through TiledDiffusion hung; NaN x / width reached
int() ("cannot convert float NaN to integer"); a region a few pixels wide made KSampler fail inside
a convolution ("Kernel size can't be greater than actual input size")."""

from fuzzlib import FINISH, Combo, Named, Num, Table, table_tests, Tensor, region_prompt


def untiled(**region):
    """The region sampled by a plain KSampler (no TiledDiffusion)."""
    def change(_: dict) -> dict:
        prompt = region_prompt(tiled=False)
        prompt["region"]["inputs"].update(region)
        return prompt
    return change


TABLE = Table("ExpanseRegionPrompt", "region", region_prompt, [
    Num("x", "FLOAT", 0.0, 1.0, 0.01),
    Num("y", "FLOAT", 0.0, 1.0, 0.01),
    # 0.02 of 128 px: a region under 3 px wide; 0: no region at all (skipped or a clear error)
    Num("width", "FLOAT", 0.0, 1.0, 0.01, ok=(0.02,)),
    Num("height", "FLOAT", 0.0, 1.0, 0.01, ok=(0.03,)),
    Num("feather", "FLOAT", 0.0, 1.0, 0.01, ok=(1.0,)),
    Num("strength", "FLOAT", 0.0, 10.0, 0.05, ok=(10.0,)),
    Num("canvas_width", "INT", 64, 65536, 8, ok=(68, 65536)),
    Num("canvas_height", "INT", 64, 65536, 8, ok=(68,)),
    Combo("type", ok=("background",)),
    Tensor("mask", "MASK"),
    Named("width", "0.02_untiled", untiled(width=0.02, x=0.5), FINISH,
          why="a region under 3 px wide through a plain KSampler"),
    Named("height", "0.03_untiled", untiled(height=0.03), FINISH,
          why="a region 2 px high through a plain KSampler"),
    Named("strength", "nan_untiled", untiled(strength=float("nan")), "refuse"),
], unchecked={"conditioning": "CONDITIONING", "region_conditioning": "CONDITIONING"})
test_the_table_follows_the_nodes_inputs, test_hostile_value, test_the_server_still_draws_the_good_prompt = \
    table_tests(TABLE)
