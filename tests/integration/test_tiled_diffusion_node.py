"""TiledDiffusion in the real ComfyUI host: KSampler, conditioning nodes and ControlNet objects."""
import logging

import pytest
import torch

from expanse_harness import tiny_models
from expanse.core import tiled_diffusion as td
from expanse.core import tiling

torch.set_grad_enabled(False)

LATENT_H, LATENT_W = 24, 40  # a 320x192 px canvas
TILE_PX, OVERLAP_PX = 128, 32
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_sde", "uni_pc"]


pytestmark = pytest.mark.usefixtures("single_thread")


def wrappers_of(model, kind: str) -> list:
    import comfy.patcher_extension
    from expanse.runtime.diffusion_patch import WRAPPER_KEY

    return model.get_wrappers(getattr(comfy.patcher_extension.WrappersMP, kind), WRAPPER_KEY)


def tiled(nodes, model, method, tile_px=TILE_PX, overlap_px=OVERLAP_PX, batch=3, seed=0):
    return nodes["ExpanseTiledDiffusion"].execute(model, method, tile_px, tile_px, overlap_px, batch, seed).result[0]


def ksample(nodes, model, conds, *, sampler="euler", seed=1, steps=3, cfg=3.0, channels=4):
    latent = {"samples": torch.zeros(1, channels, LATENT_H, LATENT_W)}
    positive, negative = conds
    return nodes["KSampler"]().sample(model, seed, steps, cfg, sampler, "normal", positive, negative, latent,
                                      denoise=1.0)[0]["samples"]


@pytest.mark.parametrize("method", td.METHODS)
def test_pointwise_model_tiled_equals_untiled(nodes, unet, conds, method):
    model = tiny_models.pointwise_model(unet)
    expected = ksample(nodes, model, conds)
    got = ksample(nodes, tiled(nodes, model, method), conds)
    assert got.shape == expected.shape == (1, 4, LATENT_H, LATENT_W)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", td.METHODS)
def test_area_and_mask_conds_are_honoured_per_tile(nodes, unet, conds, method):
    """Regional conds through ComfyUI's own nodes: an area straddling tile borders (with its edge
    ramp), a mask, and a prompt that misses most tiles; all must fuse to the untiled result."""
    clip = tiny_models.tiny_clip()
    encode = nodes["CLIPTextEncode"]()
    positive, negative = conds
    left = nodes["ConditioningSetArea"]().append(encode.encode(clip, "mountains")[0], 136, 96, 64, 40, 0.8)[0]
    corner = nodes["ConditioningSetArea"]().append(encode.encode(clip, "a moon")[0], 64, 64, 256, 0, 1.0)[0]
    mask = torch.zeros(1, LATENT_H * 8, LATENT_W * 8)
    mask[:, 100:190, 150:300] = torch.linspace(0.2, 1.0, 150)
    masked = nodes["ConditioningSetMask"]().append(encode.encode(clip, "a forest")[0], mask, "default", 0.9)[0]
    combine = nodes["ConditioningCombine"]().combine
    regional = combine(combine(combine(positive, left)[0], corner)[0], masked)[0]
    model = tiny_models.pointwise_model(unet)
    expected = ksample(nodes, model, (regional, negative))
    assert not torch.allclose(expected, ksample(nodes, model, conds), atol=1e-3), "the regions must matter"
    got = ksample(nodes, tiled(nodes, model, method), (regional, negative))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sixteen_channel_model(nodes, conds):
    model = tiny_models.pointwise_model(tiny_models.tiny_unet(latent_channels=16))
    expected = ksample(nodes, model, conds, channels=16)
    got = ksample(nodes, tiled(nodes, model, td.MIXTURE_OF_DIFFUSERS), conds, channels=16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    real = ksample(nodes, tiled(nodes, tiny_models.tiny_unet(latent_channels=16), td.SHIFTED), conds, channels=16)
    assert real.shape == (1, 16, LATENT_H, LATENT_W) and torch.isfinite(real).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_are_deterministic_with_the_real_unet(nodes, unet, conds, sampler):
    for method in td.METHODS:
        model = tiled(nodes, unet, method, seed=5)
        first = ksample(nodes, model, conds, sampler=sampler, seed=3)
        again = ksample(nodes, tiled(nodes, unet, method, seed=5), conds, sampler=sampler, seed=3)
        assert first.shape == (1, 4, LATENT_H, LATENT_W) and torch.isfinite(first).all()
        assert torch.equal(first, again), (sampler, method)


def test_tile_batch_size_does_not_change_the_result(nodes, unet, conds):
    one = ksample(nodes, tiled(nodes, unet, td.MULTIDIFFUSION, batch=1), conds)
    many = ksample(nodes, tiled(nodes, unet, td.MULTIDIFFUSION, batch=8), conds)
    # equal up to float rounding: batched matrix products round differently from single ones
    torch.testing.assert_close(one, many, rtol=1e-3, atol=1e-3)
    untiled = ksample(nodes, unet, conds)
    assert not torch.allclose(one, untiled, atol=1e-3), "the real UNet sees tiles, not the canvas"


def test_controlnet_hints_are_cropped_to_each_tile_through_a_chain(nodes, unet, conds):
    recorders = [tiny_models.HintRecorder(), tiny_models.HintRecorder()]
    images = [tiny_models.hint_image(LATENT_H * 8, LATENT_W * 8, 1), tiny_models.hint_image(LATENT_H * 8, LATENT_W * 8, 2)]
    positive, negative = conds
    apply = nodes["ControlNetApplyAdvanced"]()
    for recorder, image in zip(recorders, images):
        control = tiny_models.recording_controlnet(recorder)
        positive, negative = apply.apply_controlnet(positive, negative, control, image, 1.0, 0.0, 1.0)
    ksample(nodes, tiled(nodes, unet, td.MULTIDIFFUSION, batch=2), (positive, negative), steps=2)

    boxes = tiling.tile_boxes(LATENT_H, LATENT_W, TILE_PX // 8, TILE_PX // 8, OVERLAP_PX // 8)
    for recorder, image in zip(recorders, images):
        canvas = image.movedim(-1, 1)
        crops = {b: tiling.crop(canvas, b, 8) for b in boxes}
        seen = set()
        assert recorder.hints, "the ControlNet was called"
        for hint in recorder.hints:
            assert hint.shape[-2:] == (TILE_PX, TILE_PX), "each call sees tiles, not the canvas"
            for one in hint:
                match = [b for b, c in crops.items() if torch.equal(one, c[0])]
                assert len(match) == 1, "each tile's hint is exactly its own part of the canvas hint"
                seen.add(match[0])
        assert seen == set(boxes)


def test_tile_copies_of_a_controlnet_share_no_hint_state_with_it(nodes):
    """A tile's ControlNet copy gets its own per-device clones (ComfyUI 0.33.0 runs a ControlNet on
    extra GPUs through `multigpu_clones`), each holding that tile's hint, and empty size-keyed hint
    caches (upstream's `cond_hints`), so no device or tile sees another's hint."""
    from expanse.runtime.tile_conds import ControlCache

    image = tiny_models.hint_image(LATENT_H * 8, LATENT_W * 8, 3).movedim(-1, 1)
    control = tiny_models.recording_controlnet(tiny_models.HintRecorder()).set_cond_hint(image)
    other_gpu = torch.device("cuda", 1)  # never used: the lookup is by key
    device_clone = control.copy()
    control.multigpu_clones = {other_gpu: device_clone}
    control.cond_hints = {(LATENT_H, LATENT_W): image}
    cache = ControlCache()
    cache.begin_step(LATENT_H, LATENT_W, (0, 0))
    first, second = tiling.tile_boxes(LATENT_H, LATENT_W, TILE_PX // 8, TILE_PX // 8, OVERLAP_PX // 8)[:2]
    copies = [cache.for_tiles(control, [box], 1) for box in (first, second)]
    for box, tiled in zip((first, second), copies):
        assert torch.equal(tiled.cond_hint_original, tiling.crop(image, box, 8))
        assert tiled.cond_hints == {} and tiled.cond_hint is None
        on_other_gpu = tiled.multigpu_clones[other_gpu]  # what 0.33.0's get_instance_for_device returns
        assert on_other_gpu is not device_clone and on_other_gpu is not tiled
        assert torch.equal(on_other_gpu.cond_hint_original, tiled.cond_hint_original)
    assert control.multigpu_clones == {other_gpu: device_clone}
    assert torch.equal(control.cond_hint_original, image) and list(control.cond_hints) == [(LATENT_H, LATENT_W)]


def test_untiled_when_the_canvas_fits_in_one_tile(nodes, unet, conds, caplog):
    model = tiled(nodes, unet, td.MULTIDIFFUSION, tile_px=512, overlap_px=64)
    with caplog.at_level(logging.INFO, logger="expanse"):
        got = ksample(nodes, model, conds)
        ksample(nodes, model, conds)
    assert torch.equal(got, ksample(nodes, unet, conds))
    assert sum("untiled" in r.getMessage() for r in caplog.records) == 1, "said once"


def test_patch_leaves_the_input_model_alone_and_replaces_itself(nodes, unet):
    once = tiled(nodes, unet, td.MULTIDIFFUSION)
    twice = tiled(nodes, once, td.SHIFTED)
    assert wrappers_of(unet, "CALC_COND_BATCH") == []
    assert len(wrappers_of(once, "CALC_COND_BATCH")) == 1
    wrappers = wrappers_of(twice, "CALC_COND_BATCH")
    assert len(wrappers) == 1 and wrappers[0].__self__.method == td.SHIFTED


def test_bad_sizes_get_clear_messages(nodes, unet, caplog):
    cls = nodes["ExpanseTiledDiffusion"]
    message = cls.validate_inputs(tile_width=256, tile_height=128, overlap=128)
    assert isinstance(message, str) and "overlap" in message and "tile" in message
    with pytest.raises(ValueError, match="overlap"):
        cls.execute(unet, td.MULTIDIFFUSION, 256, 128, 128, 2, 0)
    with caplog.at_level(logging.WARNING, logger="expanse"):
        model = cls.execute(unet, td.MULTIDIFFUSION, 130, 128, 30, 2, 0).result[0]
    assert any("tile_width 130" in r.getMessage() for r in caplog.records)
    patch = wrappers_of(model, "CALC_COND_BATCH")[0].__self__
    assert (patch.tile_w, patch.tile_h, patch.overlap) == (16, 16, 4)
