"""core.chess_redraw: passes, regions, paste masks and seam patches."""
import pytest
import torch

from expanse.core import chess_redraw as cr
from expanse.core import tiling
from expanse.core.tiling import Box

CANVASES = [(64, 64, 16, 16), (70, 45, 16, 12), (32, 100, 32, 24)]


def touches(a: Box, b: Box) -> bool:
    """Sharing an edge or a corner."""
    return a.y0 <= b.y1 and b.y0 <= a.y1 and a.x0 <= b.x1 and b.x0 <= a.x1


@pytest.mark.parametrize("h,w,th,tw", CANVASES)
def test_chess_passes_never_hold_two_neighbours(h, w, th, tw):
    passes = cr.redraw_passes(h, w, th, tw, padding=4, feather=2, order=cr.CHESS)
    assert len(passes) == 2
    for patches in passes:
        for i, a in enumerate(patches):
            for b in patches[i + 1:]:
                edge = (a.target.y0 < b.target.y1 and b.target.y0 < a.target.y1) or \
                       (a.target.x0 < b.target.x1 and b.target.x0 < a.target.x1)
                assert not (touches(a.target, b.target) and edge), (a.key, b.key)


@pytest.mark.parametrize("order", [cr.CHESS, cr.LINEAR])
@pytest.mark.parametrize("h,w,th,tw", CANVASES)
def test_every_pixel_is_redrawn_once_and_regions_batch(order, h, w, th, tw):
    passes = cr.redraw_passes(h, w, th, tw, padding=4, feather=3, order=order)
    owners = torch.zeros(h, w, dtype=torch.int64)
    shapes = set()
    for patches in passes:
        for p in patches:
            owners[p.target.y0:p.target.y1, p.target.x0:p.target.x1] += 1
            shapes.add((p.region.height, p.region.width))
            assert p.region.y0 <= p.target.y0 and p.target.y1 <= p.region.y1
            assert p.region.x0 <= p.target.x0 and p.target.x1 <= p.region.x1
            assert 0 <= p.region.y0 and p.region.y1 <= h and 0 <= p.region.x0 and p.region.x1 <= w
            assert p.mask.shape == (p.region.height, p.region.width)
    assert torch.all(owners == 1), "the tiles partition the canvas"
    assert len(shapes) == 1, "one region shape: every pass batches"


def test_paste_masks_are_one_on_the_tile_and_fade_into_the_context():
    patches = cr.redraw_passes(64, 64, 16, 16, padding=8, feather=4, order=cr.CHESS)[0]
    p = next(p for p in patches if p.key[1:] == (2, 2))  # an inner tile
    t = p.target.relative_to(p.region)
    assert torch.all(p.mask[t.y0:t.y1, t.x0:t.x1] == 1)
    row = p.mask[(t.y0 + t.y1) // 2]
    left = row[t.x0 - 4:t.x0]
    assert torch.all(left[1:] > left[:-1]) and 0 < left[0] < 1, "a rising ramp into the tile"
    assert torch.all(row[:t.x0 - 4] == 0), "context beyond the feather is kept"


def test_pasted_weights_sum_to_one_and_each_tile_keeps_its_own_middle():
    """Paste every patch's one-hot "result" (a channel per patch, plus one for the original canvas)
    through its mask, pass after pass: the weights at each pixel must sum to one, nothing of the
    original may survive, and each tile's middle (beyond the neighbours' feathers) is its own."""
    h = w = 64
    feather = 4
    passes = cr.redraw_passes(h, w, 16, 16, padding=8, feather=feather, order=cr.CHESS)
    patches = [p for pass_ in passes for p in pass_]
    canvas = torch.zeros(1, len(patches) + 1, h, w)
    canvas[:, -1] = 1  # the original picture
    for k, p in enumerate(patches):
        result = torch.zeros(1, len(patches) + 1, p.region.height, p.region.width)
        result[:, k] = 1
        cr.paste(canvas, p, result)
    torch.testing.assert_close(canvas.sum(dim=1), torch.ones(1, h, w))
    assert canvas[:, -1].max() == 0, "every pixel redrawn"
    for k, p in enumerate(patches):
        t = p.target
        middle = canvas[0, k, t.y0 + feather:t.y1 - feather, t.x0 + feather:t.x1 - feather]
        assert torch.all(middle == 1), p.key


def test_paste_touches_the_region_only():
    canvas = torch.zeros(1, 4, 32, 32)
    patch = cr.redraw_passes(32, 32, 16, 16, padding=4, feather=2, order=cr.LINEAR)[0][0]
    cr.paste(canvas, patch, torch.ones(1, 4, patch.region.height, patch.region.width))
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[patch.region.y0:patch.region.y1, patch.region.x0:patch.region.x1] = False
    assert canvas[..., outside].abs().sum() == 0
    t = patch.target
    assert torch.all(canvas[..., t.y0:t.y1, t.x0:t.x1] == 1)


@pytest.mark.parametrize("mode", [m for m in cr.SEAM_MODES if m != cr.SEAMS_NONE])
@pytest.mark.parametrize("h,w,th,tw", CANVASES)
def test_seam_patches_cover_every_seam_and_batch(mode, h, w, th, tw):
    grid = tiling.grid_rows(h, w, th, tw)
    passes = cr.seam_passes(h, w, th, tw, mode, band=8, feather=2)
    weight = torch.zeros(h, w)
    for patches in passes:
        assert len({(p.region.height, p.region.width) for p in patches}) == 1
        for p in patches:
            b = p.region
            weight[b.y0:b.y1, b.x0:b.x1] += p.mask
    # every pixel on both sides of every border gets a positive weight
    for row in grid:
        for box in row:
            if box.x0 > 0:
                assert torch.all(weight[box.y0:box.y1, box.x0 - 1:box.x0 + 1] > 0), ("vertical", box)
            if box.y0 > 0:
                assert torch.all(weight[box.y0 - 1:box.y0 + 1, box.x0:box.x1] > 0), ("horizontal", box)


def test_no_seams_for_one_tile_or_mode_none():
    assert cr.seam_passes(16, 16, 16, 16, cr.SEAMS_BAND, 8, 2) == []
    assert cr.seam_passes(64, 64, 16, 16, cr.SEAMS_NONE, 8, 2) == []
    assert cr.redraw_passes(64, 64, 16, 16, 4, 2, cr.NO_REDRAW) == []


def test_patch_seeds_depend_on_place_and_seed_only():
    assert cr.patch_seed(1, ("redraw0", 2, 3)) == cr.patch_seed(1, ("redraw0", 2, 3))
    seeds = {cr.patch_seed(1, ("redraw0", r, c)) for r in range(8) for c in range(8)}
    assert len(seeds) == 64
    assert cr.patch_seed(2, ("redraw0", 2, 3)) != cr.patch_seed(1, ("redraw0", 2, 3))


def test_bad_modes_are_named():
    with pytest.raises(ValueError, match="order"):
        cr.redraw_passes(64, 64, 16, 16, 4, 2, "spiral")
    with pytest.raises(ValueError, match="seam mode"):
        cr.seam_passes(64, 64, 16, 16, "zigzag", 8, 2)


@pytest.mark.parametrize("mode", [cr.SEAMS_BAND, cr.SEAMS_HALF_TILE_INTERSECTIONS])
def test_masks_are_shared_between_tiles_so_their_memory_does_not_grow_with_the_canvas(mode):
    """A 40x40 tile grid keeps a handful of mask tensors (inner, edges, corners), each equal to the
    mask computed for its own patch alone."""
    side, tile = 40 * 16, 16
    patches = [p for pass_ in cr.redraw_passes(side, side, tile, tile, padding=8, feather=4, order=cr.CHESS)
               + cr.seam_passes(side, side, tile, tile, mode, band=8, feather=2) for p in pass_]
    assert len(patches) > 3000
    distinct = {id(p.mask) for p in patches}
    assert len(distinct) <= 40, f"{len(distinct)} mask tensors for {len(patches)} patches"
    for p in (q for q in patches if q.key[0].startswith("redraw")):
        alone = cr.feathered_mask(p.target, p.region, 4, side, side)
        assert torch.equal(p.mask, alone)



def _stale_pairwise(patches) -> list[set]:
    """stale_boxes by its definition: every region against every other patch's footprint."""
    out = []
    for i, p in enumerate(patches):
        found = set()
        for j, q in enumerate(patches):
            f, r = cr.footprint(q), p.region
            if j != i and f is not None and r.y0 < f.y1 and f.y0 < r.y1 and r.x0 < f.x1 and f.x0 < r.x1:
                found.add(Box(max(r.y0, f.y0), min(r.y1, f.y1), max(r.x0, f.x0), min(r.x1, f.x1)))
        out.append(found)
    return out


def _all_passes(h, w, th, tw, padding, feather):
    passes = cr.redraw_passes(h, w, th, tw, padding, feather, cr.CHESS)
    passes += cr.redraw_passes(h, w, th, tw, padding, feather, cr.LINEAR)
    for mode in cr.SEAM_MODES:
        passes += cr.seam_passes(h, w, th, tw, mode, band=padding, feather=feather)
    return passes


@pytest.mark.parametrize("padding,feather", [(0, 0), (4, 2), (8, 4), (12, 12), (24, 4)])
@pytest.mark.parametrize("h,w,th,tw", CANVASES)
def test_stale_boxes_are_the_regions_cut_by_other_patches_footprints(h, w, th, tw, padding, feather):
    for patches in _all_passes(h, w, th, tw, padding, feather):
        assert [set(b) for b in cr.stale_boxes(patches)] == _stale_pairwise(patches)


def _fake_redraw(crop: torch.Tensor) -> torch.Tensor:
    """Stands in for the sampler: a result that depends on every pixel of the region it reads."""
    return crop.roll(1, dims=-1) * 0.5 + crop.amax()  # amax: exact whatever the memory layout


def _run_pass(canvas: torch.Tensor, patches, read) -> torch.Tensor:
    """A pass in batches of one (the order most exposed to earlier pastes); read(canvas, i) gives
    patch i's region to redraw."""
    canvas = canvas.clone()
    reader = read(canvas)
    for i, patch in enumerate(patches):
        cr.paste(canvas, patch, _fake_redraw(reader(i)))
    return canvas


@pytest.mark.parametrize("padding,feather", [(4, 2), (8, 4), (12, 12), (24, 4)])
@pytest.mark.parametrize("h,w,th,tw", CANVASES)
def test_pass_source_reads_the_canvas_as_the_pass_found_it(h, w, th, tw, padding, feather):
    """A pass reading through PassSource while it pastes into the live canvas paints the picture a
    pass reading from a full copy paints; reading the live canvas plainly does not wherever a
    region has stale boxes (so keeping them aside is needed, and the test can fail)."""
    canvas = torch.rand(1, 4, h, w, generator=torch.Generator().manual_seed(h * w))
    for patches in _all_passes(h, w, th, tw, padding, feather):
        def copied(c, patches=patches):
            copy = c.clone()
            return lambda i: tiling.crop(copy, patches[i].region)

        expected = _run_pass(canvas, patches, copied)
        assert torch.equal(_run_pass(canvas, patches, lambda c: cr.PassSource(c, patches).read), expected)
        plain = _run_pass(canvas, patches, lambda c: lambda i: tiling.crop(c, patches[i].region).clone())
        assert torch.equal(plain, expected) == (not any(cr.stale_boxes(patches)))


def test_a_chess_pass_keeps_under_a_tenth_of_the_canvas_not_a_copy():
    """The usual settings (512 px tiles, 64 px padding, 32 px feather; 8x smaller in latent pixels)
    on a 40x40 tile canvas: each chess pass keeps aside under a tenth of the canvas (7%: the
    corners of the contexts, as boxes around the diagonal neighbours' paste ramps)."""
    side = 40 * 64
    canvas = torch.zeros(1, 1, side, side)
    for patches in cr.redraw_passes(side, side, 64, 64, padding=8, feather=4, order=cr.CHESS):
        kept = sum(pixels.numel() for boxes in cr.PassSource(canvas, patches).kept for _, pixels in boxes)
        assert 0 < kept < 0.1 * canvas.numel(), kept / canvas.numel()


def test_within_limits_a_patch_to_the_allowed_part_or_drops_it():
    """A canvas-sized mask of where the picture may change: a patch's mask is cut to it (per
    picture), a patch whose reach it misses is dropped, and stale boxes follow the cut masks."""
    h, w = 64, 64
    patches = cr.redraw_passes(h, w, 16, 16, padding=4, feather=2, order=cr.CHESS)[0]
    allowed = torch.zeros(2, 1, h, w)
    allowed[0, :, :, :14] = 1  # picture 0: short of the 2 px ramp of the tiles starting at x 16
    allowed[1, :, :, :8] = 0.5
    limited = {p.key: cr.within(p, allowed) for p in patches}
    kept = [p for p in limited.values() if p is not None]
    assert {p.target.x0 for p in kept} == {0} and len(kept) == 2
    for original in patches:
        if original.target.x0 == 0:
            cut = limited[original.key]
            assert cut.mask.shape == (2, 1, original.region.height, original.region.width)
            assert torch.equal(cut.mask, original.mask * tiling.crop(allowed, original.region))
            assert cr.footprint(cut).x1 == 14
    assert cr.within(patches[0], torch.zeros(1, 1, h, w)) is None
    assert [set(b) for b in cr.stale_boxes(kept)] == _stale_pairwise(kept)
