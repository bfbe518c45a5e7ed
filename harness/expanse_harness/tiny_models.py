"""Small models built from ComfyUI's own classes, shared by the integration tests and the benchmarks.

ComfyUI's layers skip weight initialisation (comfy.ops.disable_weight_init leaves whatever was in
memory), so every builder sets every parameter explicitly from a seed: scaled normal weights,
GroupNorm/LayerNorm scales near one, small biases. Same seed, same model.
"""
from __future__ import annotations

import torch


def seeded_state_dict(shapes: dict[str, torch.Size], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights that keep activations of order one: N(0, 1/fan_in) matrices, norm scales ~1, biases ~0."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            is_scale = "norm" in name and name.endswith("weight")
            sd[name] = (1.0 if is_scale else 0.0) + 0.05 * torch.randn(shape, generator=g)
        else:
            fan_in = max(1, int(torch.Size(shape[1:]).numel()))
            sd[name] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return sd


def _vae_ddconfig(latent_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int) -> dict:
    return {"double_z": True, "z_channels": latent_channels, "resolution": 256, "in_channels": 3, "out_ch": 3,
            "ch": ch, "ch_mult": ch_mult, "num_res_blocks": num_res_blocks, "attn_resolutions": [], "dropout": 0.0}


def tiny_vae(latent_channels: int = 4, ch: int = 32, ch_mult=(1, 2, 4, 4), num_res_blocks: int = 1,
             dtype: torch.dtype | None = None, seed: int = 0):
    """A comfy.sd.VAE around ComfyUI's AutoencoderKL (Encoder/Decoder, GroupNorm(32), mid-block
    attention, 8x down/up sampling with the default ch_mult), with few channels."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ddconfig = _vae_ddconfig(latent_channels, ch, list(ch_mult), num_res_blocks)
    shapes = {k: v.shape for k, v in AutoencoderKL(ddconfig=ddconfig, embed_dim=latent_channels).state_dict().items()}
    config = {"params": {"ddconfig": ddconfig, "embed_dim": latent_channels}}
    return comfy.sd.VAE(sd=seeded_state_dict(shapes, seed), config=config, device=torch.device("cpu"), dtype=dtype)


def full_size_vae_state_dict(latent_channels: int = 4, seed: int = 0, quant_convs: bool = True) -> dict:
    """Random weights for the full-size SD-family VAE (ch 128, ch_mult 1-2-4-4, 2 res blocks), keyed as
    checkpoints are: ComfyUI detects the architecture from these keys, as for a real file.
    quant_convs=False with 16 channels is the SD3/Flux.1 layout."""
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder

    ddconfig = _vae_ddconfig(latent_channels, 128, [1, 2, 4, 4], 2)
    shapes = {f"encoder.{k}": v.shape for k, v in Encoder(**ddconfig).state_dict().items()}
    shapes |= {f"decoder.{k}": v.shape for k, v in Decoder(**ddconfig).state_dict().items()}
    if quant_convs:
        shapes["quant_conv.weight"] = torch.Size([2 * latent_channels, 2 * latent_channels, 1, 1])
        shapes["quant_conv.bias"] = torch.Size([2 * latent_channels])
        shapes["post_quant_conv.weight"] = torch.Size([latent_channels, latent_channels, 1, 1])
        shapes["post_quant_conv.bias"] = torch.Size([latent_channels])
    return seeded_state_dict(shapes, seed)


def full_size_vae(latent_channels: int = 4, seed: int = 0, quant_convs: bool = True, dtype=None,
                  device: torch.device | None = torch.device("cpu")):
    """device=None leaves the choice to ComfyUI (its VAE device: the GPU where there is one)."""
    import comfy.sd

    sd = full_size_vae_state_dict(latent_channels, seed, quant_convs)
    return comfy.sd.VAE(sd=sd, device=device, dtype=dtype)


def seeded_module_state_dict(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """seeded_state_dict for every entry of module.state_dict(). Norm layers whose names do not say
    "norm" (the UNet's GroupNorms sit at in_layers.0, out_layers.0, out.0) are keyed as norms, so
    their scales start near one too."""
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    norm_prefixes = {f"{name}." for name, m in module.named_modules() if isinstance(m, norms)}
    alias = {}
    for key in module.state_dict():
        is_norm = key[:key.rfind(".") + 1] in norm_prefixes and "norm" not in key
        alias[key] = f"norm/{key}" if is_norm else key
    shapes = {alias[k]: v.shape for k, v in module.state_dict().items()}
    seeded = seeded_state_dict(shapes, seed)
    return {k: seeded[a] for k, a in alias.items()}


TINY_CONTEXT_DIM = 64  # tiny_clip's output width, tiny_unet's cross-attention context_dim

TINY_CLIP_CONFIG = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
    "hidden_size": TINY_CONTEXT_DIM, "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2,
    "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": TINY_CONTEXT_DIM,
    "layer_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 49407, "pad_token_id": 1,
    "attention_dropout": 0.0, "dropout": 0.0, "torch_dtype": "float32",
}


def tiny_unet_config(latent_channels: int = 4, model_channels: int = 32) -> dict:
    """The UNetModel config of tiny_unet: SD1.5's layout cut to two levels (channel_mult 1-2, one res
    block each), cross-attention at the second level and in the middle block. model_channels must be
    a multiple of 32 (ComfyUI's GroupNorm(32))."""
    return {
        "use_checkpoint": False, "image_size": 32, "in_channels": latent_channels, "out_channels": latent_channels,
        "model_channels": model_channels, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
        "transformer_depth": [0, 1], "transformer_depth_middle": 1, "transformer_depth_output": [0, 0, 1, 1],
        "use_spatial_transformer": True, "use_linear_in_transformer": False, "context_dim": TINY_CONTEXT_DIM,
        "legacy": False, "adm_in_channels": None, "dtype": torch.float32,
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def tiny_unet(latent_channels: int = 4, model_channels: int = 32, seed: int = 0, prediction: str = "eps"):
    """A comfy.model_patcher.ModelPatcher (CPU) around a comfy.model_base.BaseModel whose UNetModel is a
    two-level SD1.5 (see tiny_unet_config), cross-attending to tiny_clip's 64-wide output, built by the
    pack's own builder (runtime/small_models.py). latent_channels 4: SD15 latent format; 16: SD3's (scale
    and shift, no extra keys). prediction "eps" or "v" (V_PREDICTION), discrete 1000-step schedule."""
    import comfy.latent_formats
    from expanse.runtime import small_models

    formats = {4: comfy.latent_formats.SD15, 16: comfy.latent_formats.SD3}
    if latent_channels not in formats:
        raise ValueError(f"latent_channels must be 4 or 16, not {latent_channels}")
    if prediction not in small_models.PREDICTIONS:
        raise ValueError(f"prediction must be 'eps' or 'v', not {prediction!r}")
    config = dict(tiny_unet_config(latent_channels, model_channels), num_heads=-1, num_head_channels=32)
    cpu = torch.device("cpu")
    patcher = small_models.unet_patcher(config, formats[latent_channels](), prediction, device=cpu)
    unet = patcher.model.diffusion_model
    unet.load_state_dict(seeded_module_state_dict(unet, seed), strict=True)
    return patcher


def tiny_clip(seed: int = 0):
    """A comfy.sd.CLIP (CPU, float32) as an SD1.5 checkpoint gives: ComfyUI's SD1 tokenizer (bundled,
    offline) and its CLIP text transformer cut to TINY_CLIP_CONFIG (width 64, 2 layers, 2 heads).
    CLIPTextEncode gives conditioning of shape (1, 77, 64) and a 64-wide pooled output."""
    from expanse.runtime import small_models

    clip = small_models.text_encoder(TINY_CLIP_CONFIG, device=torch.device("cpu"))
    model = clip.cond_stage_model
    model.load_state_dict(seeded_module_state_dict(model, seed), strict=True)
    return clip


class HintRecorder(torch.nn.Module):
    """A ControlNet model (for comfy.controlnet.ControlNet) that records the hint each call
    receives and adds nothing: tests read what each tile was shown."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.hints = []

    @property
    def dtype(self):
        return torch.float32

    def forward(self, x, hint, timesteps, context, **kwargs):
        assert hint.shape[0] == x.shape[0] and hint.shape[-2:] == tuple(8 * s for s in x.shape[-2:])
        self.hints.append(hint.clone())
        return {"input": [], "middle": [], "output": []}


def recording_controlnet(recorder: HintRecorder):
    import comfy.controlnet

    return comfy.controlnet.ControlNet(recorder, load_device=torch.device("cpu"))


def hint_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A (1, height, width, 3) IMAGE of noise: every crop of it is unique."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, height, width, 3, generator=g)


def pointwise_model(unet):
    """The tiny model with its UNet replaced, through ComfyUI's DIFFUSION_MODEL wrapper, by a
    function of each latent pixel and the prompt: tiling must then reproduce the untiled canvas
    exactly, through ComfyUI's real sampling, CFG and conditioning code."""
    import comfy.patcher_extension

    model = unet.clone()

    def pointwise(executor, x, timesteps, context=None, *args, **kwargs):
        prompt = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return 0.5 * torch.tanh(x) + 0.3 * prompt * x + 0.05 * timesteps.view(-1, 1, 1, 1) / 1000

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test.pointwise", pointwise)
    return model


def counting_model(unet):
    """(model, rows): the model with every call of its UNet recorded, as the number of latent rows
    it is called on (tiles or pictures x 2 for cond and uncond, once per step for euler)."""
    import comfy.patcher_extension

    model, rows = unet.clone(), []

    def count(executor, x, *args, **kwargs):
        rows.append(x.shape[0])
        return executor(x, *args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test.count", count)
    return model, rows
