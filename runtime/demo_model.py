"""The demo model that ships with the pack: its weight files, loaded as ComfyUI's MODEL, CLIP and VAE."""
from __future__ import annotations

import pathlib

from . import demo_weights, small_models

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parents[1] / "demo" / "weights"
DEFAULT_WEIGHTS = "expanse-demo.safetensors"


def weight_files() -> list[str]:
    return sorted(p.name for p in WEIGHTS_DIR.glob("*.safetensors")) or [DEFAULT_WEIGHTS]


def load_demo(path: pathlib.Path):
    """(MODEL, CLIP, VAE) built with ComfyUI's own classes from the demo weight file."""
    if not path.is_file():
        raise FileNotFoundError(f"DemoModelLoader: no demo weights at {path}; train them with "
                                "`.venv/bin/python demo/train.py` or reinstall the pack")
    meta, vae_sd, unet_sd, clip_sd = demo_weights.load(path)
    fmt = small_models.latent_format(meta["unet_config"]["in_channels"], meta["scale_factor"],
                                   meta.get("latent_rgb_factors"), meta.get("latent_rgb_factors_bias"))
    model = small_models.unet_patcher(meta["unet_config"], fmt, meta["prediction"], state_dict=unet_sd)
    clip = small_models.text_encoder(meta["clip_config"], state_dict=clip_sd)
    vae = small_models.autoencoder(meta["vae_ddconfig"], meta["vae_embed_dim"], vae_sd)
    return model, clip, vae
