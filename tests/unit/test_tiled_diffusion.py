"""core.tiled_diffusion: tile geometry, weights and fusion, against the untiled computation."""
import pytest
import torch

from expanse.core import tiled_diffusion as td
from expanse.core import tiling
from expanse.core.tiling import Box


@pytest.mark.parametrize("length,tile,overlap,unit", [
    (128, 64, 8, 1), (100, 64, 8, 1), (97, 32, 16, 1), (256, 96, 16, 2), (130, 64, 0, 2), (64, 64, 8, 1),
    (65, 64, 8, 1), (1000, 96, 32, 4),
])
def test_tile_starts_cover_with_full_tiles_and_honour_overlap(length, tile, overlap, unit):
    starts = tiling.tile_starts(length, tile, overlap, unit)
    assert starts[0] == 0 and starts[-1] == max(0, length - tile)  # full-size tiles, edges included
    assert starts == sorted(set(starts))
    for a, b in zip(starts, starts[1:]):
        assert b - a <= tile - overlap, "neighbours share at least the overlap"
    # on the grid wherever the canvas allows it (the last start is pinned to the canvas edge)
    assert all(s % unit == 0 for s in starts[:-1])
    # the fewest tiles: one fewer could not cover with that overlap
    if len(starts) > 1:
        assert (len(starts) - 2) * (tile - overlap) + tile < length


def test_spread_is_even():
    starts = tiling.tile_starts(200, 64, 16)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert max(gaps) - min(gaps) <= 1


def test_one_tile_when_it_covers_the_canvas():
    assert tiling.tile_starts(50, 64, 8) == [0]
    assert tiling.tile_boxes(40, 50, 64, 64, 8) == [Box(0, 40, 0, 50)]
    assert tiling.tile_boxes(40, 200, 64, 64, 8)[0].height == 40  # clipped in the short direction only


def test_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError, match="overlap"):
        tiling.tile_starts(200, 64, 64)


@pytest.mark.parametrize("method", td.METHODS)
@pytest.mark.parametrize("h,w", [(40, 56), (37, 61), (64, 64)])
def test_every_latent_pixel_is_covered_and_weights_sum(method, h, w):
    plan = td.layout(method, h, w, 24, 20, 6, dtype=torch.float64)
    assert all(b.height == 24 and b.width == 20 for b in plan.boxes)
    coverage = torch.zeros(h, w)
    for b in plan.boxes:
        coverage[b.y0:b.y1, b.x0:b.x1] += 1
    assert coverage.min() >= 1
    assert torch.all(plan.total > 0)
    # the denominator is the weights' sum: fusing a constant prediction gives the constant back
    canvas = torch.zeros(2, 3, h, w, dtype=torch.float64)
    ones = lambda boxes: [torch.ones(len(boxes) * 2, 3, 24, 20, dtype=torch.float64)]
    fused, = td.fuse(ones, tiling.tile_batches(plan.boxes, 3), plan, 1, canvas)
    torch.testing.assert_close(fused, torch.ones_like(canvas), rtol=0, atol=1e-12)


def test_shifted_tiles_do_not_overlap_when_they_divide_the_canvas():
    plan = td.layout(td.SHIFTED, 64, 96, 32, 32, 16)
    assert len(plan.boxes) == 6
    assert torch.all(plan.total == 1)


def test_gaussian_weights():
    w = td.tile_weight(td.MIXTURE_OF_DIFFUSERS, 33, 20, dtype=torch.float64)
    assert w.shape == (33, 20)
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    assert w[16, 9] == w.max() and w[0, 0] < 1e-6 * w.max()
    assert torch.all(td.tile_weight(td.MULTIDIFFUSION, 5, 7) == 1)


def pointwise(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(3 * x) + 0.5 * x


@pytest.mark.parametrize("method", td.METHODS)
@pytest.mark.parametrize("shape,tile,overlap,unit", [
    ((1, 4, 50, 70), (24, 32), 8, 1),  # tiles that do not divide the canvas
    ((2, 16, 48, 64), (20, 20), 6, 2),  # 16 channels, DiT patch grid
])
def test_fused_equals_untiled_for_a_pointwise_model(method, shape, tile, overlap, unit):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    h, w = shape[-2:]
    shift = td.shift_for_step(3, 0.7, *tile, unit) if method == td.SHIFTED else (0, 0)
    base = td.layout(method, h, w, *tile, overlap, unit=unit, dtype=torch.float64)
    plan = td.Layout(base.boxes, shift, base.weight, base.total)
    canvas = td.roll(x, shift)
    calls = []

    def predict(boxes):
        calls.append(len(boxes))
        tiles = torch.cat([tiling.crop(canvas, b) for b in boxes])
        return [pointwise(tiles), None]

    cond, missing = td.fuse(predict, tiling.tile_batches(plan.boxes, 4), plan, 2, canvas)
    assert missing is None
    torch.testing.assert_close(td.roll(cond, shift, back=True), pointwise(x), rtol=0, atol=1e-12)
    assert sum(calls) == len(plan.boxes) and max(calls) <= 4


def test_local_model_is_exact_where_no_tile_border_interferes():
    """A 3x3 filter with replicate padding is exact at a pixel in a tile unless the pixel lies on
    one of that tile's inner borders. Fusion averages the tiles covering a pixel, so the pixel is
    exact exactly when no covering tile has it on an inner border."""
    torch.manual_seed(1)
    x = torch.randn(1, 1, 40, 40, dtype=torch.float64)
    blur = lambda t: torch.nn.functional.avg_pool2d(torch.nn.functional.pad(t, (1, 1, 1, 1), mode="replicate"), 3, 1)
    plan = td.layout(td.MULTIDIFFUSION, 40, 40, 16, 16, 4, dtype=torch.float64)
    fused, = td.fuse(lambda boxes: [torch.cat([blur(tiling.crop(x, b)) for b in boxes])],
                     tiling.tile_batches(plan.boxes, 2), plan, 1, x)
    spoiled = torch.zeros(40, 40, dtype=torch.bool)
    for b in plan.boxes:
        inner = torch.zeros(40, 40, dtype=torch.bool)
        for edge, on_canvas_edge in ((b.y0, b.y0 == 0), (b.y1 - 1, b.y1 == 40)):
            inner[edge, b.x0:b.x1] |= not on_canvas_edge
        for edge, on_canvas_edge in ((b.x0, b.x0 == 0), (b.x1 - 1, b.x1 == 40)):
            inner[b.y0:b.y1, edge] |= not on_canvas_edge
        spoiled |= inner
    err = (fused - blur(x)).abs()[0, 0]
    assert err[~spoiled].max() < 1e-12 and (~spoiled).float().mean() > 0.7
    assert err[spoiled].min() > 0  # and the test would notice a fusion that ignored tiles


def test_shift_is_deterministic_on_the_grid_and_varies_by_step():
    shifts = {td.shift_for_step(5, s, 32, 48, 2) for s in torch.linspace(0.1, 14.0, 40).tolist()}
    assert len(shifts) > 20
    for dy, dx in shifts:
        assert 0 <= dy < 32 and 0 <= dx < 48 and dy % 2 == 0 and dx % 2 == 0
    assert td.shift_for_step(5, 1.5, 32, 48) == td.shift_for_step(5, 1.5, 32, 48)
    assert td.shift_for_step(5, 1.5, 32, 48) != td.shift_for_step(6, 1.5, 32, 48) or \
        td.shift_for_step(5, 2.5, 32, 48) != td.shift_for_step(6, 2.5, 32, 48)


def test_roll_round_trip_and_scale():
    x = torch.arange(2 * 16 * 24, dtype=torch.float32).reshape(2, 16, 24)
    assert torch.equal(td.roll(td.roll(x, (3, 5)), (3, 5), back=True), x)
    assert td.roll(x, (3, 5))[0, 0, 0] == x[0, 3, 5]
    pixels = torch.randn(1, 3, 16 * 8, 24 * 8)
    assert td.roll(pixels, (1, 2), scale=8)[0, 0, 0, 0] == pixels[0, 0, 8, 16]


def test_tile_batches_group_by_key_and_keep_size():
    boxes = [Box(0, 1, i, i + 1) for i in range(7)]
    batches = tiling.tile_batches(boxes, 2, key=lambda b: b.x0 % 2)
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    assert all(len({b.x0 % 2 for b in batch}) == 1 for batch in batches)
    assert sorted(b for batch in batches for b in batch) == boxes


def test_area_mult_ramps_only_inner_edges():
    m = td.area_mult((16, 20, 0, 4), 32, 32)
    assert m[:16, 4:24].min() > 0 and m[16:].abs().sum() == 0 and m[:, :4].abs().sum() == 0
    assert m[0, 14] == 1  # the canvas's top edge: no ramp
    assert m[15, 14] == pytest.approx(1 / 4)  # a ramp of min(8, 16 // 4) = 4 px at the bottom
    assert m[5, 4] == pytest.approx(1 / 5)  # min(8, 20 // 4) = 5 px on the left
    assert torch.all(td.area_mult((4, 4, 40, 40), 32, 32) == 0)


def test_nonzero_box():
    m = torch.zeros(2, 10, 12)
    assert td.nonzero_box(m) is None
    m[1, 3, 4] = 1
    m[0, 6, 9] = -2
    assert td.nonzero_box(m) == Box(3, 7, 4, 10)


def test_overlap_is_bounded_by_how_many_tiles_cover_a_pixel():
    td.check_overlap(96, 96, 72)  # 3/4 of the tile: 4 x 4 tiles per pixel, the most allowed
    assert td.coverage(96, 96, 72) == td.MAX_COVERAGE
    with pytest.raises(ValueError, match=r"about 64 tiles per step .*lower overlap"):
        td.check_overlap(8, 8, 7)  # 64 px tiles, 56 px overlap, in latent px: a stride of 1
    with pytest.raises(ValueError, match="must be smaller than the tile"):
        td.check_overlap(8, 16, 8)


def test_a_layout_past_the_tile_bound_is_refused_with_its_count(monkeypatch):
    monkeypatch.setattr(td, "MAX_TILES_PER_STEP", 16)
    assert len(td.layout(td.MULTIDIFFUSION, 64, 64, 16, 16, 0).boxes) == 16
    with pytest.raises(ValueError, match=r"64x80 latent would take 20 tiles per step, more than 16"):
        td.layout(td.MULTIDIFFUSION, 80, 64, 16, 16, 0)


@pytest.mark.parametrize("box,least,size,expected", [
    (Box(10, 11, 3, 5), 8, (64, 64), Box(6, 14, 0, 8)),      # grown about its centre, kept inside
    (Box(60, 62, 0, 20), 8, (64, 64), Box(56, 64, 0, 20)),   # against the far edge
    (Box(1, 2, 1, 2), 8, (4, 6), Box(0, 4, 0, 6)),           # a canvas smaller than the least: all of it
])
def test_a_box_grows_to_a_least_size_inside_its_canvas(box, least, size, expected):
    assert box.at_least(least, *size) == expected
