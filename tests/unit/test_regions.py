"""core.regions: region masks, the feather profile, foreground over background, coverage."""
import pytest
import torch

from expanse.core import regions as rg


def comfy_percentage_area(region: rg.Region, height: int, width: int) -> tuple[int, int, int, int]:
    """ComfyUI's own conversion of a percentage area (samplers.resolve_areas_and_cond_masks_multidim),
    as (y0, x0, h, w)."""
    return (round(region.y * height), round(region.x * width),
            max(1, round(region.height * height)), max(1, round(region.width * width)))


@pytest.mark.parametrize("region", [rg.Region(0.1, 0.2, 0.5, 0.3), rg.Region(0.33, 0.0, 0.67, 1.0),
                                    rg.Region(0.0, 0.5, 0.05, 0.5)])
@pytest.mark.parametrize("height,width", [(64, 64), (37, 91)])
def test_hard_region_is_its_box_rounded_as_comfyui_rounds(region, height, width):
    y0, x0, h, w = comfy_percentage_area(region, height, width)
    alpha = rg.region_alpha(region, height, width)
    expected = torch.zeros(height, width)
    expected[y0:y0 + h, x0:x0 + w] = 1
    torch.testing.assert_close(alpha, expected)


def test_feather_profile_rises_smoothly_from_each_inner_edge():
    region = rg.Region(0.25, 0.25, 0.5, 0.5, feather=0.5)  # a 32 px box on 64 px; ramp 8 px
    alpha = rg.region_alpha(region, 64, 64)
    row = alpha[32]
    assert torch.all(row[:16] == 0) and torch.all(row[48:] == 0)  # nothing outside the box
    ramp = row[16:24]
    assert torch.all(ramp[1:] > ramp[:-1])  # strictly rising over the feather
    assert 0 < ramp[0] < 0.05 and ramp[-1] > 0.95
    assert torch.all(row[24:40] == 1)  # full strength inside
    torch.testing.assert_close(row[16:48], row[16:48].flip(0))  # symmetric
    torch.testing.assert_close(alpha, alpha.T)


def test_feather_one_reaches_the_centre_of_the_smaller_side():
    alpha = rg.region_alpha(rg.Region(0.0, 0.25, 1.0, 0.5, feather=1.0), 64, 64)
    column = alpha[:, 10]  # the box spans rows 16..47: the ramp reaches its middle from both edges
    assert column.max() == pytest.approx(1.0, abs=0.02)
    assert column[16] < 0.01 and torch.all(column[16:32][1:] >= column[16:32][:-1])


def test_edges_on_the_canvas_border_stay_hard():
    alpha = rg.region_alpha(rg.Region(0.0, 0.0, 0.5, 1.0, feather=0.5), 32, 64)
    assert torch.all(alpha[:, 0] == 1)  # the left border and the top and bottom rows: no fade
    assert torch.all(alpha[0, :16] == 1) and torch.all(alpha[-1, :16] == 1)
    assert alpha[16, 31] < 0.05  # the inner edge fades


def test_shape_mask_is_stretched_over_the_box():
    shape = torch.zeros(1, 4, 4)
    shape[:, :, :2] = 1  # the left half of the box
    alpha = rg.region_alpha(rg.Region(0.5, 0.0, 0.5, 1.0), 16, 32, shape)
    assert alpha[:, :16].sum() == 0
    assert torch.all(alpha[:, 16:22] == 1) and torch.all(alpha[:, 26:] == 0)  # bilinear between


def test_foreground_weight_averaged_with_a_main_prompt_is_the_blend_over_it():
    alpha = rg.region_alpha(rg.Region(0.2, 0.2, 0.6, 0.6, feather=0.8), 32, 32)
    main, region = torch.randn(2, 4, 32, 32).unbind()
    for strength in (0.5, 1.0, 3.0):
        w = rg.averaging_weight(alpha, rg.FOREGROUND, strength)
        averaged = (main + w * region) / (1 + w)  # ComfyUI's weighted average of the two conds
        over = rg.composite_over(main, [(region, rg.over_alpha(alpha, strength))])
        torch.testing.assert_close(averaged, over, atol=2e-3 * region.abs().max().item(), rtol=0)


def test_background_weight_is_coverage_times_strength():
    alpha = rg.region_alpha(rg.Region(0.0, 0.0, 0.5, 0.5, feather=0.3), 16, 16)
    torch.testing.assert_close(rg.averaging_weight(alpha, rg.BACKGROUND, 2.5), alpha * 2.5)


def test_overlapping_foregrounds_later_on_top():
    base = torch.zeros(1, 1, 8, 8)
    a = rg.region_alpha(rg.Region(0.0, 0.0, 0.75, 1.0), 8, 8)
    b = rg.region_alpha(rg.Region(0.25, 0.0, 0.75, 1.0), 8, 8)
    out = rg.composite_over(base, [(torch.full_like(base, 1.0), a), (torch.full_like(base, 2.0), b)])
    assert torch.all(out[..., :2] == 1) and torch.all(out[..., 2:] == 2)  # b wins where both are


def test_main_prompt_plus_regions_cover_every_pixel():
    """With the main prompt at weight one under every region, no pixel's total weight is zero."""
    weights = [torch.ones(24, 40)]
    for region, kind in ((rg.Region(0.0, 0.0, 0.4, 0.5, feather=0.5), rg.BACKGROUND),
                         (rg.Region(0.5, 0.3, 0.5, 0.7, feather=0.2), rg.FOREGROUND)):
        weights.append(rg.averaging_weight(rg.region_alpha(region, 24, 40), kind, 1.0))
    assert torch.stack(weights).sum(0).min() >= 1


@pytest.mark.parametrize("region,words", [
    (rg.Region(0.2, 0.2, 0.0, 0.3), ["zero size", "width"]),
    (rg.Region(1.2, 0.2, 0.1, 0.3), ["x = 1.2", "outside the canvas"]),
    (rg.Region(0.7, 0.2, 0.5, 0.3), ["x + width", "lower width to 0.300"]),
    (rg.Region(0.2, 0.9, 0.5, 0.3), ["y + height"]),
    (rg.Region(0.2, 0.2, 0.5, 0.3, feather=1.5), ["feather 1.5", "out of range"]),
    (rg.Region(0.2, 0.2, 0.5, 0.3, kind="middle"), ["type 'middle'"]),
])
def test_bad_regions_are_named(region, words):
    with pytest.raises(ValueError) as err:
        region.check()
    for word in words:
        assert word in str(err.value)
