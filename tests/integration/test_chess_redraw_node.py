"""ChessTileRedraw in the real ComfyUI host with the tiny UNet, CLIP and VAE."""

import pytest
import torch

from expanse_harness import tiny_models
from expanse.core import chess_redraw as cr
from expanse.core import tiling
from expanse.core import latent_resample as lr

torch.set_grad_enabled(False)
pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 256  # the picture's side before the 2x upscale
TILE = 128


@pytest.fixture(scope="module")
def vae():
    return tiny_models.tiny_vae()


@pytest.fixture(scope="module")
def picture():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    rgb = torch.stack([0.2 + 0.6 * yy, 0.5 + 0.4 * torch.sin(6 * xx), 0.8 - 0.5 * yy * xx], dim=-1)
    return rgb.unsqueeze(0)


def redraw(nodes, unet, conds, vae, picture, **kwargs):
    settings = dict(upscale_by=2.0, seed=3, steps=2, cfg=3.0, denoise=0.4, tile_width=TILE, tile_height=TILE,
                    padding=32, mask_feather=16, tile_batch_size=4, seam_fix_width=32, seam_fix_feather=8)
    settings.update(kwargs)
    positive, negative = conds
    image = settings.pop("image", picture)
    return nodes["ExpanseChessTileRedraw"].execute(unet, positive, negative, vae, image=image, **settings).result


def plain_upscale(nodes, vae, picture):
    big = lr.resample(picture.movedim(-1, 1), 2 * SIZE, 2 * SIZE, "lanczos").clamp(0, 1).movedim(1, -1)
    return nodes["VAEEncode"]().encode(vae, big)[0]["samples"]


@pytest.mark.parametrize("order", cr.ORDERS)
def test_each_redraw_order_upscales_2x(nodes, unet, conds, vae, picture, order):
    image, latent = redraw(nodes, unet, conds, vae, picture, redraw_order=order)
    assert image.shape == (1, 2 * SIZE, 2 * SIZE, 3) and torch.isfinite(image).all()
    assert latent["samples"].shape == (1, 4, 2 * SIZE // 8, 2 * SIZE // 8)
    upscaled = plain_upscale(nodes, vae, picture)
    changed = (latent["samples"] - upscaled).abs().mean(dim=1)[0]
    if order == cr.NO_REDRAW:
        assert changed.max() < 1e-3, "no redraw, no seam fix: the encoded upscale itself"
    else:
        grid = tiling.grid_rows(*changed.shape, TILE // 8, TILE // 8)
        for row in grid:  # every tile was redrawn
            for box in row:
                assert changed[box.y0:box.y1, box.x0:box.x1].mean() > 1e-3, box


@pytest.mark.parametrize("mode", [m for m in cr.SEAM_MODES if m != cr.SEAMS_NONE])
def test_each_seam_fix_mode_redraws_the_borders(nodes, unet, conds, vae, picture, mode):
    _, before = redraw(nodes, unet, conds, vae, picture, redraw_order=cr.NO_REDRAW)
    _, after = redraw(nodes, unet, conds, vae, picture, redraw_order=cr.NO_REDRAW, seam_fix=mode)
    changed = (after["samples"] - before["samples"]).abs().mean(dim=1)[0]
    border = TILE // 8  # the vertical border between the first two tile columns
    assert changed[:, border - 1:border + 1].mean() > 1e-3
    if mode == cr.SEAMS_BAND:  # 32 px bands: 2 latent px either side of each border
        inner = changed[3:border - 3, 3:border - 3]
        assert inner.max() < 1e-6, "a tile's middle is left alone"


def test_same_seed_same_result_whatever_the_batch_size(nodes, unet, conds, vae, picture):
    _, one = redraw(nodes, unet, conds, vae, picture, tile_batch_size=1, seam_fix=cr.SEAMS_HALF_TILE)
    _, four = redraw(nodes, unet, conds, vae, picture, tile_batch_size=4, seam_fix=cr.SEAMS_HALF_TILE)
    _, again = redraw(nodes, unet, conds, vae, picture, tile_batch_size=4, seam_fix=cr.SEAMS_HALF_TILE)
    assert torch.equal(four["samples"], again["samples"])
    # equal up to float rounding: batched matrix products round differently from single ones
    torch.testing.assert_close(one["samples"], four["samples"], rtol=1e-3, atol=1e-3)
    _, other = redraw(nodes, unet, conds, vae, picture, seed=4)
    assert not torch.allclose(other["samples"], four["samples"], atol=1e-3)


def test_controlnet_hints_reach_each_region_cropped(nodes, unet, conds, vae, picture):
    recorder = tiny_models.HintRecorder()
    hint = tiny_models.hint_image(2 * SIZE, 2 * SIZE, 5)
    positive, negative = nodes["ControlNetApplyAdvanced"]().apply_controlnet(
        *conds, tiny_models.recording_controlnet(recorder), hint, 1.0, 0.0, 1.0)
    redraw(nodes, unet, (positive, negative), vae, picture, steps=1, seam_fix=cr.SEAMS_BAND)
    latent_side = 2 * SIZE // 8
    patches = [p for pass_ in cr.redraw_passes(latent_side, latent_side, TILE // 8, TILE // 8, 4, 2, cr.CHESS)
               + cr.seam_passes(latent_side, latent_side, TILE // 8, TILE // 8, cr.SEAMS_BAND, 4, 1) for p in pass_]
    canvas = hint.movedim(-1, 1)
    crops = {p.region: canvas[..., p.region.y0 * 8:p.region.y1 * 8, p.region.x0 * 8:p.region.x1 * 8] for p in patches}
    seen = set()
    for batch in recorder.hints:
        for one in batch:
            match = [r for r, c in crops.items() if c.shape[-2:] == one.shape[-2:] and torch.equal(one, c[0])]
            assert match, "each region is shown its own part of the hint"
            seen.add(match[0])
    assert seen == set(crops)


def test_user_masks_and_percentage_areas_are_fitted_then_cut(nodes, conds, monkeypatch):
    from expanse.core.tiling import Box
    from expanse.runtime import tile_conds
    from expanse.runtime.tile_conds import ConditioningTiles, ControlCache

    monkeypatch.setattr(tile_conds, "MIN_AREA", 1)  # the cut alone; the least area is the next test's

    positive, negative = conds
    mask = torch.zeros(1, 64, 96)  # pixel-sized, as ConditioningSetMask receives it
    mask[:, 8:40, 24:72] = 1
    masked = nodes["ConditioningSetMask"]().append(positive, mask, "default", 0.7)[0]
    area = nodes["ConditioningSetAreaPercentage"]().append(positive, 0.5, 0.5, 0.25, 0.0, 1.0)[0]
    tiles = ConditioningTiles([masked + area, negative], 8, 12, ControlCache())
    fitted = torch.nn.functional.interpolate(mask.unsqueeze(1), size=(8, 12), mode="bilinear").squeeze(1) * 0.7
    # ConditioningSetAreaPercentage(width .5, height .5, x .25, y 0) is (h 4, w 6, y 0, x 3) latent px here
    first, second = Box(0, 4, 0, 6), Box(4, 8, 6, 12)
    assert tiles.signature(first) != tiles.signature(second), "the area meets one tile only: no shared batch"
    ((_, mask_cond), (_, area_cond)), negative_cut = tiles.for_tiles([first], 1)
    torch.testing.assert_close(mask_cond["mask"], fitted[:, :4, :6])
    assert "set_area_to_bounds" not in mask_cond and mask_cond["mask_strength"] == 1.0
    assert list(area_cond["area"]) == [4, 3, 0, 3] and area_cond["mask"].shape == (1, 4, 6)
    assert len(negative_cut) == 1
    ((_, mask_cond),), _ = tiles.for_tiles([second], 1)
    torch.testing.assert_close(mask_cond["mask"], fitted[:, 4:, 6:])


def test_an_area_cut_to_a_sliver_grows_to_what_the_unet_can_convolve(nodes, conds):
    """An area meeting a tile in a 2 px strip gives the model an 8 latent px crop around it (SD1.5's
    UNet halves it three times), weighted by the area's ramp as before."""
    from expanse.core.tiling import Box
    from expanse.runtime.tile_conds import MIN_AREA, ConditioningTiles, ControlCache

    positive, negative = conds
    # (h .5, w .125, y .25, x .4375) of a 32x32 latent: rows 8-24, columns 14-18
    area = nodes["ConditioningSetAreaPercentage"]().append(positive, 0.125, 0.5, 0.4375, 0.25, 1.0)[0]
    tiles = ConditioningTiles([area, negative], 32, 32, ControlCache())
    tile = Box(0, 16, 0, 16)  # holds columns 14-16 of the area: a 2 px strip
    ((_, cut),), _ = tiles.for_tiles([tile], 1)
    height, width, y, x = cut["area"]
    assert (height, width) == (8, MIN_AREA) and x + width <= 16 and x <= 14, cut["area"]
    assert float(cut["mask"][0, y:y + height, x:x + width].max()) > 0


def test_a_latent_input_chains_after_progressive_grow(nodes, unet, conds, vae):
    positive, negative = conds
    latent = {"samples": torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))}
    image, out = nodes["ExpanseChessTileRedraw"].execute(unet, positive, negative, vae, latent=latent, tile_width=64,
                                                  tile_height=64, padding=16, mask_feather=8, steps=2).result
    assert out["samples"].shape == (1, 4, 32, 32) and image.shape == (1, 256, 256, 3)


def test_bad_inputs_get_clear_messages(nodes, unet, conds, vae, picture):
    positive, negative = conds
    with pytest.raises(ValueError, match="connect an image or a latent"):
        nodes["ExpanseChessTileRedraw"].execute(unet, positive, negative, vae)
    with pytest.raises(ValueError, match="tile .* is larger than the upscaled picture"):
        redraw(nodes, unet, conds, vae, picture, tile_width=2048, tile_height=2048)


def test_auto_vae_mode_follows_the_picture_size(nodes, unet, conds, vae, picture, monkeypatch):
    """auto: exact up to AUTO_EXACT_MAX_PIXELS while global attention is a small share of the
    VAE's work, local_attention beyond either up to AUTO_LOCAL_MAX_PIXELS, sampled above, each with
    the node's tile settings; exact at any size on a GPU that holds its activations. (How close
    local_attention comes to exact is measured on the trained demo VAE in test_tiled_vae_nodes.py;
    the tiny VAE's random attention is global.)"""
    from expanse.core import tiled_vae
    from expanse.runtime import vae as node  # the one copy of the pack: ComfyUI's nodes run it
    runs = []
    real = {name: getattr(tiled_vae, name) for name in ("run_exact", "run_sampled")}

    def spy(name):
        def run(*args, **kwargs):
            runs.append((name, kwargs["tile_px"], kwargs.get("attention_margin_px")))
            return real[name](*args, **kwargs)
        return run

    for name in real:
        monkeypatch.setattr(tiled_vae, name, spy(name))
    settings = dict(redraw_order=cr.NO_REDRAW)
    exact_image, exact = redraw(nodes, unet, conds, vae, picture, vae_mode="exact", **settings)
    runs.clear()
    _, auto = redraw(nodes, unet, conds, vae, picture, **settings)
    assert [(name, margin) for name, _, margin in runs] == [("run_exact", None)] * 2, "512x512: exact"
    torch.testing.assert_close(auto["samples"], exact["samples"])

    monkeypatch.setattr(node, "LOCAL_ATTENTION_TILE_PX", 64)
    monkeypatch.setattr(node, "LOCAL_ATTENTION_MARGIN_PX", 32)
    monkeypatch.setattr(node, "SAMPLED_TILE_PX", 128)
    for name, value in (("AUTO_EXACT_MAX_ATTENTION_SHARE", 0.0), ("AUTO_EXACT_MAX_PIXELS", (2 * SIZE) ** 2 - 1)):
        with monkeypatch.context() as patch:
            patch.setattr(node, name, value)
            runs.clear()
            local_image, _ = redraw(nodes, unet, conds, vae, picture, **settings)
        assert runs == [("run_exact", 64, 32)] * 2, f"{name}: encode, then decode, windowed"
        assert local_image.shape == exact_image.shape and not torch.equal(local_image, exact_image)

    monkeypatch.setattr(node, "AUTO_LOCAL_MAX_PIXELS", (2 * SIZE) ** 2 - 1)
    runs.clear()
    redraw(nodes, unet, conds, vae, picture, **settings)
    assert [(name, tile) for name, tile, _ in runs] == [("run_sampled", 128)] * 2

    asked = []
    monkeypatch.setattr(node, "exact_parks_on_device", lambda v, h, w, which: asked.append((h, w, which)) or True)
    runs.clear()
    gpu_image, _ = redraw(nodes, unet, conds, vae, picture, **settings)
    assert asked == [(2 * SIZE, 2 * SIZE, "encoder"), (2 * SIZE, 2 * SIZE, "decoder")], "about the upscaled picture"
    assert [(name, margin) for name, _, margin in runs] == [("run_exact", None)] * 2, \
        "a GPU holding exact mode's activations: exact at any size"
    torch.testing.assert_close(gpu_image, exact_image)
    with pytest.raises(ValueError, match="vae_mode is .quick.; it must be one of"):
        redraw(nodes, unet, conds, vae, picture, vae_mode="quick")


def _psnr(a, b):
    return (10 * torch.log10((b.max() - b.min()) ** 2 / ((a - b) ** 2).mean())).item()


def test_a_latent_resized_in_pixels_tile_by_tile_equals_the_whole_picture_route(nodes, vae, picture, monkeypatch):
    """latent_resize "pixels": decode, lanczos 2x in pixels and encode, tile by tile with sampled
    statistics. With windows whose context reaches across the picture and a sample covering it, it
    is decode-whole -> upscale -> encode-whole (PSNR over the latent's range); with small context
    and a small sample, no picture of the whole canvas, source or upscaled, is ever decoded or
    encoded (each window at most 60% of it at this tiny size)."""
    from expanse.core import tiled_vae
    from expanse.core.vae_sampled_stats import Sample
    from expanse.runtime import redraw as runtime_redraw
    from expanse.runtime import vae as runtime_vae

    small = lr.resample(picture.movedim(-1, 1), 128, 128, "lanczos").clamp(0, 1).movedim(1, -1)
    z = nodes["VAEEncode"]().encode(vae, small)[0]["samples"]  # 16 x 16 latent px, 128 x 128 px
    whole = nodes["VAEDecode"]().decode(vae, {"samples": z})[0]
    big = lr.resample(whole.movedim(-1, 1), 256, 256, "lanczos").clamp(0, 1).movedim(1, -1)
    expected = nodes["VAEEncode"]().encode(vae, big)[0]["samples"]

    sizes = []
    real = tiled_vae.run_frozen

    def recording(program, crop, stats, **kw):
        y = real(program, crop, stats, **kw)
        sizes.append((tuple(crop.shape[-2:]), tuple(y.shape[-2:])))
        return y

    monkeypatch.setattr(tiled_vae, "run_frozen", recording)
    with monkeypatch.context() as patch:
        # Small tiles, each with padding reaching across the picture: every window's decode, resize
        # and encode is the whole picture's, so the result is too (up to rounding).
        patch.setattr(runtime_vae, "SAMPLED_TILE_PX", 64)
        patch.setattr(runtime_redraw, "DECODE_PADDING_PX", 256)
        patch.setattr(runtime_redraw, "ENCODE_PADDING_PX", 256)
        patch.setattr(runtime_vae, "SAMPLE", Sample(per_side=1, crop_px=4096, border_px=0))
        covering = runtime_redraw.pixel_route("test", z, vae, (32, 32), None)
    assert covering.shape == expected.shape == (1, 4, 32, 32)
    assert _psnr(covering, expected) > 60

    sizes.clear()
    monkeypatch.setattr(runtime_vae, "SAMPLED_TILE_PX", 64)
    monkeypatch.setattr(runtime_vae, "SAMPLE", Sample(per_side=1, crop_px=32, border_px=8, guide_px=64))
    monkeypatch.setattr(runtime_redraw, "DECODE_PADDING_PX", 16)
    monkeypatch.setattr(runtime_redraw, "ENCODE_PADDING_PX", 16)
    tiled = runtime_redraw.pixel_route("test", z, vae, (32, 32), None)
    print(f"tile by tile vs whole: {_psnr(tiled, expected):.1f} dB")
    # 12 dB: a one-crop sample and 16 px of context on the tiny VAE, whose random weights and global
    # attention are the worst case (the route itself is exact: above); the trained VAEs' figures are
    # in bench/results/vae_stats.md.
    assert _psnr(tiled, expected) > 10
    decodes = [out for _, out in sizes if out[0] > 32]  # the decoder's outputs are pictures, the encoder's latents
    encodes = [crop for crop, out in sizes if out[0] <= 32]
    assert decodes and encodes
    # At this tiny size a window's context is most of it: 96 x 96 of the 128 x 128 px source at most.
    assert max(h * w for h, w in decodes) <= 0.6 * 128 * 128 and max(h * w for h, w in encodes) <= 0.6 * 256 * 256


def test_a_latent_input_takes_the_pixel_route_through_the_node(nodes, unet, conds, vae):
    positive, negative = conds
    latent = {"samples": torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))}
    settings = dict(latent=latent, tile_width=64, tile_height=64, padding=16, mask_feather=8, steps=2,
                    redraw_order=cr.NO_REDRAW)
    _, pixels = nodes["ExpanseChessTileRedraw"].execute(unet, positive, negative, vae, latent_resize="pixels",
                                                        **settings).result
    _, latent_space = nodes["ExpanseChessTileRedraw"].execute(unet, positive, negative, vae, **settings).result
    assert pixels["samples"].shape == latent_space["samples"].shape == (1, 4, 32, 32)
    assert not torch.equal(pixels["samples"], latent_space["samples"])
    with pytest.raises(ValueError, match="latent_resize is 'bicubic'; it must be one of latent lanczos, pixels"):
        nodes["ExpanseChessTileRedraw"].execute(unet, positive, negative, vae, latent_resize="bicubic", **settings)
    wrong = {"samples": torch.randn(1, 16, 16, 16)}
    with pytest.raises(ValueError, match="latent has 16 channels but the vae takes 4"):
        nodes["ExpanseChessTileRedraw"].execute(unet, positive, negative, vae, latent_resize="pixels",
                                                **dict(settings, latent=wrong))


def left_quarter_mask(side: int) -> torch.Tensor:
    mask = torch.zeros(1, side, side)
    mask[:, :, :side // 4] = 1
    return mask


def test_a_mask_limits_the_redraw_and_tiles_outside_it_are_not_sampled(nodes, unet, conds, vae, picture):
    """A MASK (the picture's left quarter, at the source's size: stretched over the picture): the
    latent outside it is the upscaled latent bit for bit, the image output outside it the upscaled
    picture itself, inside it the redraw. Of the 4x4 tiles only the left two columns are sampled
    (the first column under the mask, the second because its paste ramp reaches into it)."""
    model, rows = tiny_models.counting_model(unet)
    steps = 2
    image, latent = redraw(nodes, model, conds, vae, picture, steps=steps, mask=left_quarter_mask(SIZE))
    assert sum(rows) == 2 * steps * 8, rows
    rows.clear()
    redraw(nodes, model, conds, vae, picture, steps=steps)
    assert sum(rows) == 2 * steps * 16
    upscaled_image, upscaled = redraw(nodes, unet, conds, vae, picture, redraw_order=cr.NO_REDRAW)

    z, side = latent["samples"], 2 * SIZE // 8
    assert torch.equal(z[..., side // 4 + 2:], upscaled["samples"][..., side // 4 + 2:]), "kept bit for bit"
    assert (z[..., :side // 4] - upscaled["samples"][..., :side // 4]).abs().mean() > 1e-3, "redrawn inside"
    big = lr.resample(picture.movedim(-1, 1), 2 * SIZE, 2 * SIZE, "lanczos").clamp(0, 1).movedim(1, -1)
    px = 2 * SIZE // 4
    assert torch.equal(image[:, :, px + 8:], big[:, :, px + 8:]), "the upscaled picture itself outside"
    assert not torch.equal(image[:, :, px + 8:], upscaled_image[:, :, px + 8:]), "not its VAE round trip"
    assert (image[:, :, :px] - big[:, :, :px]).abs().mean() > 1e-3


def test_a_latents_noise_mask_limits_the_redraw_like_a_mask_and_goes_on(nodes, unet, conds, vae, picture):
    """A latent's noise_mask does what the MASK input does, and stays on the output latent for the
    next redraw of a chain; with both, only where both allow (here: nowhere, so nothing is sampled)."""
    source = nodes["VAEEncode"]().encode(vae, picture)[0]
    masked = dict(source, noise_mask=left_quarter_mask(SIZE))
    _, by_noise_mask = redraw(nodes, unet, conds, vae, None, latent=masked)
    _, by_mask = redraw(nodes, unet, conds, vae, None, latent=source, mask=left_quarter_mask(SIZE))
    assert torch.equal(by_noise_mask["samples"], by_mask["samples"])
    assert by_noise_mask["noise_mask"] is masked["noise_mask"]
    model, rows = tiny_models.counting_model(unet)
    _, neither = redraw(nodes, model, conds, vae, None, latent=masked, mask=left_quarter_mask(SIZE).flip(-1))
    _, plain = redraw(nodes, unet, conds, vae, None, latent=source, redraw_order=cr.NO_REDRAW)
    assert rows == [] and torch.equal(neither["samples"], plain["samples"])


@pytest.mark.parametrize("mask,words", [
    (torch.full((1, 32, 32), float("nan")), "mask holds NaN"),
    (torch.ones(3, 32, 32), "one per picture of the batch"),
    (torch.ones(32), "mask has shape"),
    (torch.ones(1, 0, 32), "mask is empty"),
])
def test_bad_masks_get_clear_messages(nodes, unet, conds, vae, picture, mask, words):
    with pytest.raises(ValueError, match=words):
        redraw(nodes, unet, conds, vae, picture, mask=mask)


def schedule(model, steps: int, denoise: float) -> torch.Tensor:
    """The sigmas BasicScheduler makes ("normal"), from ComfyUI's own calculate_sigmas."""
    import comfy.samplers

    total = int(steps / denoise)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", total).cpu()
    return sigmas[-(steps + 1):]


def test_sigmas_set_the_steps_every_tile_runs(nodes, unet, conds, vae, picture):
    """A SIGMAS of 3 steps: every tile runs exactly 3 model evaluations whatever steps says; a
    schedule equal to KSampler's for steps and denoise draws what the widgets draw."""
    import comfy.samplers

    model, rows = tiny_models.counting_model(unet)
    _, three = redraw(nodes, model, conds, vae, picture, steps=7, sigmas=schedule(unet, 3, 0.4))
    assert sum(rows) == 2 * 3 * 16 and max(rows) <= 2 * 4, rows  # 16 tiles, batches of 4, cond + uncond
    _, widgets = redraw(nodes, unet, conds, vae, picture, steps=3, denoise=0.4)
    assert torch.equal(three["samples"], widgets["samples"])
    euler = comfy.samplers.sampler_object("euler")
    _, custom = redraw(nodes, unet, conds, vae, picture, steps=3, denoise=0.4, sampler=euler)
    assert torch.equal(custom["samples"], widgets["samples"]), "KSamplerSelect's euler is sampler_name euler"
    _, both = redraw(nodes, unet, conds, vae, picture, sampler=euler, sigmas=schedule(unet, 3, 0.4))
    assert torch.equal(both["samples"], widgets["samples"])
    heun = comfy.samplers.sampler_object("heun")
    _, other = redraw(nodes, unet, conds, vae, picture, sampler=heun, sigmas=schedule(unet, 3, 0.4))
    assert not torch.equal(other["samples"], widgets["samples"])


@pytest.mark.parametrize("sigmas,words", [
    (torch.tensor([float("nan"), 0.0]), "sigmas holds NaN"),
    (torch.tensor([1.0]), "at least two values"),
    (torch.ones(2, 3), "sigmas has shape"),
])
def test_bad_sigmas_get_clear_messages(nodes, unet, conds, vae, picture, sigmas, words):
    with pytest.raises(ValueError, match=words):
        redraw(nodes, unet, conds, vae, picture, sigmas=sigmas)


def test_color_match_keeps_the_tint_and_the_detail(nodes, unet, conds, vae, picture):
    """The pointwise model pulls the latent's values its own way, smoothly (a tint): with
    color_match (the default) the redraw's low frequencies are the upscaled latent's, so the change
    that remains is detail (its mean over a tile near zero); off, the tint shows."""
    model = tiny_models.pointwise_model(unet)
    _, upscaled = redraw(nodes, unet, conds, vae, picture, redraw_order=cr.NO_REDRAW)
    _, matched = redraw(nodes, model, conds, vae, picture)
    _, drifting = redraw(nodes, model, conds, vae, picture, color_match=False)
    def tint(latent):  # the change's mean over each tile (16x16 latent px): its tint, not its detail
        return torch.nn.functional.avg_pool2d(latent["samples"] - upscaled["samples"], TILE // 8).abs().mean()

    # measured: 0.04 against 0.21; what is left is the part of the new detail that a tile's mean sees
    assert tint(drifting) > 0.1 and tint(matched) < tint(drifting) / 3, (tint(matched), tint(drifting))
    assert (matched["samples"] - drifting["samples"]).abs().mean() > 0.05
