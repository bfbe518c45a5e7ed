"""SaveLargeImage: a latent decoded tile by tile straight into a tiled, pyramidal BigTIFF (and
optionally a Deep Zoom picture) under ComfyUI's output folder, never held whole (runtime.large_image)."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..runtime import large_image
from ..runtime import vae as runtime_vae
from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.host import CATEGORY


class SaveLargeImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseSaveLargeImage",
            search_aliases=["save large image", "save tiff", "bigtiff", "tiled tiff", "pyramid tiff", "deep zoom",
                            "dzi", "gigapixel", "save poster"],
            display_name="Save Large Image (Expanse)",
            category=f"{CATEGORY}/image",
            description="Decodes a latent of any size tile by tile straight into a tiled, pyramidal, compressed "
                        "BigTIFF in the output folder (and optionally a Deep Zoom picture for web viewers), "
                        "without ever holding the picture in memory: for prints and posters too large for an "
                        "IMAGE. Shows and returns a small overview. Needs the tifffile package.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode and save (chain Chess Tile Redraw's latent)."),
                io.Vae.Input("vae", tooltip="The VAE that matches the model the latent came from."),
                io.String.Input("filename_prefix", default="Expanse/large",
                                tooltip="File name under ComfyUI's output folder, as Save Image takes it: "
                                        "subfolders with /, a counter added (large_00001_.tif), %width% and "
                                        "%height% replaced. Paths outside the output folder are refused."),
                io.Combo.Input("vae_mode", options=list(runtime_vae.AUTO_MODES), default=runtime_vae.AUTO,
                               tooltip="How the decode runs (see Tiled VAE Decode). auto: exact where its "
                                       "activations fit (small pictures, a GPU with room), local_attention up "
                                       "to 4096x4096, sampled above, whose memory does not grow with the "
                                       "picture. exact and local_attention keep full-size activations in RAM."),
                io.Combo.Input("compression", options=list(large_image.COMPRESSIONS), default="deflate",
                               tooltip="deflate: lossless, fast, read by every TIFF reader (default). lzma: "
                                       "lossless, a few percent smaller, about ten times slower. none: the largest "
                                       "file, the fastest save."),
                io.Boolean.Input("deep_zoom", default=False,
                                 tooltip="Also write a Deep Zoom picture (name.dzi and a name_files folder of "
                                         "256 px JPEG tiles at every zoom level) that web viewers such as "
                                         "OpenSeadragon open."),
            ],
            outputs=[io.Image.Output("overview", display_name="overview",
                                     tooltip="The picture's overview (longest side at most 1024 px), the TIFF's "
                                             "smallest level, as an IMAGE."),
                     io.String.Output("paths", display_name="paths",
                                      tooltip="The saved TIFF file(s), one path a line.")],
            is_output_node=True,
        )

    @classmethod
    @checked_entry
    def execute(cls, samples, vae, filename_prefix="Expanse/large", vae_mode=runtime_vae.AUTO,
                compression="deflate", deep_zoom=False) -> io.NodeOutput:
        overview, paths = large_image.save("SaveLargeImage", vae, samples["samples"], filename_prefix=filename_prefix,
                                           mode=vae_mode, compression=compression, deep_zoom=deep_zoom)
        return io.NodeOutput(overview, "\n".join(paths), ui=ui.PreviewImage(overview, cls=cls))
