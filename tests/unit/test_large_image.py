"""core.large_image: tiles into rows, rows into windows, and the pyramid's halving, against the
whole picture done at once."""
import numpy as np
import pytest

from expanse.core.large_image import (Halver, RowAssembler, RowWindows, deep_zoom_levels, halved_size, pyramid_sizes,
                              tile_spans)
from expanse.core.tiling import grid, spans


def picture(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def collect():
    got = []
    return got, got.append


@pytest.mark.parametrize("tile_h, tile_w", [(16, 16), (7, 30), (50, 50)])
def test_tiles_in_rows_come_out_as_the_picture_row_by_row(tile_h, tile_w):
    image = picture(37, 29)
    got, emit = collect()
    rows = RowAssembler(37, 29, 3, emit)
    for box in grid(37, 29, tile_h, tile_w):
        assert not rows.complete
        rows.add(box, image[box.y0:box.y1, box.x0:box.x1])
    assert rows.complete
    np.testing.assert_array_equal(np.concatenate(got), image)
    assert len(got) == len(spans(37, tile_h))  # one run per row of tiles, as soon as it is complete


def test_rows_wait_for_the_tiles_above_them():
    image = picture(20, 10)
    got, emit = collect()
    rows = RowAssembler(20, 10, 3, emit)
    boxes = list(grid(20, 10, 10, 5))  # two rows of two tiles
    for box in [boxes[2], boxes[3], boxes[0]]:
        rows.add(box, image[box.y0:box.y1, box.x0:box.x1])
    assert got == []
    rows.add(boxes[1], image[boxes[1].y0:boxes[1].y1, boxes[1].x0:boxes[1].x1])
    np.testing.assert_array_equal(np.concatenate(got), image)


def test_a_tile_outside_the_picture_is_refused():
    rows = RowAssembler(8, 8, 3, lambda r: None)
    with pytest.raises(ValueError):
        rows.add(next(grid(16, 8, 16, 8)), np.zeros((16, 8, 3), np.uint8))


@pytest.mark.parametrize("runs", [[37], [1] * 37, [5, 11, 2, 19], [30, 7]])
@pytest.mark.parametrize("tile, overlap", [(8, 0), (10, 1), (254, 1)])
def test_windows_are_the_spans_whatever_the_runs(runs, tile, overlap):
    image = picture(37, 6)
    spans = tile_spans(37, tile, overlap)
    got = []
    windows = RowWindows(37, spans, lambda i, rows: got.append((i, rows.copy())))
    y = 0
    for n in runs:
        windows.add(image[y:y + n])
        y += n
        assert windows.kept_rows <= max(b - a for a, b in spans) + max(runs)  # never the whole picture
    assert [i for i, _ in got] == list(range(len(spans)))
    for (i, rows), (y0, y1) in zip(got, spans):
        np.testing.assert_array_equal(rows, image[y0:y1])


def test_tile_spans_overlap_as_deep_zoom_does():
    assert tile_spans(600, 254, 1) == [(0, 255), (253, 509), (507, 600)]
    assert tile_spans(600, 256) == [(0, 256), (256, 512), (512, 600)]


def whole_halved(image):
    h, w = halved_size(*image.shape[:2])
    padded = np.pad(image.astype(np.uint16), ((0, 2 * h - image.shape[0]), (0, 2 * w - image.shape[1]), (0, 0)),
                    mode="edge")
    s = padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


@pytest.mark.parametrize("height, width", [(8, 8), (9, 7), (1, 5), (5, 1), (1, 1)])
@pytest.mark.parametrize("runs", [None, 1, 3])
def test_halving_in_runs_equals_halving_the_whole(height, width, runs):
    image = picture(height, width)
    got, emit = collect()
    halver = Halver(emit)
    step = runs or height
    for y in range(0, height, step):
        halver.add(image[y:y + step])
    halver.finish()
    np.testing.assert_array_equal(np.concatenate(got), whole_halved(image))


def test_pyramid_and_deep_zoom_level_counts():
    assert pyramid_sizes(640, 352, 128) == [(640, 352), (320, 176), (160, 88), (80, 44)]
    assert pyramid_sizes(1000, 1000, 1024) == [(1000, 1000)]
    assert pyramid_sizes(40960, 32768, 1024)[-1] == (640, 512)
    assert deep_zoom_levels(640, 352) == 11  # 1 px .. 640 px
    assert deep_zoom_levels(512, 512) == 10
    assert deep_zoom_levels(1, 1) == 1
    assert len(pyramid_sizes(640, 352, 1)) == deep_zoom_levels(640, 352)
