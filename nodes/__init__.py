"""The ComfyUI adapters: read inputs, call core/, return outputs."""
from comfy_api.latest import ComfyExtension, io

from ..runtime.host import track_output_reads, watch_node_ids
from .chess_redraw import ChessTileRedraw
from .demo_loader import DemoModelLoader
from .latent_upscale import LatentUpscaleAdvanced
from .noise_inversion import NoiseInversion
from .progressive_grow import ProgressiveGrowSampler
from .region_prompt import RegionPrompt
from .save_large_image import SaveLargeImage
from .tiled_diffusion import TiledDiffusion
from .tiled_vae import TiledVAEDecode, TiledVAEEncode


class ExpanseExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        node_classes = [TiledVAEEncode, TiledVAEDecode, TiledDiffusion, LatentUpscaleAdvanced,
                        ProgressiveGrowSampler, ChessTileRedraw, RegionPrompt, DemoModelLoader, SaveLargeImage,
                        NoiseInversion]
        watch_node_ids(node_classes)
        track_output_reads({ChessTileRedraw.define_schema().node_id})  # decodes only for a reader
        return node_classes
