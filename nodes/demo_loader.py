"""DemoModelLoader: the small demo model that ships with the pack, as MODEL, CLIP and VAE."""
from __future__ import annotations

import pathlib

from comfy_api.latest import io

from . import demo_weights, small_models
from .host import CATEGORY

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


class DemoModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DemoModelLoader",
            display_name="Demo Model Loader (Expanse)",
            category=f"{CATEGORY}/demo",
            description="Loads the small latent diffusion model trained for Expanse's examples: skies, "
                        "mountains, lakes, fields, forests, clouds, stripes, checks and circles in named "
                        "colours. Runs anywhere, no download; not a general-purpose model.",
            inputs=[io.Combo.Input("weights", options=weight_files(), default=DEFAULT_WEIGHTS,
                                   tooltip="The demo weight file, from the pack's demo/weights folder.")],
            outputs=[io.Model.Output(tooltip="The demo UNet, for any sampler."),
                     io.Clip.Output(tooltip="The demo text encoder, for CLIP Text Encode."),
                     io.Vae.Output(tooltip="The demo VAE (SD-style, 8x, 4 channels).")],
        )

    @classmethod
    def execute(cls, weights=DEFAULT_WEIGHTS) -> io.NodeOutput:
        return io.NodeOutput(*load_demo(WEIGHTS_DIR / weights))
