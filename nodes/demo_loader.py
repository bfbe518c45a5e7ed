"""DemoModelLoader: the small demo model that ships with the pack, as MODEL, CLIP and VAE."""
from __future__ import annotations

from comfy_api.latest import io

from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.demo_model import DEFAULT_WEIGHTS, WEIGHTS_DIR, load_demo, weight_files
from ..runtime.host import CATEGORY


class DemoModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseDemoModelLoader",
            search_aliases=["demo model", "checkpoint loader", "load checkpoint"],
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
    @checked_entry
    def execute(cls, weights=DEFAULT_WEIGHTS) -> io.NodeOutput:
        return io.NodeOutput(*load_demo(WEIGHTS_DIR / weights))
