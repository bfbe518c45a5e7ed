import dataclasses
import math
import weakref
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from expanse.core import attention_context, tiled_vae, vae_runner, vae_sampled_stats
from expanse.core.tiled_vae import run_exact, run_fast, run_sampled, steps_per_sample
from expanse.core.vae_geometry import (auto_tile_px, global_attention_share, min_tile_px, parked_bytes, pass_tile,
                                       shrunk, tile_working_bytes)
from expanse.core.vae_program import AttentionPass
from expanse.core.vae_runner import NonFiniteActivation, Parked, Runner
from expanse.core.vae_sampled_stats import Guide, Sample, estimate_stats, sample_boxes
from expanse.core.tiling import Box
from expanse.core.vae_program import UnsupportedVAE, compile_decoder, compile_encoder
from reference_vae import Autoencoder, randomize

torch.set_grad_enabled(False)


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


class Collector:
    """A sink that assembles tiles into one tensor and counts how often each pixel was written."""

    def __init__(self, batch, channels, height, width):
        self.out = torch.zeros(batch, channels, height, width)
        self.writes = torch.zeros(batch, height, width, dtype=torch.int32)

    def __call__(self, b, box: Box, tile):
        self.out[b, :, box.y0:box.y1, box.x0:box.x1] = tile
        self.writes[b, box.y0:box.y1, box.x0:box.x1] += 1


def run(prog, x, fast=False, **kw):
    """Runs a compiled program over x into a Collector sized for its output."""
    b, _, h, w = x.shape
    oh, ow = prog.out_size(h, w)
    sink = Collector(b, prog.out_channels, oh, ow)
    (run_fast if fast else run_exact)(prog, x, sink, device=torch.device("cpu"), dtype=torch.float32, **kw)
    return sink


def decode(model, z, **kw):
    return run(compile_decoder(model), z, **kw)


def encode(model, x, **kw):
    return run(compile_encoder(model), x, **kw)


LAYOUTS = {
    "sd-like": dict(quant=True, z=4, groups=8),
    "flux-like-16ch": dict(quant=False, z=16, groups=4),
    "attention-at-a-level": dict(quant=True, z=4, groups=8, attn_levels=(2,)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tile", [24, 40, 72])  # none divides the 88 px canvas
def test_exact_decode_equals_whole_image(layout, tile):
    model = randomize(Autoencoder(**LAYOUTS[layout]))
    z = torch.randn(2, model.decoder.conv_in.in_channels, 11, 13, generator=torch.Generator().manual_seed(1))
    whole = model.decode(z)
    sink = decode(model, z, tile_px=tile)
    assert sink.out.shape == whole.shape == (2, 3, 44, 52)
    assert (sink.writes == 1).all(), "every output pixel is written exactly once"
    assert rel_l2(sink.out, whole) < 1e-5


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tile", [20, 36, 60])
def test_exact_encode_equals_whole_image(layout, tile):
    model = randomize(Autoencoder(**LAYOUTS[layout]), seed=3)
    x = torch.rand(1, 3, 44, 52, generator=torch.Generator().manual_seed(2)) * 2 - 1
    whole = model.encode(x)
    sink = encode(model, x, tile_px=tile)
    assert sink.out.shape == whole.shape == (1, whole.shape[1], 11, 13)
    assert (sink.writes == 1).all()
    assert rel_l2(sink.out, whole) < 1e-5


def test_per_tile_statistics_would_be_wrong():
    """The comparison above can fail: normalising each tile by its own statistics (what a naive
    tiled VAE does) gives a visibly different result on the same model and input."""
    model = randomize(Autoencoder())
    z = torch.randn(1, 4, 11, 13, generator=torch.Generator().manual_seed(1)) * 2
    z[..., :6] += 1.5  # one half of the canvas brighter, so per-tile stats differ
    whole = model.decode(z)
    naive = torch.zeros_like(whole)
    for y0, y1 in ((0, 5), (5, 11)):
        naive[..., y0 * 4:y1 * 4, :] = model.decode(z[..., y0:y1, :])
    assert rel_l2(naive, whole) > 1e-2


def test_progress_ticks_match_the_plan():
    model = randomize(Autoencoder())
    z = torch.randn(1, 4, 11, 13)
    ticks = []
    prog = compile_decoder(model)
    run_exact(prog, z, lambda *a: None, tile_px=24, device=torch.device("cpu"), dtype=torch.float32,
              tick=lambda: ticks.append(1))
    assert len(ticks) == steps_per_sample(prog, 11, 13, 24, fast=False) > 10
    ticks.clear()
    run_fast(prog, z, lambda *a: None, tile_px=24, padding_px=8, device=torch.device("cpu"), dtype=torch.float32,
             tick=lambda: ticks.append(1))
    assert len(ticks) == steps_per_sample(prog, 11, 13, 24, fast=True)


def test_cancel_from_tick_stops_the_run():
    class Cancelled(Exception):
        pass

    model = randomize(Autoencoder())
    count = []

    def tick():
        count.append(1)
        if len(count) == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        run_exact(compile_decoder(model), torch.randn(1, 4, 11, 13), lambda *a: None, tile_px=24,
                  device=torch.device("cpu"), dtype=torch.float32, tick=tick)
    assert len(count) == 3


def test_fast_mode_is_close_and_covers_every_pixel_once():
    model = randomize(Autoencoder())
    z = torch.randn(1, 4, 22, 26, generator=torch.Generator().manual_seed(5))
    whole = model.decode(z)
    sink = decode(model, z, tile_px=40, padding_px=16, fast=True)
    assert (sink.writes == 1).all()
    err = rel_l2(sink.out, whole)
    assert 0 < err < 0.25, err  # an estimate: close, but not exact
    # One tile holding the whole canvas with no shrinking: fast mode's statistics are the true ones.
    single = decode(model, z, tile_px=200, padding_px=0, fast=True)
    assert rel_l2(single.out, whole) < 1e-5


def test_frozen_tiles_of_chosen_areas_are_the_whole_runs_tiles_there():
    """A benchmark decodes only some areas of a canvas: each area is cut into tiles of its own
    whose padding reaches past it, and a tile is what it is in a run over the whole canvas."""
    prog = compile_decoder(randomize(Autoencoder()))
    z = torch.randn(4, 20, 20, generator=torch.Generator().manual_seed(4))
    exact = recorded_stats(prog, z)
    runs = []
    for areas in (None, [Box(0, 10, 0, 10), Box(10, 20, 10, 20)]):
        sink = Collector(1, prog.out_channels, *prog.out_size(20, 20))
        tiled_vae.frozen_tiles(prog, z, 0, exact, sink, tile_px=40, pad_in=3, device=torch.device("cpu"),
                               dtype=torch.float32, areas=areas)
        runs.append(sink)
    whole, parts = runs
    assert (whole.writes == 1).all()
    written = parts.writes[0] == 1
    assert written.sum() == 2 * 40 * 40 and not parts.writes[0, :40, 40:].any()
    # 40 px tiles (10 latent px): the areas are tiles of the whole canvas's grid, so the same tiles
    assert torch.equal(parts.out[..., written], whole.out[..., written])


def test_local_attention_windows_only_the_attention(monkeypatch):
    """attention_margin_px limits each tile's attention to its window, and the rest of the canvas
    comes in as pooled context; the statistics stay exact. So a window covering the latent gives
    the exact result, and so does a small one while the context is at full resolution (a canvas
    no wider than WINDOW_CONTEXT_SIDE); with the context pooled, a small window changes it a little."""
    model = randomize(Autoencoder())
    z = torch.randn(1, 4, 22, 26, generator=torch.Generator().manual_seed(5))
    whole = model.decode(z)
    covering = decode(model, z, tile_px=40, attention_margin_px=1000)
    assert (covering.writes == 1).all() and rel_l2(covering.out, whole) < 1e-5
    full_context = decode(model, z, tile_px=40, attention_margin_px=16)
    assert (full_context.writes == 1).all() and rel_l2(full_context.out, whole) < 1e-5
    monkeypatch.setattr(attention_context, "WINDOW_CONTEXT_SIDE", 4)
    local = decode(model, z, tile_px=40, attention_margin_px=16)
    assert (local.writes == 1).all()
    assert 1e-4 < rel_l2(local.out, whole) < 0.25
    x = torch.randn(1, 3, 88, 72, generator=torch.Generator().manual_seed(6))
    assert rel_l2(encode(model, x, tile_px=24, attention_margin_px=1000).out, model.encode(x)) < 1e-5


def test_global_attention_share_grows_with_the_area():
    """Attention scores cost latent_pixels^2 x channels, the rest latent_pixels x channels^2:
    quadratic over linear work grows exactly 4x when both sides double."""
    prog = compile_decoder(randomize(Autoencoder()))
    shares = [global_attention_share(prog, side, side) for side in (8, 16, 32)]
    assert 0 < shares[0] < shares[1] < shares[2] < 1
    ratios = [share / (1 - share) for share in shares]
    assert ratios[1] == pytest.approx(4 * ratios[0]) and ratios[2] == pytest.approx(4 * ratios[1])


def test_fast_encode_covers_every_pixel_once():
    model = randomize(Autoencoder())
    x = torch.rand(1, 3, 88, 104) * 2 - 1
    sink = encode(model, x, tile_px=32, padding_px=8, fast=True)
    assert (sink.writes == 1).all()
    assert rel_l2(sink.out, model.encode(x)) < 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_channel_sums_a_few_channels_at_a_time_are_the_whole_maps(monkeypatch, dtype):
    """Squared a few channels at a time (a whole activation's squares were a save's peak), the sums
    are those of the whole map at once, bit for bit, and of a strided part of one too."""
    t = torch.randn(10, 12, 16, generator=torch.Generator().manual_seed(4)).to(dtype)
    part = t[:, 2:9, 3:13]
    whole = {id(x): (x.float().sum(dim=2).double().sum(dim=1), (x.float() ** 2).sum(dim=2).double().sum(dim=1))
             for x in (t, part)}
    monkeypatch.setattr(vae_runner, "CHANNEL_SUMS_BYTES", 3 * 4 * 12 * 16)  # 3 channels: 4 steps, the last of 1
    for x in (t, part):
        sums = vae_runner.channel_sums(x)
        assert all(s.dtype == torch.float64 and s.shape == (10,) for s in sums)
        assert all(torch.equal(a, b) for a, b in zip(sums, whole[id(x)]))


def test_fp16_overflow_is_detected():
    model = randomize(Autoencoder()).half()
    with torch.no_grad():
        model.decoder.conv_in.weight.mul_(4000)  # activations beyond fp16's 65504
    with pytest.raises(NonFiniteActivation):
        run_exact(compile_decoder(model), torch.randn(1, 4, 11, 13).half() * 10, lambda *a: None, tile_px=24,
                  device=torch.device("cpu"), dtype=torch.float16)


def test_unsupported_structures_are_named():
    model = Autoencoder()
    del model.decoder.mid
    with pytest.raises(UnsupportedVAE, match="mid"):
        compile_decoder(model)
    model = Autoencoder()
    model.encoder.down[0].downsample.with_conv = False
    with pytest.raises(UnsupportedVAE, match="average pooling"):
        compile_encoder(model)
    with pytest.raises(UnsupportedVAE, match="no decoder"):
        compile_decoder(torch.nn.Linear(2, 2))


def test_video_networks_are_told_by_their_convolutions():
    """ComfyUI 0.3.76+ gives every 2-D Encoder a `time_compress` (8 for SD's): that is no video
    network, and it compiles; one whose first convolution is 3-D is refused by name."""
    model = Autoencoder()
    model.encoder.time_compress = 8
    model.decoder.time_compress = 8
    assert compile_encoder(model).output_scale == compile_encoder(Autoencoder()).output_scale
    compile_decoder(model)
    model.encoder.conv_in = torch.nn.Conv3d(3, model.encoder.conv_in.out_channels, 3, padding=1)
    with pytest.raises(UnsupportedVAE, match="video .*Conv3d"):
        compile_encoder(model)


def test_tile_size_helpers_follow_the_architecture():
    model = Autoencoder()  # 2 up-samplings: 4 px per latent px
    prog = compile_decoder(model)
    assert min_tile_px(prog) == 16
    small = auto_tile_px(prog, 64 << 20, torch.float32)
    large = auto_tile_px(prog, 16 << 30, torch.float32)
    assert min_tile_px(prog) <= small < large <= 2048
    assert tile_working_bytes(prog, large, torch.float32) <= 0.4 * (16 << 30)
    assert tile_working_bytes(prog, 64, torch.float16) * 2 == tile_working_bytes(prog, 64, torch.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_parked_bytes_is_the_peak_a_run_holds(monkeypatch, layout, which):
    """parked_bytes decides whether exact mode may park on the device: it must be what a run
    really keeps alive at once, measured by following every parked activation's lifetime."""
    model = randomize(Autoencoder(**LAYOUTS[layout]))
    prog = compile_encoder(model) if which == "encoder" else compile_decoder(model)
    x = (torch.rand(1, 3, 44, 52) if which == "encoder"
         else torch.randn(1, model.decoder.conv_in.in_channels, 11, 13))
    live, peak = [0], [0]
    real_empty, real_of = Parked.empty, Parked.of

    def track(parked):
        size = parked.data.numel() * parked.data.element_size()
        live[0] += size
        peak[0] = max(peak[0], live[0])
        weakref.finalize(parked.data, lambda: live.__setitem__(0, live[0] - size))
        return parked

    monkeypatch.setattr(Parked, "empty", staticmethod(lambda *a, **k: track(real_empty(*a, **k))))
    # A copy of the input, as parking it on another device makes: the caller's tensor outlives the run.
    monkeypatch.setattr(Parked, "of", staticmethod(lambda data: track(real_of(data.clone()))))
    run(prog, x, tile_px=24)
    assert peak[0] == parked_bytes(prog, *x.shape[-2:], torch.float32)
    assert parked_bytes(prog, 88, 104, torch.float16) * 8 == parked_bytes(prog, 176, 208, torch.float32)



def sampled(model, x, which="decoder", **kw):
    prog = compile_decoder(model) if which == "decoder" else compile_encoder(model)
    b, _, h, w = x.shape
    sink = Collector(b, prog.out_channels, *prog.out_size(h, w))
    run_sampled(prog, x, sink, device=torch.device("cpu"), dtype=torch.float32, **kw)
    return sink


def recorded_stats(prog, x):
    """The statistics exact mode computes for one sample x."""
    stats = {}
    Runner(prog, device=torch.device("cpu"), dtype=torch.float32, park_device=torch.device("cpu"),
           tile_px=None, record=stats).run(x, lambda *a: None)
    return stats


def stats_error(estimate, exact):
    """The largest relative error of any GroupNorm's standard deviation or mean (against its std)."""
    worst = 0.0
    for i, (mean, var) in exact.items():
        std = var.sqrt()
        worst = max(worst, ((estimate[i][1].sqrt() - std).abs() / std).max().item(),
                    ((estimate[i][0] - mean).abs() / std).max().item())
    return worst


def estimate(prog, x, boxes, pad, guide=None):
    """estimate_stats over the sample boxes (with their weights) of x, each crop padded by pad."""
    h, w = x.shape[-2:]
    crops = [box.grown(pad, h, w) for box, _ in boxes]
    return estimate_stats(prog, [x[:, c.y0:c.y1, c.x0:c.x1] for c in crops],
                          [box.relative_to(c) for (box, _), c in zip(boxes, crops)], guide=guide,
                          weights=[weight for _, weight in boxes], device=torch.device("cpu"), dtype=torch.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sampled_statistics_from_crops_that_see_the_whole_canvas_are_exact(layout):
    """Crops partitioning the canvas, each with padding reaching the whole canvas: every crop runs
    the whole-image computation and the pooled statistics are exact mode's; so is the picture."""
    model = randomize(Autoencoder(**LAYOUTS[layout]))
    z = torch.randn(1, model.decoder.conv_in.in_channels, 12, 14, generator=torch.Generator().manual_seed(1))
    prog = compile_decoder(model)
    sample = Sample(per_side=2, crop_px=24, border_px=4)  # 6 latent px: two cover 12 - 2 and 14 - 2
    boxes = sample_boxes(prog, 12, 14, sample)
    assert len(boxes) == 16 and sum(b.height * b.width for b, _ in boxes) == 12 * 14  # a partition
    assert all(weight == 1 for _, weight in boxes)
    stats, exact = estimate(prog, z[0], boxes, 14), recorded_stats(prog, z[0])
    assert stats.keys() == exact.keys() and stats_error(stats, exact) < 1e-5
    sink = sampled(model, z, tile_px=24, padding_px=56, sample=sample)  # 14 latent px: across the canvas
    assert (sink.writes == 1).all() and rel_l2(sink.out, model.decode(z)) < 1e-5


def test_sampled_mode_is_close_and_covers_every_pixel_once():
    model = randomize(Autoencoder())
    z = torch.randn(2, 4, 22, 26, generator=torch.Generator().manual_seed(5))
    whole = model.decode(z)
    sink = sampled(model, z, tile_px=40, padding_px=24, sample=Sample(per_side=2, crop_px=24, guide_px=48))
    assert (sink.writes == 1).all()
    assert 0 < rel_l2(sink.out, whole) < 0.25
    x = torch.rand(1, 3, 88, 104, generator=torch.Generator().manual_seed(2)) * 2 - 1
    sink = sampled(model, x, "encoder", tile_px=32, padding_px=16, sample=Sample(per_side=3, crop_px=16, guide_px=48))
    assert (sink.writes == 1).all() and rel_l2(sink.out, model.encode(x)) < 0.5


def test_sampled_statistics_come_from_full_resolution():
    """A picture with a one-pixel texture: a shrunken copy (fast mode's estimate) loses the texture
    and with it the variance every GroupNorm sees; crops at full resolution keep it."""
    model = randomize(Autoencoder(), seed=3)
    prog = compile_encoder(model)
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    texture = ((yy + xx) % 2).float() * 2 - 1  # a one-pixel checkerboard
    x = torch.stack([texture, 0.5 * texture, torch.linspace(-1, 1, 96).expand(96, 96)])
    exact = recorded_stats(prog, x)
    from_copy = recorded_stats(prog, shrunk(x, prog, 48))
    boxes = sample_boxes(prog, 96, 96, Sample(per_side=2, crop_px=16, border_px=4))
    assert sum(b.height * b.width for b, _ in boxes) < 96 * 96 / 4  # under a quarter of the canvas
    ours = estimate(prog, x, boxes, 8)
    assert stats_error(ours, exact) < 0.3 < 1.0 < stats_error(from_copy, exact)  # measured: 0.23 and 2.8


def test_a_guide_at_full_resolution_corrects_the_sample_to_exact():
    """The guide's algebra: a copy of the canvas at full resolution (no shrink) run beside a sample
    that misses most of it gives exact mode's statistics, the copy's whole-canvas ones corrected by
    crops that, seeing the whole canvas through their padding, equal the copy where they lie; the
    crops alone are far off. With the copy shrunk, the estimate is between."""
    model = randomize(Autoencoder())
    prog = compile_decoder(model)
    z = torch.randn(4, 24, 28, generator=torch.Generator().manual_seed(6))
    z[:, :, :9] += 2.0  # a layout: the left third brighter, which a central crop misses
    sample = Sample(per_side=1, crop_px=32, border_px=8, guide_px=48)  # 96 x 112 px, halved
    boxes = sample_boxes(prog, 24, 28, sample)
    inner = [b for b, _ in boxes]
    exact = recorded_stats(prog, z)
    plain = stats_error(estimate(prog, z, boxes, 28), exact)
    full = stats_error(estimate(prog, z, boxes, 28, Guide(z, inner)), exact)
    assert full < 1e-5 < 0.05 < plain
    guide = vae_sampled_stats.guide_for(prog, z, inner, sample)
    assert guide.input.shape[-2:] == (11, 13) and len(guide.boxes) == len(inner)
    for box, mapped in zip(inner, guide.boxes):  # the same places, to the nearest pixel of the copy
        assert 0 <= mapped.y0 < mapped.y1 <= 11 and 0 <= mapped.x0 < mapped.x1 <= 13
        assert abs(mapped.y0 - box.y0 * 11 / 24) <= 1 and abs(mapped.x1 - box.x1 * 13 / 28) <= 1
    shrunk = stats_error(estimate(prog, z, boxes, 28, guide), exact)
    print(f"stats error: crops {plain:.3f}, guided by a shrunk copy {shrunk:.3f}, by a full copy {full:.1e}")
    assert shrunk < plain


def test_sampled_stats_take_the_whole_canvas_where_the_guide_would_be_as_large():
    model = randomize(Autoencoder())
    prog = compile_decoder(model)
    z = torch.randn(4, 12, 14, generator=torch.Generator().manual_seed(8))
    sample = Sample(per_side=1, crop_px=16, border_px=8, guide_px=56)  # 48 x 56 px: no larger
    inner, crops, weights = vae_sampled_stats.sample_crops(prog, 12, 14, sample, 2, guided=True)
    assert crops == inner == [Box(0, 12, 0, 14)] and weights == [1.0]
    assert len(vae_sampled_stats.sample_crops(prog, 12, 14, sample, 0)[1]) > 1  # without a guide: crops
    stats, _ = vae_sampled_stats.sampled_stats(prog, 12, 14, sample, 2, lambda c: z[:, c.y0:c.y1, c.x0:c.x1], whole=z,
                                               device=torch.device("cpu"), dtype=torch.float32)
    assert stats_error(stats, recorded_stats(prog, z)) < 1e-5


@pytest.mark.parametrize("which", ["encoder", "decoder"])
def test_sampled_memory_is_bounded_by_the_sample_and_the_tile(monkeypatch, which):
    """The activations alive at once, followed through every parked activation's lifetime, stay
    within the sample's (sample_parked_bytes) or one padded tile's, far below what exact mode parks
    for the canvas: memory does not grow with the canvas."""
    model = randomize(Autoencoder())
    prog = compile_encoder(model) if which == "encoder" else compile_decoder(model)
    x = torch.rand(1, 3, 192, 192) if which == "encoder" else torch.randn(1, 4, 48, 48)
    h, w = x.shape[-2:]
    live, peak = [0], [0]
    real_empty = Parked.empty

    def track(*a, **k):
        parked = real_empty(*a, **k)
        size = parked.data.numel() * parked.data.element_size()
        live[0] += size
        peak[0] = max(peak[0], live[0])
        weakref.finalize(parked.data, lambda: live.__setitem__(0, live[0] - size))
        return parked

    monkeypatch.setattr(Parked, "empty", staticmethod(track))
    # the decoder's context, from the whole latent, in crops smaller than the canvas as at full size
    monkeypatch.setattr(vae_sampled_stats, "FULL_CONTEXT_TILE_PX", 64)
    sample, tile, pad = Sample(per_side=2, crop_px=24, border_px=8, guide_px=64), 64, 8
    sampled(model, x, which, tile_px=tile, padding_px=pad, sample=sample)
    tile_in = (tile + 2 * pad) * h // 192
    bound = max(vae_sampled_stats.sample_parked_bytes(prog, h, w, sample, pad, torch.float32),
                parked_bytes(prog, tile_in, tile_in, torch.float32))
    assert 0 < peak[0] <= bound < parked_bytes(prog, h, w, torch.float32) / 2


@pytest.mark.parametrize("context_side", [256, 4])
def test_sampled_mode_is_deterministic_and_ticks_as_planned(monkeypatch, context_side):
    """Also where the decoder's context is pooled and then refined, its first passes run twice."""
    monkeypatch.setattr(attention_context, "CONTEXT_SIDE", context_side)
    model = randomize(Autoencoder())
    prog = compile_decoder(model)
    assert vae_sampled_stats._refines(prog, vae_sampled_stats.full_context_passes(prog)[0], 22, 26) == (context_side < 22)
    z = torch.randn(1, 4, 22, 26, generator=torch.Generator().manual_seed(7))
    sample = Sample(per_side=3, crop_px=16, guide_px=48)
    ticks = []
    first = sampled(model, z, tile_px=40, padding_px=8, sample=sample, tick=lambda: ticks.append(1))
    assert len(ticks) == steps_per_sample(prog, 22, 26, 40, fast=False, sample=sample, padding_px=8) > 9
    assert torch.equal(first.out, sampled(model, z, tile_px=40, padding_px=8, sample=sample).out)
    ticks.clear()  # one crop inside the canvas, no border bands: a single crop that still takes a guide
    lone = Sample(per_side=1, crop_px=16, border_px=0, guide_px=48)
    sampled(model, z, tile_px=40, padding_px=8, sample=lone, tick=lambda: ticks.append(1))
    assert len(ticks) == steps_per_sample(prog, 22, 26, 40, fast=False, sample=lone, padding_px=8)



def test_a_refined_context_holds_as_many_tokens_whatever_the_canvas(monkeypatch):
    """Sampled mode refines a decoder's pooled context by one share wherever it is pooled, so what
    the context holds, and context_bytes' bound on it (which sample_park_device counts), is the same
    for a canvas of four times the area: the save's peak does not grow with the canvas through it (a
    share growing with the cells' area grew it, bench/results/gigapixel_memory.md)."""
    monkeypatch.setattr(attention_context, "CONTEXT_SIDE", 12)
    model = randomize(Autoencoder())
    prog = compile_decoder(model)
    monkeypatch.setattr(vae_sampled_stats, "FULL_CONTEXT_TILE_PX", 24 * prog.pixel_scale)  # 24 latent px
    sample = Sample(per_side=2, crop_px=4 * prog.pixel_scale, border_px=0, guide_px=16 * prog.pixel_scale)
    held, bounds = [], []
    for side in (24, 48):  # cells of 2 and 4 latent px (as SD's at 4096 and 8192 px), within the tiles
        z = torch.randn(4, side, side, generator=torch.Generator().manual_seed(side))
        _, context = vae_sampled_stats.sampled_stats(prog, side, side, sample, 1,
                                                     lambda c: z[:, c.y0:c.y1, c.x0:c.x1], whole=z,
                                                     device=torch.device("cpu"), dtype=torch.float32)
        refined = vae_sampled_stats.refined_passes(prog, side, side)
        assert refined and all(context.tokens[i].keys.shape[0] > 144 for i in refined)
        held.append(sum(t.keys.numel() + t.values.numel() for t in context.tokens.values()) * 4)
        bounds.append(vae_sampled_stats.context_bytes(prog, side, side, torch.float32))
    print(f"held {held}, bounds {bounds}")
    assert held[0] == held[1] and bounds[0] == bounds[1] and 2 * held[0] <= bounds[0]


def test_the_estimator_runs_its_passes_in_tiles_with_the_same_statistics(monkeypatch):
    """Sample.pass_tile_px: the crops and the guide run pass by pass in tiles as exact mode does, so
    no convolution reads more than a tile and its halo at once (whole passes of a 1024 px guide take
    gigabytes with SD's VAE); the statistics are those of whole passes and the ticks as planned."""
    model = randomize(Autoencoder())
    prog = compile_decoder(model)
    z = torch.randn(4, 32, 36, generator=torch.Generator().manual_seed(9))  # 256 x 288 px
    whole = Sample(per_side=2, crop_px=32, border_px=8, guide_px=128)
    tiled = dataclasses.replace(whole, pass_tile_px=32)
    widest = []
    real_call = vae_runner.DeviceConv.__call__

    def recording(conv, x):
        if conv.weight.shape[-1] == 3:  # the passes' own convolutions, not attention's 1x1 ones
            widest.append(x.shape[-2] * x.shape[-1])
        return real_call(conv, x)

    monkeypatch.setattr(vae_runner.DeviceConv, "__call__", recording)
    results = {}
    for sample in (whole, tiled):
        widest.clear()
        ticks = []
        stats, _ = vae_sampled_stats.sampled_stats(prog, 32, 36, sample, 1, lambda c: z[:, c.y0:c.y1, c.x0:c.x1],
                                                   whole=z, device=torch.device("cpu"), dtype=torch.float32,
                                                   tick=lambda: ticks.append(1))
        assert len(ticks) == vae_sampled_stats.sampled_ticks(prog, 32, 36, sample, 1, guided=True)
        results[sample.pass_tile_px] = stats, max(widest)
    bound = max(pass_tile(prog, i, 32) + 2 for i in range(len(prog.passes))) ** 2
    print(f"widest convolution input: {results[None][1]} px whole, {results[32][1]} px in tiles (bound {bound})")
    assert results[32][1] <= bound < results[None][1]
    assert stats_error(results[32][0], results[None][0]) < 1e-5

def test_a_context_token_counts_as_the_area_it_stands_for():
    """A context token for a cell of 2x2 px (log 4 added to its score) weighs in the softmax as the
    same key and value four times over; a crop over the token's place leaves it out (it has its own
    keys there)."""
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(1, 5, 8, generator=g)
    key_map, value_map = torch.randn(8, 2, 4, generator=g), torch.randn(8, 2, 4, generator=g)
    own_keys, own_values = (t.flatten(1).t().unsqueeze(0) for t in (key_map, value_map))
    key, value = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    context = attention_context.AttentionContext((8, 8), {3: Fraction(1)})
    context.tokens[3] = attention_context.ContextTokens(key, value, torch.tensor([[5.0], [5.0]]), (2.0, 2.0))
    keys, values, bias = context.of_crop(Box(0, 2, 0, 4)).extend(3, key_map, value_map)
    assert keys.shape == (1, 9, 8) and bias.shape == (1, 1, 9)
    ours = F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias)
    four_times = F.scaled_dot_product_attention(queries, torch.cat([own_keys, key.expand(4, 8).unsqueeze(0)], 1),
                                                torch.cat([own_values, value.expand(4, 8).unsqueeze(0)], 1))
    assert torch.allclose(ours, four_times, atol=1e-6)
    assert not torch.allclose(ours, F.scaled_dot_product_attention(queries, own_keys, own_values), atol=1e-3)
    keys, values, bias = context.of_crop(Box(4, 6, 4, 8)).extend(3, key_map, value_map)
    assert torch.equal(keys, own_keys) and torch.equal(values, own_values) and bias is None
    assert context.of_crop(Box(0, 2, 0, 4)).extend(2, key_map, value_map)[2] is None  # no attention at pass 2


def test_a_crops_keys_near_its_cut_edges_give_way_to_the_context(monkeypatch):
    """Within the reach of a crop's cut edges its own keys are not the canvas's (the convolutions
    before the attention saw zeros there): the context's tokens stand in for that band; along the
    canvas's own edges the crop keeps its keys. A band edge inside a pooled cell moves inward to the
    cell's edge, so each part of the canvas counts once."""
    g = torch.Generator().manual_seed(1)
    canvas_keys, canvas_values = torch.randn(4, 12, 12, generator=g), torch.randn(4, 12, 12, generator=g)
    context = attention_context.AttentionContext((12, 12), {3: Fraction(1)}, reach={3: 1})
    context.tokens[3] = attention_context.ContextTokens.pooled(canvas_keys, canvas_values, 12, 12)  # 1 px cells
    crop = Box(0, 8, 3, 12)  # cut at the bottom (row 8) and on the left (column 3)
    crop_keys = torch.randn(4, 8, 9, generator=g)  # the crop's own, differing from the canvas's everywhere
    keys, _, bias = context.of_crop(crop).extend(3, crop_keys, torch.randn(4, 8, 9, generator=g))
    own = crop_keys[:, :7, 1:].flatten(1).t()  # rows 0-6, columns 4-11: the band of one px left out
    assert torch.equal(keys[0, :own.shape[0]], own) and keys.shape[1] == 144
    from_context = keys[0, own.shape[0]:]
    assert torch.equal(bias[0, 0, own.shape[0]:], torch.zeros(144 - own.shape[0]))  # cells of one px: log 1
    band = torch.cat([canvas_keys[:, 7, 3:], canvas_keys[:, :8, 3]], 1).t()  # the band, from the canvas
    assert all((from_context == k).all(1).any() for k in band)
    monkeypatch.setattr(attention_context, "CONTEXT_SIDE", 6)
    coarse = attention_context.ContextTokens.pooled(canvas_keys, canvas_values, 12, 12)  # 2 px cells
    assert coarse.cells_within(Box(1, 8, 3, 12)) == Box(2, 8, 4, 12)
    assert coarse.cells_within(Box(3, 4, 0, 12)) == Box(4, 4, 0, 12)  # no whole cell inside: empty


def test_a_tile_that_attends_to_the_canvas_through_its_context_comes_close_to_exact(monkeypatch):
    """A padded tile run with exact statistics differs from the whole-image decode partly because
    its global attention sees only the tile; with the whole canvas as context (here at full
    resolution, so the tokens outside the tile are exactly the canvas's) that part goes. The
    crop's own keys near its cut edges are wrong too and are left out (the context stands in):
    measured, 0.04 alone and 1e-4 with the context (0.02 while the crop kept those keys)."""
    model = randomize(Autoencoder(), seed=4)
    prog = compile_decoder(model)
    z = torch.randn(4, 32, 36, generator=torch.Generator().manual_seed(9))
    whole = model.decode(z.unsqueeze(0))[0]
    exact = recorded_stats(prog, z)
    monkeypatch.setattr(attention_context, "CONTEXT_SIDE", 36)  # no pooling: one token per pixel of the canvas
    context = vae_sampled_stats.attention_context(prog, 32, 36)
    canvas = Box(0, 32, 0, 36)
    estimate_stats(prog, [z], [canvas], device=torch.device("cpu"), dtype=torch.float32, context=context,
                   crop_boxes=[canvas])
    assert set(context.tokens) == {i for i, p in enumerate(prog.passes) if isinstance(p, AttentionPass)}
    held = sum(t.keys.numel() + t.values.numel() for t in context.tokens.values()) * 4
    assert vae_sampled_stats.context_bytes(prog, 32, 36, torch.float32) == 2 * held  # and the copy a crop joins
    # 9 latent px of padding: the convolutions around the attention see nearly all they need
    tile, crop = Box(12, 20, 14, 22), Box(3, 29, 5, 31)
    errors = []
    for seen in (None, context):
        y = tiled_vae.run_frozen(prog, z[:, crop.y0:crop.y1, crop.x0:crop.x1], exact, device=torch.device("cpu"),
                                 dtype=torch.float32, context=seen, at=crop)
        local, there = tile.relative_to(crop).scaled(4), tile.scaled(4)
        errors.append(rel_l2(y[:, local.y0:local.y1, local.x0:local.x1], whole[:, there.y0:there.y1, there.x0:there.x1]))
    print(f"tile error against the whole decode: alone {errors[0]:.4f}, with the canvas as context {errors[1]:.4f}")
    assert errors[1] < 1e-3 < errors[0]


def test_with_the_canvas_as_context_a_crops_attention_is_the_whole_images():
    """The attention pass alone: a crop of the canvas's own input to it, attending to itself and to
    the canvas outside it at full resolution, gives the whole image's attention output there."""
    model = randomize(Autoencoder(), seed=5)
    prog = compile_decoder(model)
    z = torch.randn(4, 20, 22, generator=torch.Generator().manual_seed(10))
    exact, cpu = recorded_stats(prog, z), torch.device("cpu")
    runner = Runner(prog, device=cpu, dtype=torch.float32, park_device=cpu, tile_px=None, frozen=exact)
    buffers = {prog.input: Parked.of(z)}
    index = next(i for i, p in enumerate(prog.passes) if isinstance(p, AttentionPass))
    for i, p in enumerate(prog.passes[:index]):
        buffers[p.dst] = runner.run_pass(i, p, buffers)
    p = prog.passes[index]
    whole_in = buffers[p.src].data
    whole_out = runner.run_pass(index, p, buffers).data
    context = vae_sampled_stats.attention_context(prog, 20, 22)
    assert max(whole_in.shape[-2:]) <= attention_context.CONTEXT_SIDE  # one token per pixel: nothing pooled
    context.add(index, *runner.key_value_maps(index, p, whole_in, exact[index]))
    crop = Box(4, 13, 6, 17).scaled(context.scales[index])  # on the attention's grid
    alone = {p.src: Parked.of(whole_in[:, crop.y0:crop.y1, crop.x0:crop.x1])}
    wanted = whole_out[:, crop.y0:crop.y1, crop.x0:crop.x1]
    seeing = runner.run_pass(index, p, alone, context=context.of_crop(Box(4, 13, 6, 17))).data
    blind = runner.run_pass(index, p, alone).data
    assert rel_l2(seeing, wanted) < 1e-5 < 1e-2 < rel_l2(blind, wanted)


def test_a_cell_pool_fed_tile_by_tile_is_the_whole_maps_average_pool():
    g = torch.Generator().manual_seed(11)
    whole = torch.randn(3, 24, 20, generator=g)
    for side, cells in ((4, (4, 4)), (256, (24, 20))):  # 6x5 px cells; one cell per pixel
        pool = attention_context.CellPool(3, 24, 20, side=side)
        for box in (Box(0, 24, 0, 7), Box(0, 9, 7, 20), Box(9, 24, 7, 20)):  # not on the cells' edges
            pool.add(whole[:, box.y0:box.y1, box.x0:box.x1], box)
        assert pool.mean().shape == (3, *cells)
        assert torch.allclose(pool.mean(), F.adaptive_avg_pool2d(whole.unsqueeze(0), cells)[0], atol=1e-6)
    pool = attention_context.CellPool(3, 24, 20, side=4)
    pool.add(whole[:, :12], Box(0, 12, 0, 20))
    with pytest.raises(ValueError, match="never added"):
        pool.mean()


def _refined(keys, values, side, tiles, share=None):
    """The context of full-resolution key and value maps (C, h, w), pooled to `side` a side (over
    CellPool's cells, as sampled mode pools a canvas) and refined tile by tile."""
    height, width = keys.shape[1:]
    pools = [attention_context.CellPool(keys.shape[0], height, width, side=side) for _ in range(2)]
    refinement = attention_context.Refinement(height, width, side=side, share=share)
    for box in tiles:
        parts = [t[:, box.y0:box.y1, box.x0:box.x1] for t in (keys, values)]
        for pool, part in zip(pools, parts):
            pool.add(part, box)
        refinement.add(*parts, box)
    pooled = attention_context.ContextTokens.pooled(pools[0].mean(), pools[1].mean(), height, width, side=side)
    return pooled, refinement.apply(pooled)


def _context_attention(queries, tokens):
    """queries (n, C) attending to a context's tokens alone, each weighed by its area."""
    keys, values, bias = tokens.beside(Box(0, 0, 0, 0), queries[:0].unsqueeze(0), queries[:0].unsqueeze(0))
    scores = queries @ keys[0].t() / math.sqrt(queries.shape[1]) + bias[0]
    return torch.softmax(scores, -1) @ values[0]


def test_a_refined_context_weighs_as_the_pooled_one_did():
    """Cells of 2 and 3 px, tiles across them: refining moves no weight between cells. The tokens'
    weights (areas) add up to the pooled context's, and so do their keys and values weighed by them;
    only cells wholly inside a tile are split."""
    g = torch.Generator().manual_seed(5)
    keys, values = torch.randn(2, 6, 22, 18, generator=g)
    tiles = [Box(0, 22, 0, 7), Box(0, 10, 7, 18), Box(10, 22, 7, 18)]
    pooled, refined = _refined(keys, values, 8, tiles, share=0.5)
    assert pooled.keys.shape[0] == 64 < refined.keys.shape[0] <= 64 * 1.5
    weights = [t.log_areas.exp() for t in (pooled, refined)]
    assert torch.isclose(weights[1].sum(), weights[0].sum())
    for name in ("keys", "values"):
        sums = [(w[:, None] * getattr(t, name)).sum(0) for w, t in zip(weights, (pooled, refined))]
        assert torch.allclose(sums[1], sums[0], rtol=1e-4, atol=1e-3)
    edges = [attention_context._cell_starts(22, 8), attention_context._cell_starts(18, 8)]
    tokens_of = [int((refined.centres == pooled.centres[:, i:i + 1]).all(0).sum()) for i in range(64)]
    split = [i for i, n in enumerate(tokens_of) if n > 1]
    assert split and all(n >= 1 for n in tokens_of)
    for i in split:
        cell = Box(edges[0][i // 8], edges[0][i // 8 + 1], edges[1][i % 8], edges[1][i % 8 + 1])
        assert any(t.y0 <= cell.y0 and cell.y1 <= t.y1 and t.x0 <= cell.x0 and cell.x1 <= t.x1 for t in tiles)


def test_a_refinement_refuses_tiles_that_split_a_cell_twice():
    """Its new tokens are bounded by the cells' count (their memory is made once, for as many as
    there can be), which tiles overlapping on a cell would break: refused, not written past."""
    keys, values = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    refinement = attention_context.Refinement(16, 16, side=4, share=1.0)
    refinement.add(keys, values, Box(0, 16, 0, 16))
    assert 0 < refinement.count <= refinement.capacity
    with pytest.raises(ValueError, match="must not overlap"):
        refinement.add(keys[:, :8, :8], values[:, :8, :8], Box(0, 8, 0, 8))


def test_refining_a_context_brings_its_attention_to_the_unpooled_one():
    """Pooled 2x2 (as a 4096 px canvas's latent is), the context's attention is far from the
    unpooled one where the keys of a few cells differ within them (an edge); refined with 25% more
    tokens, most of that error is gone; split all the way down, the context is the unpooled one."""
    g = torch.Generator().manual_seed(8)
    rough = torch.zeros(32, 32)  # an edge: keys that differ from their neighbours, across a cell
    rough[8:12, 20:24] = 1
    keys, values = (F.interpolate(torch.randn(1, 16, 4, 4, generator=g), size=(32, 32), mode="bilinear")[0]
                    + 2 * rough * torch.randn(16, 32, 32, generator=g) for _ in range(2))
    queries = 2 * torch.randn(50, 16, generator=g)
    unpooled = _context_attention(queries, attention_context.ContextTokens.pooled(keys, values, 32, 32, side=32))
    tiles = [Box(y, y + 16, x, x + 16) for y in (0, 16) for x in (0, 16)]
    pooled, refined = _refined(keys, values, 16, tiles, share=0.25)
    assert 256 < refined.keys.shape[0] <= 256 * 1.25
    errors = [rel_l2(_context_attention(queries, t), unpooled) for t in (pooled, refined)]
    print(f"pooled 2x2 {errors[0]:.3f}, refined {errors[1]:.3f}")
    assert errors[1] < errors[0] / 3
    _, whole = _refined(keys, values, 16, tiles, share=100.0)
    assert 900 < whole.keys.shape[0] <= 32 * 32  # cells whose keys are all alike stay whole
    assert rel_l2(_context_attention(queries, whole), unpooled) < 1e-5


@pytest.mark.parametrize("side", [8, 256])
def test_a_decoders_first_passes_run_on_the_whole_input_at_full_resolution(monkeypatch, side):
    """Guided by a shrunk copy, sampled mode still runs the passes up to an attention on the whole
    input where they are cheap (a decoder's), crop by crop: their statistics are exact mode's and the
    attention's context equals the untiled computation's; the copy's keys, used before, are far from
    it. An encoder's attention, after nearly all of its passes, keeps the copy's. Unpooled, a later
    attention's (its crops attending to the first's) is the untiled one's too."""
    model = randomize(Autoencoder(attn_levels=(2,)), seed=3)
    prog = compile_decoder(model)
    attention = [i for i, p in enumerate(prog.passes) if isinstance(p, AttentionPass)]
    # the mid block's and the first of level 2's; the second's prefix is already over a tenth
    assert attention == [4, 9, 12] and vae_sampled_stats.full_context_passes(prog) == [4, 9]
    assert vae_sampled_stats.full_context_passes(compile_encoder(model)) == []
    monkeypatch.setattr(attention_context, "CONTEXT_SIDE", side)  # 8: 4x4 latent px a token
    z = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(12))
    z[:, :, :10] += 1.5
    sample = Sample(per_side=2, crop_px=24, border_px=8, guide_px=64, pass_tile_px=40)
    monkeypatch.setattr(vae_sampled_stats, "FULL_CONTEXT_TILE_PX", 32)  # context crops of 8 latent px
    cpu = torch.device("cpu")
    contexts, estimates = {}, {}
    for whole in (z, None):
        contexts[whole is None] = context = vae_sampled_stats.attention_context(prog, 32, 32)
        inner, crops, weights = vae_sampled_stats.sample_crops(prog, 32, 32, sample, 2, guided=True)
        estimates[whole is None] = estimate_stats(prog, [z[:, c.y0:c.y1, c.x0:c.x1] for c in crops],
                               [b.relative_to(c) for b, c in zip(inner, crops)], weights=weights,
                               guide=vae_sampled_stats.guide_for(prog, z, inner, sample), device=cpu,
                               dtype=torch.float32, context=context, crop_boxes=crops, pass_tile_px=40, whole=whole)
    stats = estimates[False]  # after the first attention they depend on its context
    exact = recorded_stats(prog, z)
    from_whole = vae_sampled_stats.whole_input_passes(prog)
    assert from_whole == [i for i, p in enumerate(prog.passes[:10]) if p.norm is not None]
    exact_there = [i for i in from_whole if side >= 32 or i <= 4]  # pooled, the first context is coarse
    assert stats_error({i: stats[i] for i in exact_there}, {i: exact[i] for i in exact_there}) < 1e-5
    later = [i for i in exact if i > 9]
    assert stats_error(stats, {i: exact[i] for i in later}) > 1e-3  # estimated from the sample
    runner = Runner(prog, device=cpu, dtype=torch.float32, park_device=cpu, tile_px=None, frozen=stats)
    buffers, inputs = {prog.input: Parked.of(z)}, {}
    for i, p in enumerate(prog.passes[:10]):
        inputs[i] = buffers[p.src].data
        buffers[p.dst] = runner.run_pass(i, p, buffers)
    for index in [4] if side < 32 else [4, 9]:
        p = prog.passes[index]
        maps = runner.key_value_maps(index, p, inputs[index], stats[index])
        untiled = pooled = attention_context.ContextTokens.pooled(*maps, 32, 32)
        if side < 32:  # pooled, the cells whose keys differ most are split, within the crops' tiles
            keys, values = runner.key_value_maps(index, p, inputs[index], stats[index], pool=False)
            refinement = attention_context.Refinement(32, 32)
            for box, _ in vae_sampled_stats._whole_input_crops(prog, index, 32, 32):
                refinement.add(keys[:, box.y0:box.y1, box.x0:box.x1], values[:, box.y0:box.y1, box.x0:box.x1], box)
            untiled = refinement.apply(pooled)
        ours, from_copy = contexts[False].tokens[index], contexts[True].tokens[index]
        assert ours.keys.shape == untiled.keys.shape
        assert min(side, 32) ** 2 <= ours.keys.shape[0] <= min(side, 32) ** 2 * (1 + attention_context.REFINE_SHARE)
        assert (ours.keys.shape[0] > pooled.keys.shape[0]) == (side < 32)
        assert torch.equal(ours.centres, untiled.centres) and torch.allclose(ours.log_areas, untiled.log_areas)
        copy_side = math.isqrt(from_copy.keys.shape[0])  # the copy is 16 px a side: no finer than that
        untiled_there = attention_context.ContextTokens.pooled(*maps, 32, 32, side=copy_side)
        errors = [rel_l2(ours.keys, untiled.keys) + rel_l2(ours.values, untiled.values),
                  rel_l2(from_copy.keys, untiled_there.keys) + rel_l2(from_copy.values, untiled_there.values)]
        print(f"pass {index}'s context against the untiled one: full resolution {errors[0]:.1e}, "
              f"from the copy {errors[1]:.3f}")
        assert errors[0] < 1e-5 < 0.05 < errors[1]
