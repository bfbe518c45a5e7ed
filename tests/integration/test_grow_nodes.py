"""LatentUpscaleAdvanced and ProgressiveGrowSampler in the real ComfyUI host, with the tiny models."""
import pytest
import torch

from expanse_harness import tiny_models
from expanse.core import latent_resample as lr
from expanse.core import progressive as pg

torch.set_grad_enabled(False)


pytestmark = pytest.mark.usefixtures("single_thread")


def upscale(nodes, samples, **kwargs):
    return nodes["ExpanseLatentUpscaleAdvanced"].execute(samples, **kwargs).result


# --- LatentUpscaleAdvanced -----------------------------------------------------------------------

@pytest.mark.parametrize("method", lr.METHODS)
@pytest.mark.parametrize("channels", [4, 16])
def test_every_method_resizes_and_keeps_the_latent_keys(nodes, method, channels):
    g = torch.Generator().manual_seed(0)
    z = 2.5 * torch.randn(2, channels, 12, 20, generator=g)
    mask = torch.rand(2, 1, 96, 160, generator=g)
    samples = {"samples": z, "batch_index": [3, 4], "noise_mask": mask}
    out, width, height = upscale(nodes, samples, upscale_method=method, scale_by=1.5)
    grid = 2 if channels == 16 else 1
    expected = lr.scaled_size(12, 20, scale=1.5, grid=grid)
    assert out["samples"].shape == (2, channels) + expected
    assert (height, width) == (expected[0] * 8, expected[1] * 8)
    assert out["batch_index"] == [3, 4]
    assert out["noise_mask"].shape == (2, 1, expected[0] * 8, expected[1] * 8), "a pixel mask stays in pixels"
    assert samples["samples"] is z and samples["noise_mask"] is mask, "the input dict is not modified"


def test_width_alone_keeps_the_aspect_and_the_mask_at_latent_size(nodes):
    z = torch.randn(1, 4, 16, 32)
    out, width, height = upscale(nodes, {"samples": z, "noise_mask": torch.ones(1, 16, 32)}, upscale_method="bicubic",
                                 scale_by=0.0, width=512, height=0)
    assert out["samples"].shape == (1, 4, 32, 64) and (width, height) == (512, 256)
    assert out["noise_mask"].shape == (1, 32, 64)


def test_lanczos_keeps_latent_values_that_comfyui_lanczos_destroys(nodes):
    g = torch.Generator().manual_seed(1)
    z = 3 * torch.randn(1, 4, 16, 16, generator=g)
    ours = upscale(nodes, {"samples": z}, upscale_method="lanczos", scale_by=2.0)[0]["samples"]
    reference = lr.resample(z.double(), 32, 32, "lanczos").float()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    builtin = nodes["LatentUpscaleBy"]().upscale({"samples": z}, "lanczos", 2.0)[0]["samples"]
    assert (builtin - reference).abs().mean() > 10 * (ours - reference).abs().mean() + 0.1


def test_video_latents_are_resized_frame_by_frame(nodes):
    z = torch.randn(1, 16, 3, 8, 12)
    out = upscale(nodes, {"samples": z}, upscale_method="bislerp", scale_by=2.0)[0]["samples"]
    assert out.shape == (1, 16, 3, 16, 24)
    torch.testing.assert_close(out[:, :, 1], lr.resample(z[:, :, 1], 16, 24, "bislerp"))


def test_pixel_space_path_uses_the_tiled_vae(nodes):
    vae = tiny_models.tiny_vae()
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 4, 8, 8, generator=g)
    out, width, height = upscale(nodes, {"samples": z}, upscale_method="bicubic", scale_by=1.5, vae=vae)
    assert out["samples"].shape == (1, 4, 12, 12) and (width, height) == (96, 96)
    image = nodes["VAEDecode"]().decode(vae, {"samples": z})[0]
    big = lr.resample(image.movedim(-1, 1), 96, 96, "bicubic").clamp(0, 1).movedim(1, -1)
    expected = nodes["VAEEncode"]().encode(vae, big)[0]["samples"]
    torch.testing.assert_close(out["samples"], expected, rtol=1e-3, atol=1e-3)


def test_bad_upscale_inputs_get_clear_messages(nodes):
    z = {"samples": torch.randn(1, 16, 8, 8)}
    with pytest.raises(ValueError, match="scale_by.*width"):
        upscale(nodes, z, upscale_method="lanczos", scale_by=0.0, width=0, height=0)
    with pytest.raises(ValueError, match="16 channels but the vae takes 4"):
        upscale(nodes, z, upscale_method="lanczos", scale_by=2.0, vae=tiny_models.tiny_vae())


# --- ProgressiveGrowSampler ----------------------------------------------------------------------

def grow(nodes, model, conds, latent, **kwargs):
    settings = dict(seed=5, steps=2, cfg=3.0, sampler_name="euler", scheduler="normal", min_scale=0.5,
                    stages=3, refine_steps=1)
    settings.update(kwargs)
    positive, negative = conds
    return nodes["ExpanseProgressiveGrowSampler"].execute(model, positive, negative, latent, **settings).result


def empty(height, width, channels=4):
    return {"samples": torch.zeros(1, channels, height, width)}


def test_every_comfyui_sampler_runs(nodes, unet, conds):
    import comfy.samplers

    failures = {}
    for name in comfy.samplers.KSampler.SAMPLERS:
        try:
            final, stages = grow(nodes, unet, conds, empty(12, 12), sampler_name=name, stages=3)
            assert len(stages) == 3
            assert final["samples"].shape == (1, 4, 12, 12) and torch.isfinite(final["samples"]).all()
        except Exception as e:  # collect them all: one report names every sampler that fails
            failures[name] = repr(e)[:200]
    assert not failures, failures


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_sde", "dpmpp_2m"])
def test_same_seed_same_picture_and_stage_sizes_follow_the_plan(nodes, unet, conds, sampler):
    final, stages = grow(nodes, unet, conds, empty(16, 24), sampler_name=sampler, min_scale=0.25, stages=3)
    again, _ = grow(nodes, unet, conds, empty(16, 24), sampler_name=sampler, min_scale=0.25, stages=3)
    assert torch.equal(final["samples"], again["samples"])
    plan = pg.plan(16, 24, stages=3, min_scale=0.25)
    assert [tuple(s["samples"].shape[-2:]) for s in stages] == [(p.height, p.width) for p in plan]
    other, _ = grow(nodes, unet, conds, empty(16, 24), sampler_name=sampler, min_scale=0.25, stages=3, seed=6)
    assert not torch.equal(final["samples"], other["samples"])


def test_one_progress_bar_over_every_stage(nodes, unet, conds, progress_updates):
    grow(nodes, unet, conds, empty(16, 16), steps=3, refine_steps=2, stages=3)
    ours = [v for v in progress_updates if v[1] == 3 + 2 * 2]
    assert ours and max(v for v, _ in ours) == 7


def test_refine_off_only_upscales_after_the_first_stage(nodes, unet, conds):
    final, stages = grow(nodes, unet, conds, empty(16, 16), refine=False, upscale_method="bicubic")
    assert len(stages) == 3
    for before, stage in zip(stages, stages[1:]):
        expected = lr.resample(before["samples"], *stage["samples"].shape[-2:], "bicubic")
        torch.testing.assert_close(stage["samples"], expected)


def test_with_tiled_diffusion_and_a_noise_mask(nodes, unet, conds):
    tiled = nodes["ExpanseTiledDiffusion"].execute(unet, "mixture_of_diffusers", 64, 64, 16, 4, 0).result[0]
    latent = empty(16, 24)
    latent["noise_mask"] = torch.ones(1, 1, 128, 192)
    final, stages = grow(nodes, tiled, conds, latent, stages=2, stage_noise=0.05)
    assert final["samples"].shape == (1, 4, 16, 24) and torch.isfinite(final["samples"]).all()
    assert final["noise_mask"].shape == (1, 1, 128, 192)


def test_sixteen_channel_model(nodes, conds):
    model = tiny_models.tiny_unet(latent_channels=16)
    final, _ = grow(nodes, model, conds, empty(16, 16, channels=16), min_scale=0.5)
    assert final["samples"].shape == (1, 16, 16, 16)


def test_bad_grow_inputs_get_clear_messages(nodes, unet, conds):
    with pytest.raises(ValueError, match="min_scale"):
        grow(nodes, unet, conds, empty(16, 16), min_scale=0.8, max_scale=0.5)
    with pytest.raises(ValueError, match="16 channels but the model takes 4"):
        grow(nodes, unet, conds, {"samples": torch.randn(1, 16, 16, 16)})
    with pytest.raises(ValueError, match="stages"):
        grow(nodes, unet, conds, empty(16, 16), stages=0)
    with pytest.raises(ValueError, match="too small for 6 stages"):
        grow(nodes, unet, conds, empty(4, 4), stages=6)


def test_sigmas_set_the_first_stage_and_refines_take_their_tail(nodes, unet, conds, progress_updates):
    """An 8-step SIGMAS: the first stage runs exactly 8 model calls, the refines at denoise 0.55
    and 0.35 its last round(8 x 0.55) = 4 and round(8 x 0.35) = 3 (Split Sigmas Denoise's cut),
    whatever steps and refine_steps say; one progress bar over the 15."""
    import comfy.samplers

    model, rows = tiny_models.counting_model(unet)
    sigmas = comfy.samplers.calculate_sigmas(unet.get_model_object("model_sampling"), "karras", 8).cpu()
    final, _ = grow(nodes, model, conds, empty(16, 16), steps=20, refine_steps=9, sigmas=sigmas,
                    denoise_second=0.55, denoise_last=0.35)
    assert len(rows) == 8 + 4 + 3, rows
    ours = [v for v in progress_updates if v[1] == 15]
    assert ours and max(v for v, _ in ours) == 15
    widgets, _ = grow(nodes, unet, conds, empty(16, 16), scheduler="karras", steps=8, refine_steps=4)
    assert not torch.equal(final["samples"], widgets["samples"]), "the refines' schedules differ from KSampler's"


def test_a_sampler_input_is_the_sampler_name_it_stands_for(nodes, unet, conds):
    import comfy.samplers

    widgets, _ = grow(nodes, unet, conds, empty(16, 16), sampler_name="dpmpp_2m")
    custom, _ = grow(nodes, unet, conds, empty(16, 16), sampler_name="euler",
                     sampler=comfy.samplers.sampler_object("dpmpp_2m"))
    assert torch.equal(custom["samples"], widgets["samples"])
    with pytest.raises(ValueError, match="sigmas holds NaN"):
        grow(nodes, unet, conds, empty(16, 16), sigmas=torch.tensor([1.0, float("nan")]))
