"""LatentUpscaleAdvanced: latent resizing with a real choice of method (core.latent_resample),
or through pixel space with the tiled VAE when a VAE is connected."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..core import latent_resample as lr
from .host import CATEGORY
from .tiled_vae import TiledVAEDecode, TiledVAEEncode

NODE = "LatentUpscaleAdvanced"
DEFAULT_METHOD = "lanczos"
METHOD_TOOLTIP = (
    "lanczos: sharp, computed in floating point on the latent (ComfyUI's own lanczos goes through "
    "8-bit images). bislerp: interpolates each pixel's channel vector by length and direction, so "
    "vectors are not shortened (less loss of detail than bilinear). bicubic / bilinear: smooth; "
    "bilinear blurs. nearest / nearest-exact: blocky, no new values. area: averages when shrinking.")


def latent_grid(channels: int) -> int:
    """The latent grid sizes snap to: 2 latent px for 16-channel latents (SD3 and Flux.1 are
    DiT models that cut the latent into 2x2 patches), 1 otherwise."""
    return 2 if channels == 16 else 1


def target_size(z: torch.Tensor, scale_by: float, width: int, height: int, downscale: int) -> tuple[int, int]:
    """The latent (height, width) asked for: by scale_by when it is above 0, else by the pixel
    width/height (0 keeps the aspect ratio), on the latent grid."""
    grid = latent_grid(z.shape[1])
    h, w = z.shape[-2:]
    try:
        if scale_by > 0:
            return lr.scaled_size(h, w, scale=scale_by, grid=grid)
        return lr.scaled_size(h, w, target_height=height // downscale, target_width=width // downscale, grid=grid)
    except ValueError as e:
        raise ValueError(f"{NODE}: {e}. Set scale_by above 0, or scale_by to 0 and width and/or height "
                         "in pixels (0 keeps the aspect ratio)") from None


def resize_latent(samples: dict, height: int, width: int, method: str, *, antialias: bool = True,
                  vae=None) -> dict:
    """A copy of a LATENT dict resized to (height, width) latent px: samples, and noise_mask with
    it; batch_index and every other key kept."""
    z = samples["samples"]
    if method not in lr.METHODS:
        raise ValueError(f"{NODE}: method {method!r} is not one of {', '.join(lr.METHODS)}")
    if z.ndim == 5:
        if vae is not None:
            raise ValueError(f"{NODE}: the pixel-space path (vae connected) takes image latents, this one "
                             "is a video latent; disconnect the vae to resize it frame by frame")
        resized = lr.resample_video(z, height, width, method, antialias=antialias)
    elif z.ndim == 4:
        resized = _through_pixels(z, height, width, method, vae) if vae is not None else \
            lr.resample(z, height, width, method, antialias=antialias)
    else:
        raise ValueError(f"{NODE}: samples has shape {tuple(z.shape)}; expected (batch, channels, height, width)")
    out = dict(samples)
    out["samples"] = resized
    mask = samples.get("noise_mask")
    if isinstance(mask, torch.Tensor):
        # SetLatentNoiseMask keeps masks at pixel resolution, the sampler fits them to the latent:
        # a mask stays at the resolution it came in.
        scale = 1 if mask.shape[-2:] == z.shape[-2:] else _ratio(vae)
        out["noise_mask"] = lr.resample_mask(mask, height * scale, width * scale)
    return out


def _ratio(vae) -> int:
    return vae.spacial_compression_decode() if vae is not None else 8


def _through_pixels(z, height, width, method, vae) -> torch.Tensor:
    """Decode, resize the picture, encode: both through the tiled VAE, so a 4K step fits."""
    if z.shape[1] != vae.latent_channels:
        raise ValueError(f"{NODE}: samples has {z.shape[1]} channels but the vae takes {vae.latent_channels}; "
                         "connect the VAE of the model the latent came from, or disconnect it")
    image = TiledVAEDecode.execute(samples={"samples": z}, vae=vae).result[0]
    ratio = vae.spacial_compression_decode()
    pixels = lr.resample(image.movedim(-1, 1), height * ratio, width * ratio, method).clamp(0.0, 1.0)
    return TiledVAEEncode.execute(pixels=pixels.movedim(1, -1), vae=vae).result[0]["samples"]


class LatentUpscaleAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Latent Upscale Advanced (Expanse)",
            category=f"{CATEGORY}/latent",
            description="Resizes a latent by a factor or to a size, with lanczos, bislerp, bicubic and other "
                        "methods computed on the latent itself (no 8-bit round trip, no clipping), or through "
                        "pixel space with the tiled VAE when a VAE is connected. Keeps the noise mask aligned.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to resize."),
                io.Combo.Input("method", options=list(lr.METHODS), default=DEFAULT_METHOD, tooltip=METHOD_TOOLTIP),
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
    def execute(cls, samples, method=DEFAULT_METHOD, scale_by=1.5, width=0, height=0, antialias=True,
                vae=None) -> io.NodeOutput:
        z = samples["samples"]
        if z.ndim < 4 or z.shape[0] == 0:
            raise ValueError(f"{NODE}: samples is empty or not a latent (shape {tuple(z.shape)})")
        downscale = _ratio(vae)
        new_h, new_w = target_size(z, scale_by, width, height, downscale)
        out = resize_latent(samples, new_h, new_w, method, antialias=antialias, vae=vae)
        return io.NodeOutput(out, new_w * downscale, new_h * downscale)
