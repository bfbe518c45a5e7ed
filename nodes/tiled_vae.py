"""TiledVAEEncode / TiledVAEDecode: ComfyUI's VAE run tile by tile (runtime.vae, core.tiled_vae)."""
from __future__ import annotations

from comfy_api.latest import io

from ..runtime import vae as runtime_vae
from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.host import CATEGORY


def _tiling_inputs(*, tile: str, mode: str, padding: int, padding_tooltip: str) -> list:
    """tile_size, mode and padding, as both nodes have them (their tooltips say decode or encode)."""
    return [io.Int.Input("tile_size", default=0, min=0, max=16384, step=8, tooltip=tile),
            io.Combo.Input("mode", options=runtime_vae.MODES, default="exact", tooltip=mode),
            io.Int.Input("padding", default=padding, min=0, max=1024, step=8, tooltip=padding_tooltip)]


class TiledVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseTiledVAEDecode",
            search_aliases=["tiled vae", "vae decode tiled", "tiled decode", "large image decode"],
            display_name="Tiled VAE Decode (Expanse)",
            category=f"{CATEGORY}/vae",
            description="Decodes latents of any size tile by tile. Exact mode shares every GroupNorm's "
                        "statistics across all tiles, so the image equals a whole-image decode: no seams, "
                        "no colour shift between tiles.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode."),
                io.Vae.Input("vae", tooltip="The VAE that matches the model the latent came from."),
                *_tiling_inputs(
                    tile="Tile side in output pixels. 0 picks the largest size that fits the device's free memory, "
                         "leaving room on a GPU for exact mode to keep its activations there (256 on a CPU, where "
                         "small tiles run faster). In exact mode the result does not depend on it; smaller tiles "
                         "use less device memory and run a little slower.",
                    mode="exact: the same image as a whole-image decode (default); its attention grows with the "
                         "square of the area. local_attention: exact statistics, each tile attends to itself and "
                         "padding pixels around it and to a coarse copy of the rest: linear time, very close to "
                         "exact (for 4K and up). fast: estimates "
                         "the statistics from a shrunken copy and decodes padded tiles independently; memory "
                         "bounded by the tile, visible differences are possible. sampled: like fast, with the "
                         "statistics from a spread sample of full-resolution crops correcting a shrunken copy of "
                         "the whole, whose tiles also attend to a coarse copy of the whole: much closer to exact, "
                         "memory bounded by the sample and the tile whatever the size (for canvases beyond RAM).",
                    padding=96,
                    padding_tooltip="fast and sampled modes: context in output pixels decoded around each tile (and "
                                    "each sampled crop) and thrown away. "
                                    "local_attention: how far around its tile each tile attends. More is closer to "
                                    "exact and costs more time."),
            ],
            outputs=[io.Image.Output(tooltip="The decoded image (batch, height, width, RGB in 0..1).")],
        )

    @classmethod
    @checked_entry
    def execute(cls, samples, vae, tile_size=0, mode="exact", padding=96) -> io.NodeOutput:
        return io.NodeOutput(runtime_vae.decode("TiledVAEDecode", vae, samples["samples"], tile_size=tile_size,
                                                mode=mode, padding=padding))


class TiledVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseTiledVAEEncode",
            search_aliases=["tiled vae", "vae encode tiled", "tiled encode", "large image encode"],
            display_name="Tiled VAE Encode (Expanse)",
            category=f"{CATEGORY}/vae",
            description="Encodes images of any size tile by tile. Exact mode shares every GroupNorm's "
                        "statistics across all tiles, so the latent equals a whole-image encode.",
            inputs=[
                io.Image.Input("pixels", tooltip="The image to encode; sides are cropped to the VAE's grid "
                                                 "(a multiple of 8 px for SD-family VAEs) as VAE Encode does."),
                io.Vae.Input("vae", tooltip="The VAE of the model that will use the latent."),
                *_tiling_inputs(
                    tile="Tile side in input pixels. 0 picks the largest size that fits the device's free memory, "
                         "leaving room on a GPU for exact mode to keep its activations there (256 on a CPU). In "
                         "exact mode the result does not depend on it.",
                    mode="exact: the same latent as a whole-image encode (default); its attention grows with the "
                         "square of the area. local_attention: exact statistics, each tile attends to itself and "
                         "padding pixels around it and to a coarse copy of the rest: linear time, very close to "
                         "exact. fast: estimated statistics and "
                         "independent padded tiles; memory bounded by the tile. sampled: like fast, with the "
                         "statistics from a spread sample of full-resolution crops correcting a shrunken copy of "
                         "the whole: closer to exact, memory bounded by the sample and the tile.",
                    padding=64,
                    padding_tooltip="fast and sampled modes: context in input pixels encoded around each tile. "
                                    "local_attention: "
                                    "how far around its tile each tile attends."),
            ],
            outputs=[io.Latent.Output(tooltip="The latent, as VAE Encode returns it.")],
        )

    @classmethod
    @checked_entry
    def execute(cls, pixels, vae, tile_size=0, mode="exact", padding=64) -> io.NodeOutput:
        return io.NodeOutput({"samples": runtime_vae.encode("TiledVAEEncode", vae, pixels, tile_size=tile_size,
                                                            mode=mode, padding=padding)})
