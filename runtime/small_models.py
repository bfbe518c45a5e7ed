"""ComfyUI's own MODEL, CLIP and VAE objects for small models described by plain configs (the
demo model's, the tests' tiny ones): built the way ComfyUI's checkpoint loader builds them, minus
the detection, which only knows full-size architectures."""
from __future__ import annotations

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management as mm
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base

PREDICTIONS = {"eps": comfy.model_base.ModelType.EPS, "v": comfy.model_base.ModelType.V_PREDICTION}


def latent_format(channels: int, scale_factor: float, rgb_factors=None, rgb_bias=None):
    """A latent format with the scale factor measured on the trained VAE, and, when known, the
    linear latent-to-RGB map KSampler's previews use."""
    fmt = comfy.latent_formats.LatentFormat()
    fmt.latent_channels = channels
    fmt.scale_factor = scale_factor
    fmt.latent_rgb_factors = rgb_factors
    fmt.latent_rgb_factors_bias = rgb_bias
    return fmt


class _SmallModelConfig(comfy.supported_models_base.BASE):
    """A model config built per instance from a given unet_config; never matched by detection."""

    unet_extra_config = {}  # the unet_config given is complete; BASE would override its heads
    memory_usage_factor = 1.0
    prediction = comfy.model_base.ModelType.EPS

    def model_type(self, state_dict, prefix=""):
        return self.prediction

    def inpaint_model(self):  # BASE reads in_channels > 4 as an inpainting UNet
        return False


def unet_patcher(unet_config: dict, fmt, prediction: str = "eps", state_dict: dict | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | None = None):
    """A ModelPatcher around a comfy.model_base.BaseModel with the given UNetModel config. Without a
    state_dict the weights are left for the caller to set (ComfyUI does not initialise them)."""
    config = _SmallModelConfig(dict(unet_config, dtype=dtype))
    config.latent_format = fmt
    config.prediction = PREDICTIONS[prediction]
    load_device = device or mm.get_torch_device()
    offload_device = device or mm.unet_offload_device()
    model = config.get_model({}, device=offload_device)
    if state_dict is not None:
        model.diffusion_model.load_state_dict(state_dict, strict=True)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def clip_target(clip_config: dict):
    """ComfyUI's SD1 tokenizer (bundled, offline) and its CLIP text transformer sized by clip_config."""

    class SmallClipL(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, dtype=dtype, model_options=model_options, return_projected_pooled=False,
                             textmodel_json_config=dict(clip_config))

    class SmallSD1ClipModel(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, clip_model=SmallClipL, **kwargs)

    return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, SmallSD1ClipModel)


def text_encoder(clip_config: dict, state_dict: dict | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None):
    """A comfy.sd.CLIP that CLIPTextEncode drives like an SD1.5 checkpoint's."""
    options = {"dtype": dtype}
    if device is not None:
        options |= {"load_device": device, "offload_device": device, "initial_device": device}
    clip = comfy.sd.CLIP(clip_target(clip_config), model_options=options)
    if state_dict is not None:
        clip.cond_stage_model.load_state_dict(state_dict, strict=True)
    return clip


def autoencoder(ddconfig: dict, embed_dim: int, state_dict: dict, dtype: torch.dtype | None = None,
                device: torch.device | None = None):
    """A comfy.sd.VAE around ComfyUI's AutoencoderKL with the given (small) ddconfig."""
    config = {"params": {"ddconfig": dict(ddconfig), "embed_dim": embed_dim}}
    return comfy.sd.VAE(sd=state_dict, config=config, dtype=dtype, device=device)
