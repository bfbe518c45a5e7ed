"""core.progressive: the stage plan of ProgressiveGrowSampler."""
import pytest

from expanse.core import progressive as pg


def test_geometric_stages_grow_by_one_factor():
    scales = pg.stage_scales(4, 0.25, 1.0, pg.GEOMETRIC)
    assert scales[0] == pytest.approx(0.25) and scales[-1] == pytest.approx(1.0)
    ratios = [b / a for a, b in zip(scales, scales[1:])]
    assert ratios == pytest.approx([4 ** (1 / 3)] * 3)


def test_linear_stages_grow_by_one_amount():
    scales = pg.stage_scales(5, 0.2, 1.0, pg.LINEAR)
    assert [b - a for a, b in zip(scales, scales[1:])] == pytest.approx([0.2] * 4)


@pytest.mark.parametrize("spacing", pg.SPACINGS)
@pytest.mark.parametrize("height,width,grid", [(256, 256, 1), (128, 96, 2), (100, 37, 1), (17, 250, 2)])
def test_sizes_on_grid_growing_never_above_final(spacing, height, width, grid):
    stages = pg.plan(height, width, stages=5, min_scale=0.2, spacing=spacing, grid=grid)
    assert (stages[-1].height, stages[-1].width) == (height, width)
    for a, b in zip(stages, stages[1:]):
        assert (a.height, a.width) != (b.height, b.width)
        assert a.height <= b.height and a.width <= b.width
    for s in stages[:-1]:
        assert s.height % grid == 0 and s.width % grid == 0 and s.height >= grid and s.width >= grid
    assert stages[0].height == pytest.approx(height * 0.2, abs=grid)


def test_denoise_falls_from_second_to_last():
    stages = pg.plan(256, 256, stages=5, denoise_second=0.6, denoise_last=0.3)
    assert [s.denoise for s in stages] == pytest.approx([1.0, 0.6, 0.5, 0.4, 0.3])
    two = pg.plan(256, 256, stages=2, denoise_second=0.6, denoise_last=0.3)
    assert [s.denoise for s in two] == pytest.approx([1.0, 0.6])
    assert [s.denoise for s in pg.plan(64, 64, stages=1)] == [1.0]


def test_stages_that_round_to_the_same_size_are_merged():
    stages = pg.plan(8, 8, stages=8, min_scale=0.5)
    sizes = [(s.height, s.width) for s in stages]
    assert sizes == sorted(set(sizes)) and sizes[-1] == (8, 8) and len(sizes) < 8


def test_max_scale_below_one_stops_short():
    stages = pg.plan(200, 100, stages=3, min_scale=0.25, max_scale=0.5)
    assert (stages[-1].height, stages[-1].width) == (100, 50)


@pytest.mark.parametrize("kwargs,name", [
    (dict(stages=0), "stages"), (dict(min_scale=0.0), "min_scale"), (dict(min_scale=0.8, max_scale=0.5), "max_scale"),
    (dict(spacing="cubic"), "spacing"), (dict(denoise_second=1.5), "denoise_second"),
    (dict(denoise_last=-0.1), "denoise_last"),
])
def test_bad_settings_name_the_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        pg.plan(64, 64, **kwargs)
