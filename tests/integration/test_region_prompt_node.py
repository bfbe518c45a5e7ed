"""RegionPrompt in the real ComfyUI host: plain KSampler and TiledDiffusion, through ComfyUI's own
conditioning, sampling and CFG code."""
import re

import pytest
import torch

from expanse_harness import tiny_models

torch.set_grad_enabled(False)

LATENT_H, LATENT_W = 24, 40
CANVAS = dict(canvas_width=8 * LATENT_W, canvas_height=8 * LATENT_H)
BOX = dict(x=0.25, y=0.25, width=0.5, height=0.5)  # latent rows 6..17, columns 10..29
INSIDE = (slice(None), slice(None), slice(6, 18), slice(10, 30))

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def prompts(nodes):
    """main, region, second region and empty prompts from the tiny CLIP through CLIPTextEncode."""
    clip = tiny_models.tiny_clip()
    encode = nodes["CLIPTextEncode"]()
    return {text: encode.encode(clip, text)[0] for text in ("a lake under a night sky", "a red sofa",
                                                            "two dancers in yellow", "")}


def region(nodes, chain, region_cond, kind="foreground", feather=0.0, strength=1.0, mask=None, **box):
    box = {**BOX, **box}
    return nodes["ExpanseRegionPrompt"].execute(chain, region_cond, box["x"], box["y"], box["width"], box["height"], kind,
                                         feather, strength, mask=mask, **CANVAS).result[0]


def sample(nodes, model, positive, negative, seed=1, steps=4, cfg=3.0):
    latent = {"samples": torch.zeros(1, 4, LATENT_H, LATENT_W)}
    return nodes["KSampler"]().sample(model, seed, steps, cfg, "euler", "normal", positive, negative, latent)[0]["samples"]


def tiled(nodes, model, tile_px):
    return nodes["ExpanseTiledDiffusion"].execute(model, "mixture_of_diffusers", tile_px, tile_px, 32, 3, 0).result[0]


def outside(t: torch.Tensor) -> torch.Tensor:
    keep = torch.ones_like(t, dtype=torch.bool)
    keep[INSIDE] = False
    return t[keep]


@pytest.mark.parametrize("tile_px", [128, 1024], ids=["tiled", "one-tile"])
def test_foreground_replaces_exactly_its_box_through_tiled_diffusion(nodes, unet, prompts, tile_px):
    """With a per-pixel model each pixel's trajectory depends only on its own prediction: inside a
    hard foreground the picture is the region prompt's, outside the main prompt's, exactly."""
    model = tiny_models.pointwise_model(unet)
    main, sofa, empty = prompts["a lake under a night sky"], prompts["a red sofa"], prompts[""]
    only_main = sample(nodes, model, main, empty)
    only_region = sample(nodes, model, sofa, empty)
    assert (only_main - only_region).abs().max() > 1e-3  # the two prompts draw differently

    got = sample(nodes, tiled(nodes, model, tile_px), region(nodes, main, sofa), empty)
    torch.testing.assert_close(got[INSIDE], only_region[INSIDE], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outside(got), outside(only_main), rtol=1e-5, atol=1e-5)


def test_foreground_on_a_plain_ksampler_is_the_same_blend(nodes, unet, prompts):
    """Without TiledDiffusion, ComfyUI's own averaging with the region's a / (1 - a) weight: the
    main prompt untouched outside, the region's picture inside (to the 0.1% the weight leaves)."""
    model = tiny_models.pointwise_model(unet)
    main, sofa, empty = prompts["a lake under a night sky"], prompts["a red sofa"], prompts[""]
    chain = region(nodes, main, sofa)
    plain = sample(nodes, model, chain, empty)
    torch.testing.assert_close(outside(plain), outside(sample(nodes, model, main, empty)), rtol=1e-5, atol=1e-5)
    only_region = sample(nodes, model, sofa, empty)
    assert (plain[INSIDE] - only_region[INSIDE]).abs().max() < 2e-2 * only_region.abs().max()


def test_later_foreground_is_on_top(nodes, unet, prompts):
    model = tiny_models.pointwise_model(unet)
    main, sofa, dancers, empty = (prompts[k] for k in ("a lake under a night sky", "a red sofa",
                                                       "two dancers in yellow", ""))
    chain = region(nodes, region(nodes, main, sofa, x=0.0, width=0.6), dancers, x=0.4, width=0.6)
    got = sample(nodes, tiled(nodes, model, 128), chain, empty)
    # Rows 6..17, columns 16..23 hold both boxes; the dancers were chained last.
    torch.testing.assert_close(got[..., 6:18, 16:24], sample(nodes, model, dancers, empty)[..., 6:18, 16:24],
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[..., 6:18, :16], sample(nodes, model, sofa, empty)[..., 6:18, :16],
                               rtol=1e-5, atol=1e-5)


def test_background_blends_the_same_with_and_without_tiled_diffusion(nodes, unet, prompts):
    model = tiny_models.pointwise_model(unet)
    main, sofa, empty = prompts["a lake under a night sky"], prompts["a red sofa"], prompts[""]
    chain = region(nodes, main, sofa, kind="background", feather=0.5, strength=2.0)
    plain = sample(nodes, model, chain, empty)
    through_tiles = sample(nodes, tiled(nodes, model, 128), chain, empty)
    torch.testing.assert_close(through_tiles, plain, rtol=1e-5, atol=1e-5)
    only_main, only_region = sample(nodes, model, main, empty), sample(nodes, model, sofa, empty)
    torch.testing.assert_close(outside(plain), outside(only_main), rtol=1e-5, atol=1e-5)
    centre = (slice(None), slice(None), slice(11, 13), slice(19, 21))  # full weight 2: a 2:1 mix there
    mix = (plain[centre] - only_main[centre]).abs().mean() / (only_region[centre] - only_main[centre]).abs().mean()
    assert 0.3 < mix < 0.95


@pytest.mark.parametrize("through_tiles", [False, True], ids=["ksampler", "tiled"])
def test_region_changes_only_its_feathered_box(nodes, unet, prompts, through_tiles):
    """The tiny UNet spreads information spatially, so the change leaks a little past the box;
    it must still sit almost entirely inside the box grown by a few latent px."""
    model = tiled(nodes, unet, 128) if through_tiles else unet
    main, sofa, empty = prompts["a lake under a night sky"], prompts["a red sofa"], prompts[""]
    without = sample(nodes, model, main, empty, seed=3)
    with_region = sample(nodes, model, region(nodes, main, sofa, feather=0.3), empty, seed=3)
    energy = (with_region - without).pow(2).sum(dim=(0, 1))
    assert energy.sum() > 0
    grown = energy[6 - 3:18 + 3, 10 - 3:30 + 3].sum()
    assert grown / energy.sum() > 0.9


def test_shape_mask_limits_the_region(nodes, unet, prompts):
    model = tiny_models.pointwise_model(unet)
    main, sofa, empty = prompts["a lake under a night sky"], prompts["a red sofa"], prompts[""]
    shape = torch.zeros(1, 12, 20)
    shape[:, :, :10] = 1  # the left half of the box
    got = sample(nodes, tiled(nodes, model, 128), region(nodes, main, sofa, mask=shape), empty)
    only_main, only_region = sample(nodes, model, main, empty), sample(nodes, model, sofa, empty)
    torch.testing.assert_close(got[..., 7:17, 10:19], only_region[..., 7:17, 10:19], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[..., 6:18, 21:30], only_main[..., 6:18, 21:30], rtol=1e-5, atol=1e-5)


def test_region_conds_carry_comfyui_keys(nodes, prompts):
    main, sofa = prompts["a lake under a night sky"], prompts["a red sofa"]
    chain = region(nodes, main, sofa, kind="background", strength=0.5)
    assert len(chain) == len(main) + len(sofa)
    assert chain[:len(main)] == main  # the chain itself is passed on untouched
    cond = chain[-1][1]
    assert cond["area"] == ("percentage", 0.5, 0.5, 0.25, 0.25)
    assert cond["mask"].shape[0] == 1 and cond["mask"].max() == pytest.approx(0.5)
    assert cond["set_area_to_bounds"] is False and "mask" not in sofa[0][1]  # the input is not changed


def test_a_region_narrower_than_the_unet_can_convolve_gets_a_larger_area_and_keeps_its_mask(nodes, prompts):
    """A 4 px wide region on a 320 px canvas: ComfyUI would crop the model's input to half a latent
    pixel; the area grows about the box to 64 px (8 latent px), the mask still weighs the box alone."""
    main, sofa = prompts["a lake under a night sky"], prompts["a red sofa"]
    cond = region(nodes, main, sofa, x=0.985, width=4 / 320)[-1][1]
    _, height, width, y, x = cond["area"]
    assert (height, y) == (0.5, 0.25)  # tall enough already: unchanged
    assert width == pytest.approx(64 / 320) and x == pytest.approx(1 - 64 / 320)  # kept on the canvas
    weight = cond["mask"][0]
    columns = weight.amax(dim=0).nonzero().flatten() / weight.shape[-1]
    assert float(columns.min()) >= 0.98  # the weight stays in the 4 px box (a 512-cell mask)


@pytest.mark.parametrize("inputs,words", [
    (dict(width=0.0), "zero size"),
    (dict(x=0.8, width=0.5), "x + width"),
    (dict(y=1.0), "outside the canvas"),
    (dict(feather=2.0), "feather"),
])
def test_bad_regions_fail_with_the_input_named(nodes, prompts, inputs, words):
    main, sofa = prompts["a lake under a night sky"], prompts["a red sofa"]
    inputs = dict(inputs)
    feather = inputs.pop("feather", 0.0)
    with pytest.raises(ValueError, match=re.escape(words)):
        region(nodes, main, sofa, feather=feather, **inputs)
    box = {**BOX, **inputs}
    assert words in nodes["ExpanseRegionPrompt"].validate_inputs(feather=feather, **box)


def test_empty_shape_mask_is_refused(nodes, prompts):
    with pytest.raises(ValueError, match="covers nothing"):
        region(nodes, prompts[""], prompts["a red sofa"], mask=torch.zeros(1, 8, 8))


def test_chess_tile_redraw_cuts_a_region_like_any_mask(nodes, prompts):
    """Per-tile sampling (ChessTileRedraw) sees each tile as a canvas of its own: the region's
    averaging weight is cut to the tile and the whole-canvas compositing data dropped."""
    from expanse.core.tiling import Box
    from expanse.runtime.regions import REGION_KEY
    from expanse.runtime.tile_conds import ConditioningTiles, ControlCache

    main, sofa, empty = prompts["a lake under a night sky"], prompts["a red sofa"], prompts[""]
    chain = region(nodes, main, sofa, feather=0.4)
    weight = torch.nn.functional.interpolate(chain[-1][1]["mask"][:, None], size=(LATENT_H, LATENT_W),
                                             mode="bilinear").squeeze(1)
    tiles = ConditioningTiles([chain, empty], LATENT_H, LATENT_W, ControlCache())
    tile = Box(0, 12, 0, 20)
    (main_cut, region_cut), _ = tiles.for_tiles([tile], 1)
    assert REGION_KEY not in region_cut[1] and "mask" not in main_cut[1]
    torch.testing.assert_close(region_cut[1]["mask"], weight[:, :12, :20])
    assert tiles.signature(Box(0, 4, 0, 8)) != tiles.signature(tile)  # the region misses the corner tile


@pytest.mark.parametrize("tile_px", [None, 128], ids=["ksampler", "tiled"])
def test_a_region_chained_on_the_negative_is_that_regions_negative_prompt(nodes, unet, prompts, tile_px):
    """RegionPrompt on the negative side: the region's negative prompt applies inside its box only.
    Outside, the picture is the one the plain negative gives, exactly; inside, the one the region's
    negative alone gives (exactly through TiledDiffusion, to the 0.1% ComfyUI's averaging weight
    leaves on a plain KSampler)."""
    model = tiny_models.pointwise_model(unet)
    main, dancers, empty = prompts["a lake under a night sky"], prompts["two dancers in yellow"], prompts[""]
    sampler_model = model if tile_px is None else tiled(nodes, model, tile_px)
    plain = sample(nodes, model, main, empty)
    region_negative = sample(nodes, model, main, dancers)
    assert (plain - region_negative).abs().max() > 1e-3  # the two negatives draw differently

    got = sample(nodes, sampler_model, main, region(nodes, empty, dancers))
    torch.testing.assert_close(outside(got), outside(plain), rtol=1e-5, atol=1e-5)
    if tile_px is None:
        assert (got[INSIDE] - region_negative[INSIDE]).abs().max() < 2e-2 * region_negative.abs().max()
    else:
        torch.testing.assert_close(got[INSIDE], region_negative[INSIDE], rtol=1e-5, atol=1e-5)
    assert (got[INSIDE] - plain[INSIDE]).abs().max() > 1e-3
