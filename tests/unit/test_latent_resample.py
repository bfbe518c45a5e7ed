"""core.latent_resample: shapes and dtypes, exact identity, no clipping, antialiasing, bislerp's
norms and directions, Lanczos against PIL, target sizes, masks and video latents."""
import math

import pytest
import torch
import torch.nn.functional as F

from expanse.core import latent_resample as lr

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
INTERPOLATE_METHODS = ("bilinear", "bicubic", "lanczos")


@pytest.fixture(autouse=True)
def one_thread():
    # Small tensors; other jobs may be sharing the machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def latent(b=2, c=4, h=12, w=16, *, seed=0, dtype=torch.float32, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, h, w, generator=g) * 1.5).to(dtype=dtype, device=device)


def checkerboard(h: int, w: int) -> torch.Tensor:
    i = torch.arange(h)[:, None]
    j = torch.arange(w)[None, :]
    return ((i + j) % 2 * 2.0 - 1.0).expand(1, 1, h, w).clone()


# ---- shapes, dtypes, identity --------------------------------------------------------------

@pytest.mark.parametrize("method", lr.METHODS)
@pytest.mark.parametrize("channels", [4, 16])
@pytest.mark.parametrize("size", [(24, 32), (6, 8), (17, 23), (29, 7)])  # up, down, odd, mixed
@pytest.mark.parametrize("device", DEVICES)
def test_shape_dtype_and_device(method, channels, size, device):
    x = latent(c=channels, device=device)
    out = lr.resample(x, *size, method)
    assert out.shape == (2, channels, *size)
    assert out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", lr.METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_same_size_is_the_identity(method, dtype):
    x = latent(c=16, h=13, w=9, dtype=dtype)
    assert torch.equal(lr.resample(x, 13, 9, method), x)


@pytest.mark.parametrize("method", ["bislerp", "lanczos"])
def test_an_unchanged_dimension_is_left_alone(method):
    x = latent(h=10, w=10)
    wider = lr.resample(x, 10, 25, method)
    # Each row resized on its own gives the same rows: the height pass did nothing.
    for row in range(10):
        alone = lr.resample(x[:, :, row:row + 1], 1, 25, method)
        torch.testing.assert_close(wider[:, :, row:row + 1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", lr.METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_float32(method, dtype):
    x = latent(h=10, w=14, dtype=dtype)
    out = lr.resample(x, 25, 9, method)
    reference = lr.resample(x.float(), 25, 9, method)
    assert out.dtype == dtype
    # Computed in float32: only the final rounding to the half type differs.
    torch.testing.assert_close(out, reference.to(dtype))
    torch.testing.assert_close(out.float(), reference, rtol=2e-2, atol=2e-2)


def test_video_is_resampled_frame_by_frame():
    g = torch.Generator().manual_seed(3)
    video = torch.randn(2, 16, 5, 8, 12, generator=g)
    out = lr.resample_video(video, 12, 20, "bislerp")
    assert out.shape == (2, 16, 5, 12, 20)
    for t in range(5):
        torch.testing.assert_close(out[:, :, t], lr.resample(video[:, :, t], 12, 20, "bislerp"))


def test_bad_arguments_are_named():
    x = latent()
    with pytest.raises(ValueError, match="method"):
        lr.resample(x, 8, 8, "sinc")
    with pytest.raises(ValueError, match="height"):
        lr.resample(x, 0, 8, "bilinear")
    with pytest.raises(ValueError, match="4-D"):
        lr.resample(x[0], 8, 8, "bilinear")
    with pytest.raises(ValueError, match="5-D"):
        lr.resample_video(x, 8, 8, "bilinear")


# ---- no clipping, Lanczos ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["bicubic", "lanczos"])
def test_an_edge_overshoots_and_nothing_is_clamped(method):
    step = torch.full((1, 4, 8, 16), -3.0)
    step[..., 8:] = 3.0
    out = lr.resample(step, 8, 40, method)
    # Ringing past both levels (sharpness, not clipping to the input's range or to 0..1) ...
    assert out.max() > 3.05 and out.min() < -3.05
    # ... but only a ringing's worth (Lanczos-3 rings by about 11% of the step, bicubic less).
    assert out.abs().max() < 3.0 + 0.15 * 6.0


def test_lanczos_keeps_a_constant():
    x = torch.full((1, 4, 9, 11), -2.75)
    for size in [(9, 30), (20, 11), (4, 5), (31, 3)]:
        torch.testing.assert_close(lr.resample(x, *size, "lanczos"), torch.full((1, 4, *size), -2.75))


@pytest.mark.parametrize("size_in,size_out", [(16, 40), (20, 57), (40, 13), (64, 15), (9, 100)])
def test_lanczos_matrix_rows_sum_to_one_and_stay_local(size_in, size_out):
    m = lr.lanczos_matrix(size_in, size_out, dtype=torch.float64)
    assert m.shape == (size_out, size_in)
    torch.testing.assert_close(m.sum(dim=1), torch.ones(size_out, dtype=torch.float64))
    reach = lr.LANCZOS_LOBES * max(size_in / size_out, 1.0) + 1
    centres = (torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5
    distance = (torch.arange(size_in)[None, :] - centres[:, None]).abs()
    assert torch.all(m[distance > reach] == 0)


def test_lanczos_matrix_at_same_size_is_the_identity():
    assert torch.equal(lr.lanczos_matrix(7, 7), torch.eye(7))


def _interior(size_in: int, size_out: int, margin: float) -> torch.Tensor:
    """Output positions whose source centre is at least margin from either input edge."""
    centres = (torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5
    return (centres >= margin) & (centres <= size_in - 1 - margin)


def test_lanczos_ramp_halving_is_exact():
    # Halving puts every output centre halfway between two inputs: the taps are symmetric and
    # a ramp comes back exactly, with or without antialias.
    ramp = torch.linspace(-4, 4, 40, dtype=torch.float64).expand(1, 1, 3, 40)
    expected = F.avg_pool2d(ramp, (1, 2))
    for antialias in (True, False):
        out = lr.resample(ramp, 3, 20, "lanczos", antialias=antialias)
        inner = _interior(40, 20, lr.LANCZOS_LOBES * 2)
        torch.testing.assert_close(out[..., inner], expected[..., inner], rtol=0, atol=1e-9)


def _ramp_error(size_in: int, size_out: int, slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """|lanczos(ramp) - ramp| at the interior outputs, and those outputs' source centres."""
    ramp = (slope * torch.arange(size_in, dtype=torch.float64) - 3).expand(1, 1, 2, size_in)
    out = lr.resample(ramp, 2, size_out, "lanczos")[0, 0, 0]
    centres = (torch.arange(size_out, dtype=torch.float64) + 0.5) * size_in / size_out - 0.5
    inner = _interior(size_in, size_out, lr.LANCZOS_LOBES)
    return (out - (slope * centres - 3))[inner].abs(), centres[inner]


@pytest.mark.parametrize("size_in,size_out", [(16, 40), (20, 57), (12, 36), (10, 80)])
def test_lanczos_ramp_upscaled_follows_the_ramp(size_in, size_out):
    slope = 0.5
    error, _ = _ramp_error(size_in, size_out, slope)
    # Lanczos-3's sampled taps are not symmetric off the half-pixel, so it is not exactly
    # linear-preserving: its first moment is off by up to ~0.02 px (PIL's LANCZOS shows the
    # same, 0.0198 px at a quarter-pixel offset).
    assert error.max() < 0.021 * slope


def test_lanczos_ramp_is_exact_where_outputs_land_on_pixels():
    # Tripling puts every third output centre on an input pixel, where the kernel is 1 there and
    # 0 on every other pixel.
    error, centres = _ramp_error(12, 36, 0.5)
    on_pixel = (centres - centres.round()).abs() < 1e-9
    assert on_pixel.sum() >= 3
    assert error[on_pixel].max() < 1e-9
    assert error[~on_pixel].max() > 1e-4  # so the check above is not vacuous


@pytest.mark.parametrize("size_in,size_out", [((15, 18), (37, 45)), ((48, 40), (13, 17))])
def test_lanczos_matches_pil_away_from_the_edges(size_in, size_out):
    Image = pytest.importorskip("PIL.Image")
    np = pytest.importorskip("numpy")
    g = torch.Generator().manual_seed(5)
    plane = torch.randn(*size_in, generator=g) * 3  # latent-like values, far outside 0..255 rules
    # PIL's float mode: no 8-bit rounding, no clipping, always antialiased when shrinking.
    image = Image.fromarray(plane.numpy().astype(np.float32), mode="F")
    pil = torch.from_numpy(np.asarray(image.resize(size_out[::-1], Image.Resampling.LANCZOS)).copy())
    ours = lr.resample(plane.expand(1, 1, *size_in), *size_out, "lanczos")[0, 0]
    # PIL drops taps past the edge where we replicate the edge pixel: compare the interior.
    rows = _interior(size_in[0], size_out[0], lr.LANCZOS_LOBES * max(size_in[0] / size_out[0], 1.0) + 1)
    cols = _interior(size_in[1], size_out[1], lr.LANCZOS_LOBES * max(size_in[1] / size_out[1], 1.0) + 1)
    assert rows.sum() >= 3 and cols.sum() >= 3
    torch.testing.assert_close(ours[rows][:, cols], pil[rows][:, cols], rtol=0, atol=1e-4)


# ---- antialias -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", INTERPOLATE_METHODS)
def test_antialias_flattens_a_checkerboard_when_shrinking(method):
    # A factor of 3 puts output centres on input pixels, so without a wider kernel every output
    # is one source pixel and the checkerboard comes through at full strength.
    board = checkerboard(48, 48).expand(1, 4, 48, 48)
    smooth = lr.resample(board, 16, 16, method, antialias=True)
    aliased = lr.resample(board, 16, 16, method, antialias=False)
    assert smooth.std() < 0.05
    assert aliased.std() > 0.9


@pytest.mark.parametrize("method", INTERPOLATE_METHODS)
def test_antialias_leaves_a_growing_dimension_alone(method):
    # Rows all alike: shrinking the height changes nothing, so each row must come out exactly as
    # a plain width upscale of that row, whether or not the other dimension was antialiased.
    row = latent(b=1, c=4, h=1, w=9, seed=4)
    x = row.expand(1, 4, 30, 9)
    mixed = lr.resample(x, 7, 20, method, antialias=True)
    plain = lr.resample(row, 1, 20, method, antialias=False)
    torch.testing.assert_close(mixed, plain.expand_as(mixed), rtol=0, atol=1e-5)


def test_nearest_modes_ignore_antialias():
    board = checkerboard(48, 48)
    for method in ("nearest", "nearest-exact"):
        assert torch.equal(lr.resample(board, 16, 16, method, antialias=True),
                           lr.resample(board, 16, 16, method, antialias=False))
        assert set(lr.resample(board, 16, 16, method).unique().tolist()) <= {-1.0, 1.0}


def test_area_averages_when_shrinking_and_repeats_when_growing():
    x = latent(h=8, w=8)
    torch.testing.assert_close(lr.resample(x, 4, 4, "area"), F.avg_pool2d(x, 2))
    assert torch.equal(lr.resample(x, 16, 16, "area"), x.repeat_interleave(2, -2).repeat_interleave(2, -1))


@pytest.mark.parametrize("size_in,size_out", [(20, 7), (16, 5), (24, 11)])
def test_bislerp_antialias_sees_every_source_pixel(size_in, size_out):
    missed = []
    for position in range(size_in):
        impulse = torch.zeros(1, 4, 1, size_in)
        impulse[0, :, 0, position] = torch.tensor([1.0, -2.0, 0.5, 3.0])
        assert lr.resample(impulse, 1, size_out, "bislerp", antialias=True).abs().sum() > 0
        if lr.resample(impulse, 1, size_out, "bislerp", antialias=False).abs().sum() == 0:
            missed.append(position)
    assert missed, "without antialias, bislerp's two neighbours skip some pixels"


# ---- bislerp -------------------------------------------------------------------------------

def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("channels", [4, 16])
@pytest.mark.parametrize("size", [(24, 32), (19, 37), (12, 40)])
def test_bislerp_norms_are_the_bilinear_interpolation_of_norms(channels, size):
    x = latent(c=channels, h=12, w=16, seed=channels)
    out = lr.resample(x, *size, "bislerp")
    expected = F.interpolate(_norms(x), size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(_norms(out), expected, rtol=1e-5, atol=1e-6)


def test_bislerp_norms_lie_between_the_neighbours_norms():
    x = latent(c=16, h=1, w=10, seed=7)
    out = lr.resample(x, 1, 37, "bislerp")
    centres = ((torch.arange(37) + 0.5) * 10 / 37 - 0.5).clamp(min=0)
    left = centres.floor().long().clamp(max=9)
    right = (left + 1).clamp(max=9)
    source = _norms(x)[..., 0, :]
    low = torch.minimum(source[..., left], source[..., right])
    high = torch.maximum(source[..., left], source[..., right])
    got = _norms(out)[..., 0, :]
    assert torch.all(got >= low * (1 - 1e-5)) and torch.all(got <= high * (1 + 1e-5))
    # Averaging the vectors instead (bilinear) shortens them below both neighbours somewhere.
    averaged = _norms(lr.resample(x, 1, 37, "bilinear"))[..., 0, :]
    assert torch.any(averaged < low * (1 - 1e-3))


def test_bislerp_turns_the_direction_at_a_constant_rate():
    x = latent(c=4, h=1, w=2, seed=11)
    out = lr.resample(x, 1, 8, "bislerp")  # centres -0.25 .. 1.25: t = 0, 0, 1/8, 3/8, ... 1, 1
    unit = x / _norms(x)
    omega = torch.acos((unit[..., 0] * unit[..., 1]).sum(dim=1))
    t = ((torch.arange(8) + 0.5) * 2 / 8 - 0.5).clamp(0, 1)
    out_unit = out / _norms(out)
    angle = torch.acos((out_unit * unit[..., :1]).sum(dim=1).clamp(-1, 1))[:, 0]
    torch.testing.assert_close(angle, t * omega, rtol=0, atol=1e-3)
    # ... staying in the plane of the two directions
    basis, _ = torch.linalg.qr(unit[0, :, 0, :])  # (4, 2)
    inside = basis @ (basis.T @ out_unit[0, :, 0, :])
    torch.testing.assert_close(inside, out_unit[0, :, 0, :], rtol=0, atol=1e-5)


def test_bislerp_handles_zero_and_parallel_vectors():
    x = latent(c=4, h=6, w=6, seed=2)
    x[..., :3, :3] = 0.0  # a zero patch, next to nonzero vectors
    x[..., 4, :] = x[..., 4, :1] * torch.linspace(0.5, 2.0, 6)  # a row of parallel vectors
    out = lr.resample(x, 13, 17, "bislerp")
    assert torch.isfinite(out).all()
    # Zero meets zero: still zero.
    assert torch.all(out[..., :3, :5] == 0)
    # Parallel vectors keep their direction.
    row = lr.resample(x[..., 4:5, :], 1, 17, "bislerp")
    direction = x[..., 4:5, :1] / _norms(x[..., 4:5, :1])
    torch.testing.assert_close(row / _norms(row), direction.expand_as(row), rtol=0, atol=1e-6)


def test_bislerp_zero_next_to_a_vector_takes_its_direction():
    x = torch.zeros(1, 4, 1, 2)
    x[0, :, 0, 1] = torch.tensor([3.0, 0.0, -4.0, 0.0])
    out = lr.resample(x, 1, 8, "bislerp")
    nonzero = _norms(out)[0, 0, 0] > 0
    assert nonzero.sum() >= 4
    directions = (out / _norms(out).clamp(min=1e-30))[0, :, 0, nonzero]
    torch.testing.assert_close(directions, (x[0, :, 0, 1:] / 5.0).expand_as(directions))
    assert torch.all(_norms(out) <= 5.0 + 1e-6)


def test_bislerp_opposite_vectors_give_no_nan():
    x = torch.zeros(1, 4, 1, 2)
    x[0, :, 0, 0] = torch.tensor([1.0, 2.0, 0.0, 0.0])
    x[0, :, 0, 1] = -x[0, :, 0, 0]
    out = lr.resample(x, 1, 4, "bislerp")  # t = 0, 1/4, 3/4, 1
    assert torch.isfinite(out).all()
    torch.testing.assert_close(_norms(out), torch.full((1, 1, 1, 4), math.sqrt(5.0)))


# ---- target size ---------------------------------------------------------------------------

def test_scaled_size_by_scale():
    assert lr.scaled_size(64, 96, scale=1.5) == (96, 144)
    assert lr.scaled_size(64, 96, scale=0.5) == (32, 48)
    assert lr.scaled_size(5, 7, scale=1.5) == (8, 11)  # 7.5 and 10.5 round half up
    # The targets are ignored when a scale is given.
    assert lr.scaled_size(64, 96, scale=2.0, target_height=10) == (128, 192)


def test_scaled_size_keeps_the_aspect_when_one_target_is_zero():
    assert lr.scaled_size(64, 96, target_width=144) == (96, 144)
    assert lr.scaled_size(64, 96, target_height=128) == (128, 192)
    assert lr.scaled_size(64, 96, target_height=40, target_width=50) == (40, 50)
    h, w = lr.scaled_size(77, 130, target_width=200)
    assert w == 200 and abs(h / w - 77 / 130) < 1 / 200


def test_scaled_size_snaps_to_the_grid():
    assert lr.scaled_size(64, 96, target_height=100, grid=8) == (104, 152)  # 12.5 and 18.75 units
    assert lr.scaled_size(64, 96, scale=1.3, grid=2) == (84, 124)
    h, w = lr.scaled_size(33, 47, scale=1.7, grid=4)
    assert h % 4 == 0 and w % 4 == 0
    assert abs(h - 33 * 1.7) <= 2 and abs(w - 47 * 1.7) <= 2
    assert lr.scaled_size(64, 96, scale=0.01, grid=8) == (8, 8)  # at least one grid unit


@pytest.mark.parametrize("kwargs,name", [
    ({"scale": 0}, "scale"), ({"scale": -1.5}, "scale"), ({"scale": float("nan")}, "scale"),
    ({"target_height": -8}, "target_height"), ({"target_width": -8, "target_height": 16}, "target_width"),
    ({}, "target_height and target_width"), ({"target_height": 0, "target_width": 0}, "target_width"),
    ({"scale": 2.0, "grid": 0}, "grid"),
])
def test_scaled_size_errors_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lr.scaled_size(64, 96, **kwargs)


# ---- noise masks ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(12, 16), (3, 12, 16), (3, 1, 12, 16)])
@pytest.mark.parametrize("size", [(24, 32), (5, 7)])
def test_mask_keeps_its_layout(shape, size):
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(*shape, generator=g)
    out = lr.resample_mask(mask, *size)
    assert out.shape == (*shape[:-2], *size)
    assert out.dtype == mask.dtype
    assert out.min() >= 0 and out.max() <= 1
    # Each sample resized on its own: the batch is not mixed.
    flat = mask.reshape(-1, *shape[-2:])
    for i in range(flat.shape[0]):
        alone = lr.resample_mask(flat[i], *size)
        torch.testing.assert_close(out.reshape(-1, *size)[i], alone)


def test_pixel_resolution_mask_lands_on_the_latent():
    mask = torch.zeros(2, 1, 512, 768)
    mask[..., :, :384] = 1.0  # left half at pixel resolution
    out = lr.resample_mask(mask, 64, 96)
    assert out.shape == (2, 1, 64, 96)
    assert torch.all(out[..., :47] > 0.999) and torch.all(out[..., 49:] < 0.001)


def test_mask_is_clamped_to_weights():
    mask = torch.tensor([[-0.5, 1.5], [0.25, 2.0]])
    out = lr.resample_mask(mask, 6, 6)
    assert out.min() == 0.0 and out.max() == 1.0
    assert lr.resample_mask(torch.ones(4, 4, dtype=torch.bool), 8, 8).dtype == torch.float32


def test_mask_half_dtype_is_kept():
    mask = torch.rand(1, 10, 10).half()
    assert lr.resample_mask(mask, 20, 20).dtype == torch.float16


@pytest.mark.parametrize("size_in,size_out", [((37, 29), (80, 61)), ((64, 48), (23, 17)), ((30, 20), (30, 55)),
                                              ((30, 20), (71, 20))])
def test_lanczos_band_by_band_is_the_whole_picture_bit_for_bit(monkeypatch, size_in, size_out):
    """Lanczos runs band by band of output rows (its temporaries a band's, not the picture's):
    bands of 5 rows give exactly what one band of the whole picture gives, enlarging, shrinking and
    along one axis only."""
    x = torch.randn(2, 4, *size_in, generator=torch.Generator().manual_seed(7))
    monkeypatch.setattr(lr, "LANCZOS_BAND_ROWS", 10 ** 6)
    whole = lr.resample(x, *size_out, "lanczos")
    monkeypatch.setattr(lr, "LANCZOS_BAND_ROWS", 5)
    banded = lr.resample(x, *size_out, "lanczos")
    assert banded.shape == (2, 4, *size_out) and torch.equal(banded, whole)
