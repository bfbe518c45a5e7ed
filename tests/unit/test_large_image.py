"""core.large_image: tiles spilled to files and read back, rows into windows, and the pyramid's
halving, against the whole picture done at once."""
import os

import numpy as np
import pytest

from expanse.core.large_image import (Halver, RowSpill, RowWindows, deep_zoom_levels, halved_size, pyramid_sizes,
                                      read_rows, tile_spans, write_rows)
from expanse.core.tiling import Box, grid, spans


def picture(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def collect():
    got = []
    return got, got.append


def spilled(image, boxes, folder):
    rows = RowSpill(*image.shape, str(folder))
    for box in boxes:
        rows.add(box, image[box.y0:box.y1, box.x0:box.x1])
    return rows


@pytest.mark.parametrize("tile_h, tile_w", [(16, 16), (7, 30), (50, 50), (9, 29)])
def test_tiles_spilled_in_rows_read_back_as_the_picture(tile_h, tile_w, tmp_path):
    image = picture(37, 29)
    rows = RowSpill(37, 29, 3, str(tmp_path))
    for box in grid(37, 29, tile_h, tile_w):
        assert rows.complete < 37
        rows.add(box, image[box.y0:box.y1, box.x0:box.x1])
        # complete as soon as the last tile of a row of tiles is in, and not before
        assert rows.complete == (box.y1 if box.x1 == 29 else box.y0)
    np.testing.assert_array_equal(rows.read(Box(0, 37, 0, 29)), image)
    for box in [Box(3, 30, 5, 6), Box(0, 1, 0, 29), Box(15, 33, 1, 28), Box(36, 37, 28, 29)]:
        np.testing.assert_array_equal(rows.read(box), image[box.y0:box.y1, box.x0:box.x1])
    assert len(os.listdir(tmp_path)) == len(spans(37, tile_h))  # a file per row of tiles
    rows.close()
    assert os.listdir(tmp_path) == []


def test_rows_wait_for_the_tiles_above_them(tmp_path):
    image = picture(20, 10)
    boxes = list(grid(20, 10, 10, 5))  # two rows of two tiles
    rows = spilled(image, [boxes[2], boxes[3], boxes[0]], tmp_path)
    assert rows.complete == 0
    rows.add(boxes[1], image[boxes[1].y0:boxes[1].y1, boxes[1].x0:boxes[1].x1])
    assert rows.complete == 20
    np.testing.assert_array_equal(rows.read(Box(0, 20, 0, 10)), image)


def test_released_rows_go_with_their_files_and_cannot_be_read(tmp_path):
    image = picture(30, 8)
    rows = spilled(image, grid(30, 8, 10, 8), tmp_path)
    rows.release(15)  # the first file holds only rows above 15; the second still holds rows 15..20
    assert sorted(os.listdir(tmp_path)) == ["rows10.raw", "rows20.raw"]
    np.testing.assert_array_equal(rows.read(Box(15, 30, 0, 8)), image[15:])
    with pytest.raises(ValueError, match="not held"):
        rows.read(Box(14, 16, 0, 8))
    rows.release(30)
    assert os.listdir(tmp_path) == []


def test_rows_not_complete_cannot_be_read(tmp_path):
    image = picture(20, 10)
    rows = spilled(image, list(grid(20, 10, 10, 5))[:3], tmp_path)
    with pytest.raises(ValueError, match="not held"):
        rows.read(Box(5, 11, 0, 5))


def test_a_tile_outside_the_picture_or_of_the_wrong_shape_is_refused(tmp_path):
    rows = RowSpill(8, 8, 3, str(tmp_path))
    with pytest.raises(ValueError, match="outside"):
        rows.add(next(grid(16, 8, 16, 8)), np.zeros((16, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        rows.add(Box(0, 4, 0, 4), np.zeros((4, 5, 3), np.uint8))


def test_write_rows_puts_boxes_where_the_rows_are(tmp_path):
    image = picture(12, 9)
    path = tmp_path / "rows.raw"
    with open(path, "w+b", buffering=0) as f:  # the file holds rows 4.. of the picture
        for box in [Box(4, 8, 0, 9), Box(8, 12, 0, 3), Box(8, 12, 3, 9)]:  # whole rows, then parts of rows
            write_rows(f, 4, 9, box, image[box.y0:box.y1, box.x0:box.x1])
    assert path.read_bytes() == image[4:].tobytes()


def test_read_rows_reads_a_box_of_a_file_of_rows(tmp_path):
    image = picture(12, 9)
    path = tmp_path / "rows.raw"
    path.write_bytes(image[4:].tobytes())  # the file holds rows 4.. of the picture
    with open(path, "rb", buffering=0) as f:
        for box in [Box(4, 12, 0, 9), Box(5, 11, 2, 7), Box(11, 12, 8, 9)]:
            out = np.empty((box.height, box.width, 3), np.uint8)
            read_rows(f, 4, 9, box, out)
            np.testing.assert_array_equal(out, image[box.y0:box.y1, box.x0:box.x1])
        with pytest.raises(OSError, match="ends before"):
            read_rows(f, 0, 9, Box(0, 12, 0, 9), np.empty((12, 9, 3), np.uint8))


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
