"""TiledVAEEncode / TiledVAEDecode: ComfyUI's VAE run tile by tile through core.tiled_vae."""
from __future__ import annotations

import logging

import torch
from comfy.ldm.models import autoencoder
from comfy.ldm.modules.diffusionmodules import model as ae_model
import comfy.model_management as mm
from comfy_api.latest import io

from ..core import tiled_vae
from ..core.tiling import Box
from ..core.vae_program import Program, UnsupportedVAE, compile_decoder, compile_encoder
from .compat import comfy_tiled_decode, comfy_tiled_encode
from .host import CATEGORY, progress_ticker

log = logging.getLogger("expanse")

# Appended, never reordered: saved workflows keep their values.
MODES = ["exact", "fast", "local_attention"]

# Module classes whose forward() the compiled program replays exactly. Exact types: a subclass
# (a video decoder, say) may change forward() while keeping the attribute names.
_KNOWN_MODULES = (
    autoencoder.AutoencoderKL, autoencoder.AutoencodingEngine, autoencoder.DiagonalGaussianRegularizer,
    ae_model.Encoder, ae_model.Decoder, ae_model.ResnetBlock, ae_model.AttnBlock, ae_model.Upsample,
    ae_model.Downsample, torch.nn.Module, torch.nn.ModuleList, torch.nn.SiLU, torch.nn.Dropout,
)


def compile_program(vae, which: str) -> Program:
    """The VAE's encoder or decoder as a tiled program, or UnsupportedVAE saying why not."""
    net = vae.first_stage_model
    for module in net.modules():
        if not (type(module) in _KNOWN_MODULES or isinstance(module, (torch.nn.Conv2d, torch.nn.GroupNorm))):
            raise UnsupportedVAE(f"it contains a {type(module).__module__}.{type(module).__name__}")
    return compile_decoder(net) if which == "decoder" else compile_encoder(net)


# On a CPU, tiles whose activations stay in cache beat one big tile: 1.3-1.6x with the demo VAE
# at 512-2048 px (tile_size 0 picks this there).
CPU_AUTO_TILE_PX = 256


# Exact mode parks its full-resolution activations on the GPU itself when they and a tile's working
# set take at most this share of the free device memory: each pass then skips two trips through
# host memory, which dominate exact mode's time on a GPU (bench/results/vae_decode_gpu.md).
DEVICE_PARK_SHARE = 0.8
DEVICE_PARK_MAX_SHARE = 0.6  # the activations alone; an automatic tile takes a share of the rest


def _resolve_tile(node: str, program: Program, tile_size: int, vae, size: tuple[int, int], mode: str) -> int:
    """The tile side in pixels; tile_size 0 picks one from free memory, leaving room on a GPU for
    exact mode's parked activations of an input of this size (program input grid) where they fit."""
    minimum = tiled_vae.min_tile_px(program)
    if tile_size == 0:
        free = mm.get_free_memory(vae.device)
        if vae.device.type == "cpu":
            return max(minimum, min(tiled_vae.auto_tile_px(program, free, vae.vae_dtype), CPU_AUTO_TILE_PX))
        if mode != "fast":
            parked = tiled_vae.parked_bytes(program, size[0], size[1], vae.vae_dtype)
            if parked <= DEVICE_PARK_MAX_SHARE * free:
                free -= parked
        return max(minimum, tiled_vae.auto_tile_px(program, free, vae.vae_dtype))
    if tile_size < minimum:
        raise ValueError(f"{node}: tile_size {tile_size} is smaller than this VAE's minimum of {minimum} px; "
                         f"raise tile_size to {minimum} or more (0 picks a size from free memory)")
    return tile_size


def park_device(program: Program, height: int, width: int, vae, tile: int, dtype: torch.dtype) -> torch.device:
    """Where exact mode parks one sample's activations for an input of height x width."""
    if vae.device.type == "cpu":
        return vae.device
    need = tiled_vae.parked_bytes(program, height, width, dtype) + tiled_vae.tile_working_bytes(program, tile, dtype)
    return vae.device if need <= DEVICE_PARK_SHARE * mm.get_free_memory(vae.device) else torch.device("cpu")


def exact_parks_on_device(vae, height_px: int, width_px: int, which: str) -> bool:
    """Whether exact mode with an automatic tile would keep the encoder's or decoder's (`which`)
    activations for a picture of this size on the VAE's GPU (False on a CPU). Raises
    UnsupportedVAE as compile_program does."""
    if vae.device.type == "cpu":
        return False
    mm.load_models_gpu([vae.patcher])  # free memory as the run will see it
    program = compile_program(vae, which)
    ratio = 1 if which == "encoder" else vae.spacial_compression_decode()
    h, w = height_px // ratio, width_px // ratio
    tile = _resolve_tile(which, program, 0, vae, (h, w), "exact")
    return park_device(program, h, w, vae, tile, vae.vae_dtype) == vae.device


def _run(node: str, program: Program, x: torch.Tensor, sink, *, vae, tile: int, mode: str, padding: int) -> None:
    """Runs the program in the VAE's dtype; an fp16 overflow is redone in float32."""
    if mode not in MODES:
        raise ValueError(f"{node}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    mm.load_models_gpu([vae.patcher])
    steps = x.shape[0] * tiled_vae.steps_per_sample(program, x.shape[-2], x.shape[-1], tile, mode == "fast")
    dtype = vae.vae_dtype
    host = torch.device("cpu")
    may_park_on_device = True
    while True:
        tick = progress_ticker(steps)
        park = host
        try:
            if mode == "fast":
                tiled_vae.run_fast(program, x, sink, tile_px=tile, padding_px=padding, device=vae.device,
                                   dtype=dtype, tick=tick)
            else:
                margin = padding if mode == "local_attention" else None
                if may_park_on_device:
                    park = park_device(program, x.shape[-2], x.shape[-1], vae, tile, dtype)
                tiled_vae.run_exact(program, x, sink, tile_px=tile, device=vae.device, dtype=dtype, tick=tick,
                                    attention_margin_px=margin, park_device=park)
            return
        except tiled_vae.NonFiniteActivation:
            if dtype == torch.float32:
                raise ValueError(f"{node}: the VAE produced non-finite values even in float32; "
                                 "check the input for NaN or infinite values")
            log.warning("%s: %s overflowed; recomputing in float32", node, dtype)
            dtype = torch.float32
        except torch.cuda.OutOfMemoryError:
            # Free memory is a snapshot: another process, or fragmentation, can take what it promised.
            if park.type == "cpu":
                raise
            log.warning("%s: the GPU ran out of memory with the activations parked on it; "
                        "redoing the run with them in RAM", node)
            may_park_on_device = False
            mm.soft_empty_cache()


def _check_batch(node: str, name: str, t: torch.Tensor, item: str) -> None:
    if t.shape[0] == 0:
        raise ValueError(f"{node}: {name} is an empty batch; connect at least one {item}")


class TiledVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiledVAEDecode",
            display_name="Tiled VAE Decode (Expanse)",
            category=f"{CATEGORY}/vae",
            description="Decodes latents of any size tile by tile. Exact mode shares every GroupNorm's "
                        "statistics across all tiles, so the image equals a whole-image decode: no seams, "
                        "no colour shift between tiles.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode."),
                io.Vae.Input("vae", tooltip="The VAE that matches the model the latent came from."),
                io.Int.Input("tile_size", default=0, min=0, max=16384, step=8,
                             tooltip="Tile side in output pixels. 0 picks the largest size that fits the device's "
                                     "free memory, leaving room on a GPU for exact mode to keep its activations "
                                     "there (256 on a CPU, where small tiles run faster). In exact mode the result "
                                     "does not depend on it; smaller tiles use less device memory and run a little "
                                     "slower."),
                io.Combo.Input("mode", options=MODES, default="exact",
                               tooltip="exact: the same image as a whole-image decode (default); its attention "
                                       "grows with the square of the area. local_attention: exact statistics, each "
                                       "tile attends to itself and `padding` around it: linear time, very close "
                                       "to exact (for 4K and up). fast: estimates the statistics from a shrunken "
                                       "copy and decodes padded tiles independently; memory bounded by the tile, "
                                       "visible differences are possible."),
                io.Int.Input("padding", default=96, min=0, max=1024, step=8,
                             tooltip="fast mode: context in output pixels decoded around each tile and thrown "
                                     "away. local_attention: how far around its tile each tile attends. More "
                                     "is closer to exact and costs more time."),
            ],
            outputs=[io.Image.Output(tooltip="The decoded image (batch, height, width, RGB in 0..1).")],
        )

    @classmethod
    def execute(cls, samples, vae, tile_size=0, mode="exact", padding=96) -> io.NodeOutput:
        node = "TiledVAEDecode"
        vae.throw_exception_if_invalid()
        z = samples["samples"]
        _check_batch(node, "samples", z, "latent")
        if z.ndim != 4:
            raise ValueError(f"{node}: samples has {z.ndim - 2} spatial dimensions (a video latent?); "
                             "this node decodes images: use ComfyUI's VAE Decode (Tiled) for video")
        if z.shape[1] != vae.latent_channels:
            raise ValueError(f"{node}: samples has {z.shape[1]} channels but this VAE takes {vae.latent_channels}; "
                             "connect the VAE that belongs to the model the latent came from")
        try:
            program = compile_program(vae, "decoder")
        except UnsupportedVAE as e:
            return io.NodeOutput(cls._fallback(vae, z, tile_size, padding, str(e)))
        tile = _resolve_tile(node, program, tile_size, vae, z.shape[-2:], mode)
        height, width = program.out_size(z.shape[-2], z.shape[-1])
        image = torch.empty(z.shape[0], height, width, program.out_channels, device=mm.intermediate_device())

        def write(b: int, box: Box, tile_out: torch.Tensor) -> None:
            pixels = vae.process_output(tile_out.float()).movedim(0, -1)
            image[b, box.y0:box.y1, box.x0:box.x1] = pixels.to(image.device)

        _run(node, program, z, write, vae=vae, tile=tile, mode=mode, padding=padding)
        return io.NodeOutput(image)

    @staticmethod
    def _fallback(vae, z, tile_size, padding, reason):
        log.warning("TiledVAEDecode: this VAE's architecture is not one the exact tiled path understands (%s); "
                    "falling back to ComfyUI's own tiled decode, which does not share statistics between tiles",
                    reason)
        return comfy_tiled_decode(vae, z, tile_size or 512, padding)


class TiledVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiledVAEEncode",
            display_name="Tiled VAE Encode (Expanse)",
            category=f"{CATEGORY}/vae",
            description="Encodes images of any size tile by tile. Exact mode shares every GroupNorm's "
                        "statistics across all tiles, so the latent equals a whole-image encode.",
            inputs=[
                io.Image.Input("pixels", tooltip="The image to encode; sides are cropped to the VAE's grid "
                                                 "(a multiple of 8 px for SD-family VAEs) as VAE Encode does."),
                io.Vae.Input("vae", tooltip="The VAE of the model that will use the latent."),
                io.Int.Input("tile_size", default=0, min=0, max=16384, step=8,
                             tooltip="Tile side in input pixels. 0 picks the largest size that fits the device's "
                                     "free memory, leaving room on a GPU for exact mode to keep its activations "
                                     "there (256 on a CPU). In exact mode the result does not depend on it."),
                io.Combo.Input("mode", options=MODES, default="exact",
                               tooltip="exact: the same latent as a whole-image encode (default); its attention "
                                       "grows with the square of the area. local_attention: exact statistics, each "
                                       "tile attends to itself and `padding` around it: linear time, very close "
                                       "to exact. fast: estimated statistics and independent padded tiles; "
                                       "memory bounded by the tile."),
                io.Int.Input("padding", default=64, min=0, max=1024, step=8,
                             tooltip="fast mode: context in input pixels encoded around each tile. "
                                     "local_attention: how far around its tile each tile attends."),
            ],
            outputs=[io.Latent.Output(tooltip="The latent, as VAE Encode returns it.")],
        )

    @classmethod
    def execute(cls, pixels, vae, tile_size=0, mode="exact", padding=64) -> io.NodeOutput:
        node = "TiledVAEEncode"
        vae.throw_exception_if_invalid()
        _check_batch(node, "pixels", pixels, "image")
        pixels = vae.vae_encode_crop_pixels(pixels)
        ratio = vae.spacial_compression_encode()
        if pixels.shape[1] < ratio or pixels.shape[2] < ratio:
            raise ValueError(f"{node}: pixels is smaller than one latent pixel ({ratio}x{ratio} px) of this VAE")
        try:
            program = compile_program(vae, "encoder")
        except UnsupportedVAE as e:
            log.warning("TiledVAEEncode: this VAE's architecture is not one the exact tiled path understands (%s); "
                        "falling back to ComfyUI's own tiled encode", e)
            return io.NodeOutput({"samples": comfy_tiled_encode(vae, pixels[..., :3], tile_size or 512, padding)})
        tile = _resolve_tile(node, program, tile_size, vae, pixels.shape[1:3], mode)
        x = vae.process_input(pixels[..., :3].movedim(-1, 1))
        height, width = program.out_size(x.shape[-2], x.shape[-1])
        latent = torch.empty(x.shape[0], program.out_channels, height, width, device=mm.intermediate_device())

        def write(b: int, box: Box, tile_out: torch.Tensor) -> None:
            latent[b, :, box.y0:box.y1, box.x0:box.x1] = tile_out.to(latent.device, torch.float32)

        _run(node, program, x, write, vae=vae, tile=tile, mode=mode, padding=padding)
        return io.NodeOutput({"samples": latent})
