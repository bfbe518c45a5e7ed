"""tiny_models.tiny_unet / tiny_clip through ComfyUI's own nodes: text encode, empty latent, KSampler, VAE decode."""
import pytest
import torch

from expanse_harness import tiny_models

torch.set_grad_enabled(False)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def clip(nodes):
    return tiny_models.tiny_clip()


@pytest.fixture(scope="module")
def conds(nodes, clip):
    encode = nodes["CLIPTextEncode"]()
    return encode.encode(clip, "a red fox in the snow")[0], encode.encode(clip, "")[0]


def ksample(nodes, model, conds, latent, seed, steps=3, cfg=2.0):
    positive, negative = conds
    return nodes["KSampler"]().sample(model, seed, steps, cfg, "euler", "normal", positive, negative, latent,
                                      denoise=1.0)[0]["samples"]


def test_models_are_fully_initialised(nodes, clip):
    unet = tiny_models.tiny_unet()
    for name, p in list(unet.model.named_parameters()) + list(clip.cond_stage_model.named_parameters()):
        assert torch.isfinite(p).all(), name
    # same seed, same weights; another seed, other weights
    again = tiny_models.tiny_unet().model.state_dict()
    other = tiny_models.tiny_unet(seed=1).model.state_dict()
    for k, v in unet.model.diffusion_model.state_dict().items():
        assert torch.equal(v, again[f"diffusion_model.{k}"]), k
    assert not torch.equal(unet.model.diffusion_model.out[2].weight, other["diffusion_model.out.2.weight"])


def test_clip_text_encode_width_matches_unet_context(conds):
    context_dim = tiny_models.tiny_unet().model.model_config.unet_config["context_dim"]
    for cond in conds:
        tensor, extra = cond[0]
        assert tensor.shape == (1, 77, context_dim)
        assert extra["pooled_output"].shape == (1, context_dim)
        assert torch.isfinite(tensor).all()
    assert not torch.equal(conds[0][0][0], conds[1][0][0])


def test_text_to_image_through_comfy_nodes(nodes, conds):
    unet, vae = tiny_models.tiny_unet(), tiny_models.tiny_vae()
    latent = nodes["EmptyLatentImage"]().generate(64, 64, 1)[0]
    assert latent["samples"].shape == (1, 4, 8, 8)

    first = ksample(nodes, unet, conds, latent, seed=7)
    second = ksample(nodes, unet, conds, latent, seed=7)
    other = ksample(nodes, unet, conds, latent, seed=8)
    assert first.shape == (1, 4, 8, 8)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)

    image = nodes["VAEDecode"]().decode(vae, {"samples": first})[0]
    assert image.shape == (1, 64, 64, 3)
    assert torch.isfinite(image).all()


def test_v_prediction_samples(nodes, conds):
    import comfy.model_base

    unet = tiny_models.tiny_unet(prediction="v")
    assert unet.model.model_type == comfy.model_base.ModelType.V_PREDICTION
    out = ksample(nodes, unet, conds, {"samples": torch.zeros(1, 4, 8, 8)}, seed=0)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_sixteen_channel_latent(nodes, conds):
    import comfy.latent_formats

    unet = tiny_models.tiny_unet(latent_channels=16)
    assert isinstance(unet.get_model_object("latent_format"), comfy.latent_formats.SD3)
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    first = ksample(nodes, unet, conds, latent, seed=3)
    assert first.shape == (1, 16, 8, 8)
    assert torch.isfinite(first).all()
    assert torch.equal(first, ksample(nodes, unet, conds, latent, seed=3))
    assert not torch.allclose(first, ksample(nodes, unet, conds, latent, seed=4))
