"""Noise inversion in the real host: the inverted noise, sampled forward through ComfyUI's own
sampler, gives the source back; ChessTileRedraw starts its tiles from it."""

import pytest
import torch

from expanse_harness import tiny_models
from expanse.core import chess_redraw as cr

torch.set_grad_enabled(False)
pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 256  # the picture's side before the 2x upscale
TILE = 128


@pytest.fixture(scope="module")
def smooth(unet):
    """The pointwise model: a smooth field, so Euler's error shrinks with the step as theory says."""
    return tiny_models.pointwise_model(unet)


@pytest.fixture(scope="module")
def source():
    """A latent with the structure of a picture (smooth blobs), not white noise."""
    g = torch.Generator().manual_seed(5)
    return torch.nn.functional.avg_pool2d(torch.randn(1, 4, 32, 32, generator=g), 5, 1, 2) * 4


def schedule(model, steps: int, denoise: float) -> torch.Tensor:
    import comfy.samplers

    total = int(steps / denoise)
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", total).cpu()[-(steps + 1):]


def forward(model, noise, source, conds, sigmas):
    """Sampling as SamplerCustom runs it, unguided (the inversion's own guidance), euler."""
    import comfy.sample
    import comfy.samplers

    positive, negative = conds
    return comfy.sample.sample_custom(model, noise, 1.0, comfy.samplers.sampler_object("euler"), sigmas, positive,
                                      negative, source, disable_pbar=True, seed=0)


def inverted_noise(*args, **kwargs):
    from expanse.runtime import noise_inversion  # imports comfy: after the host has started

    return noise_inversion.inverted_noise(*args, **kwargs)


def round_trip_error(model, source, conds, steps, denoise=0.6) -> float:
    sigmas = schedule(model, steps, denoise)
    noise = inverted_noise(model, source, *conds, sigmas)
    assert noise.shape == source.shape and noise.dtype == source.dtype and noise.device == source.device
    return float((forward(model, noise, source, conds, sigmas) - source).abs().mean())


def test_sampling_the_inverted_noise_gives_the_source_back(comfy_nodes, smooth, source, conds):
    """Inverted at denoise 0.6 and sampled forward with the same schedule, the source comes back:
    within 0.1 mean absolute error at 8 steps (the latent's values span about +-4), 20 times closer
    than sampling random noise, and closer with every doubling of the steps (the error is Euler's
    own, on both legs)."""
    import comfy.sample

    errors = [round_trip_error(smooth, source, conds, steps) for steps in (4, 8, 16)]
    assert errors[1] < 0.1, errors
    assert errors[0] > errors[1] > errors[2], errors
    sigmas = schedule(smooth, 8, 0.6)
    random = comfy.sample.prepare_noise(source, 3)
    assert float((forward(smooth, random, source, conds, sigmas) - source).abs().mean()) > 20 * errors[1]


def test_the_inversion_runs_the_model_once_per_step_unguided(comfy_nodes, unet, source, conds):
    model, rows = tiny_models.counting_model(unet)
    inverted_noise(model, source, *conds, schedule(unet, 5, 0.5))
    assert rows == [1] * 5


def redraw(nodes, model, conds, vae, picture, **kwargs):
    settings = dict(upscale_by=2.0, seed=3, steps=4, cfg=3.0, denoise=0.6, tile_width=TILE, tile_height=TILE,
                    padding=32, mask_feather=16, tile_batch_size=4)
    settings.update(kwargs)
    return nodes["ExpanseChessTileRedraw"].execute(model, *conds, vae, image=picture, **settings).result


@pytest.fixture(scope="module")
def picture():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    return torch.stack([0.2 + 0.6 * yy, 0.5 + 0.4 * torch.sin(9 * xx), 0.8 - 0.5 * yy * xx], dim=-1).unsqueeze(0)


def test_chess_redraw_with_inversion_keeps_closer_to_the_upscaled_picture(nodes, unet, smooth, conds, tiny_vae, picture):
    """At denoise 0.6 every tile is inverted, then sampled (guided, cfg 3): the result stays far
    closer to the upscaled latent than a redraw from random noise, and does not depend on the seed
    (euler adds no noise of its own). The model runs once per step and tile for the inversion, twice
    for the guided sampling."""
    model, rows = tiny_models.counting_model(unet)
    redraw(nodes, model, conds, tiny_vae, picture, noise_inversion=True)
    assert sum(rows) == (1 + 2) * 4 * 16 and max(rows) <= 2 * 4, rows  # 16 tiles, batches of 4
    _, inverted = redraw(nodes, smooth, conds, tiny_vae, picture, noise_inversion=True)
    _, plain = redraw(nodes, smooth, conds, tiny_vae, picture)
    _, upscaled = redraw(nodes, smooth, conds, tiny_vae, picture, redraw_order=cr.NO_REDRAW)
    off_inverted = (inverted["samples"] - upscaled["samples"]).abs().mean()
    off_plain = (plain["samples"] - upscaled["samples"]).abs().mean()
    assert off_inverted < off_plain / 10, (off_inverted, off_plain)
    _, other_seed = redraw(nodes, smooth, conds, tiny_vae, picture, noise_inversion=True, seed=4)
    assert torch.equal(other_seed["samples"], inverted["samples"])


def test_chess_redraw_with_inversion_at_zero_denoise_changes_nothing(nodes, unet, conds, tiny_vae, picture):
    model, rows = tiny_models.counting_model(unet)
    _, latent = redraw(nodes, model, conds, tiny_vae, picture, noise_inversion=True, denoise=0.0)
    _, upscaled = redraw(nodes, unet, conds, tiny_vae, picture, redraw_order=cr.NO_REDRAW)
    assert rows == []
    # pasted back unchanged: equal up to the paste blend's rounding, c * (1 - m) + c * m
    torch.testing.assert_close(latent["samples"], upscaled["samples"], rtol=0, atol=1e-6)


def test_chess_redraw_with_inversion_keeps_to_its_mask(nodes, unet, conds, tiny_vae, picture):
    """Outside the mask the upscaled latent is kept bit for bit, with inversion as without."""
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :, :SIZE // 4] = 1
    _, latent = redraw(nodes, unet, conds, tiny_vae, picture, noise_inversion=True, mask=mask)
    _, upscaled = redraw(nodes, unet, conds, tiny_vae, picture, redraw_order=cr.NO_REDRAW)
    side = 2 * SIZE // 8
    keep = (..., slice(side // 4 + 2, None))
    assert torch.equal(latent["samples"][keep], upscaled["samples"][keep])
    assert (latent["samples"][..., :side // 4] - upscaled["samples"][..., :side // 4]).abs().mean() > 1e-3


def node_invert(nodes, model, conds, latent: dict, **kwargs):
    settings = dict(steps=8, scheduler="normal", denoise=0.6)
    settings.update(kwargs)
    return nodes["ExpanseNoiseInversion"].execute(model, *conds, latent, **settings).result


def sample_advanced(nodes, model, conds, noise, sigmas, latent: dict, cfg: float = 1.0) -> torch.Tensor:
    """SamplerCustomAdvanced with CFGGuider and KSamplerSelect's euler, as a user wires them."""
    guider = nodes["CFGGuider"].execute(model, *conds, cfg).result[0]
    sampler = nodes["KSamplerSelect"].execute("euler").result[0]
    return nodes["SamplerCustomAdvanced"].execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]


def test_the_node_feeds_sampler_custom_advanced_the_source_back(nodes, smooth, conds, source, progress_updates):
    """NoiseInversion's noise and sigmas in SamplerCustomAdvanced (unguided, euler) give the source
    back as the round trip above does; RandomNoise in their place does not. One progress tick per
    inversion step."""
    latent = {"samples": source}
    noise, sigmas = node_invert(nodes, smooth, conds, latent)
    assert len(sigmas) == 9 and progress_updates[-1] == (8, 8)
    back = sample_advanced(nodes, smooth, conds, noise, sigmas, latent)
    assert float((back - source).abs().mean()) < 0.1
    random = nodes["RandomNoise"].execute(0).result[0]
    redrawn = sample_advanced(nodes, smooth, conds, random, sigmas, latent)
    assert float((redrawn - source).abs().mean()) > 2


def test_the_node_inverts_through_tiled_diffusion_as_without(nodes, smooth, conds, source):
    """Through TiledDiffusion (MultiDiffusion, 4x4 tiles of 16 latent px) the pointwise model is
    the same function, so the inverted noise is the untiled one (up to float rounding)."""
    tiled = nodes["ExpanseTiledDiffusion"].execute(smooth, "multidiffusion", 128, 128, 32, 4, 0).result[0]
    latent = {"samples": source}
    whole = node_invert(nodes, smooth, conds, latent)[0].noise
    by_tiles = node_invert(nodes, tiled, conds, latent)[0].noise
    torch.testing.assert_close(by_tiles, whole, rtol=1e-4, atol=1e-4)


def test_the_node_refuses_bad_input_with_clear_messages(nodes, unet, conds, source):
    with pytest.raises(ValueError, match="latent has 16 channels but the model takes 4"):
        node_invert(nodes, unet, conds, {"samples": torch.ones(1, 16, 8, 8)})
    with pytest.raises(ValueError, match="denoise is 0"):
        node_invert(nodes, unet, conds, {"samples": source}, denoise=0.0)
    with pytest.raises(ValueError, match="sigmas holds NaN"):
        node_invert(nodes, unet, conds, {"samples": source}, sigmas=torch.tensor([float("nan"), 0.0]))
    noise, sigmas = node_invert(nodes, unet, conds, {"samples": source}, steps=1)
    with pytest.raises(ValueError, match="connect the latent you inverted"):
        sample_advanced(nodes, unet, conds, noise, sigmas, {"samples": source[..., :16, :16]})
