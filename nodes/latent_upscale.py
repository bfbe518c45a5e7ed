"""LatentUpscaleAdvanced: latent resizing with a real choice of method (core.latent_resample),
or through pixel space with the tiled VAE when a VAE is connected."""
from __future__ import annotations

from comfy_api.latest import io

from ..core import latent_resample as lr
from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.host import CATEGORY
from ..runtime.latent import pixel_ratio, resize_latent, target_size

NODE = "LatentUpscaleAdvanced"
DEFAULT_METHOD = "lanczos"
METHOD_TOOLTIP = (
    "lanczos: sharp, computed in floating point on the latent (ComfyUI's own lanczos goes through "
    "8-bit images). bislerp: interpolates each pixel's channel vector by length and direction, so "
    "vectors are not shortened (less loss of detail than bilinear). bicubic / bilinear: smooth; "
    "bilinear blurs. nearest / nearest-exact: blocky, no new values. area: averages when shrinking.")


class LatentUpscaleAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseLatentUpscaleAdvanced",
            search_aliases=["latent upscale", "upscale latent", "resize latent", "hires fix", "bislerp", "lanczos"],
            display_name="Latent Upscale Advanced (Expanse)",
            category=f"{CATEGORY}/latent",
            description="Resizes a latent by a factor or to a size, with lanczos, bislerp, bicubic and other "
                        "methods computed on the latent itself (no 8-bit round trip, no clipping), or through "
                        "pixel space with the tiled VAE when a VAE is connected. Keeps the noise mask aligned.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to resize."),
                io.Combo.Input("upscale_method", options=list(lr.METHODS), default=DEFAULT_METHOD,
                               tooltip=METHOD_TOOLTIP),
                io.Float.Input("scale_by", default=1.5, min=0.0, max=16.0, step=0.05,
                               tooltip="Resize factor. 0 uses width and height instead."),
                io.Int.Input("width", default=0, min=0, max=65536, step=8,
                             tooltip="Target width in pixels when scale_by is 0; 0 keeps the aspect ratio "
                                     "from height."),
                io.Int.Input("height", default=0, min=0, max=65536, step=8,
                             tooltip="Target height in pixels when scale_by is 0; 0 keeps the aspect ratio "
                                     "from width."),
                io.Boolean.Input("antialias", default=True,
                                 tooltip="When shrinking, average over the pixels each output pixel covers "
                                         "(bilinear, bicubic, lanczos, bislerp), instead of skipping some."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Connect to resize in pixel space instead: decode, resize, encode, all with "
                                     "the tiled VAE. Slower; recommended for 16-channel (SD3, Flux) latents."),
            ],
            outputs=[io.Latent.Output(tooltip="The resized latent."),
                     io.Int.Output("new_width", display_name="width", tooltip="The new width in pixels."),
                     io.Int.Output("new_height", display_name="height", tooltip="The new height in pixels.")],
        )

    @classmethod
    @checked_entry
    def execute(cls, samples, upscale_method=DEFAULT_METHOD, scale_by=1.5, width=0, height=0, antialias=True,
                vae=None) -> io.NodeOutput:
        z = samples["samples"]
        if z.ndim < 4 or z.shape[0] == 0:
            raise ValueError(f"{NODE}: samples is empty or not a latent (shape {tuple(z.shape)})")
        downscale = pixel_ratio(vae)
        new_h, new_w = target_size(NODE, z, scale_by, width, height, downscale)
        out = resize_latent(NODE, samples, new_h, new_w, upscale_method, antialias=antialias, vae=vae)
        return io.NodeOutput(out, new_w * downscale, new_h * downscale)
