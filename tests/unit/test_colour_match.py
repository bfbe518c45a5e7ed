"""core.colour_match: a redrawn tile's low frequencies replaced by its source's."""
import torch

from expanse.core.colour_match import low_frequencies, matched_colours


def smooth_picture(seed: int, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.randn(2, 4, 6, 6, generator=g), size=(size, size), mode="bicubic",
                                           align_corners=False)


def checkerboard(size: int = 48) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((yy + xx) % 2) * 2 - 1).float().expand(2, 4, size, size) * 0.5


def test_the_blur_keeps_a_constant_and_the_mean_and_flattens_a_checkerboard():
    flat = torch.full((1, 4, 20, 30), 1.5)
    torch.testing.assert_close(low_frequencies(flat, 2.0), flat)
    picture = smooth_picture(0)
    blurred = low_frequencies(picture, 2.0)
    assert blurred.shape == picture.shape and blurred.dtype == picture.dtype
    assert low_frequencies(checkerboard(), 2.0)[INSIDE].abs().max() < 0.02


# Away from the edges by the blur's reach (3 sigma): at an edge the repeated border row weighs in,
# so there the finest detail leaks into the low frequencies (for a
# checkerboard: a quarter of its amplitude; in the redraw the region's edges are mostly context, which is not pasted).
INSIDE = (..., slice(6, -6), slice(6, -6))


def test_a_tint_goes_and_the_detail_stays():
    """A redraw that tinted the tile (a constant per channel) and added the finest detail (a
    checkerboard): matched, the tint is gone and the detail is there, to within the blur's own
    ripple; the source's smooth content is untouched."""
    source = smooth_picture(1)
    tint = torch.tensor([0.8, -0.5, 0.3, 0.1]).view(1, 4, 1, 1)
    redrawn = source + tint + checkerboard()
    matched = matched_colours(redrawn, source, 2.0)
    torch.testing.assert_close(matched[INSIDE], (source + checkerboard())[INSIDE], rtol=0, atol=0.02)
    assert (matched - source - checkerboard()).abs().max() < 0.15, "and near the edges no more than a quarter of it"
    assert (redrawn - source - checkerboard()).abs().min() > 0.09, "the tint was there before"


def test_the_same_picture_is_left_alone_and_a_wider_blur_keeps_less_of_the_source():
    source = smooth_picture(2)
    torch.testing.assert_close(matched_colours(source, source, 2.0), source)
    other = smooth_picture(3)
    near = (matched_colours(other, source, 1.0) - source).abs().mean()
    far = (matched_colours(other, source, 4.0) - source).abs().mean()
    assert near < far
