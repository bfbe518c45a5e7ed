"""The demo model's architecture, as plain configuration: ComfyUI's AutoencoderKL, UNetModel and
CLIP text transformer with small channel counts. Shared by the training script and the loader
node; imports nothing from ComfyUI."""
from __future__ import annotations

# ComfyUI's AutoencoderKL: Encoder/Decoder with GroupNorm(32), mid-block attention, 8x down/up
# sampling (four levels), 4 latent channels. Only the widths are small.
VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}
VAE_EMBED_DIM = 4

TEXT_WIDTH = 128  # the text encoder's hidden size, the UNet's cross-attention context_dim

# ComfyUI's CLIP text transformer (comfy.clip_model.CLIPTextModel) driven by its bundled SD1
# tokenizer, so CLIPTextEncode works unchanged.
CLIP_CONFIG = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
    "hidden_size": TEXT_WIDTH, "intermediate_size": 4 * TEXT_WIDTH, "num_attention_heads": 4,
    "num_hidden_layers": 2, "max_position_embeddings": 77, "vocab_size": 49408,
    "projection_dim": TEXT_WIDTH, "layer_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 49407,
    "pad_token_id": 1, "attention_dropout": 0.0, "dropout": 0.0, "torch_dtype": "float32",
}

# ComfyUI's UNetModel in SD1.5's layout, cut to three levels with one residual block each and
# cross-attention on the two lower-resolution levels and the middle block.
UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 64,
    "num_res_blocks": [1, 1, 1], "channel_mult": [1, 2, 2], "transformer_depth": [0, 1, 1],
    "transformer_depth_middle": 1, "transformer_depth_output": [0, 0, 1, 1, 1, 1],
    "use_spatial_transformer": True, "use_linear_in_transformer": True, "context_dim": TEXT_WIDTH,
    "legacy": False, "adm_in_channels": None, "num_heads": -1, "num_head_channels": 32,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
PREDICTION = "eps"
