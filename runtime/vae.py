"""The tiled VAE as ComfyUI runs it: core.tiled_vae on a ComfyUI VAE, with one policy for the
tile size, the mode (auto) and where exact mode parks its activations, and ComfyUI's own tiled path
for a VAE the exact path does not understand. decode and encode are the entry points every node
uses.
"""
from __future__ import annotations

import dataclasses
import logging

import torch
from comfy.ldm.models import autoencoder
from comfy.ldm.modules.diffusionmodules import model as ae_model
import comfy.model_management as mm

from ..core import tiled_vae, vae_geometry, vae_runner, vae_sampled_stats
from ..core.tiling import Box
from ..core.vae_program import Program, UnsupportedVAE, compile_decoder, compile_encoder
from .compat import comfy_tiled_decode, comfy_tiled_encode
from .host import progress_ticker

log = logging.getLogger("expanse")

# Appended, never reordered: saved workflows keep their values.
MODES = ["exact", "fast", "local_attention", "sampled"]

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
    minimum = vae_geometry.min_tile_px(program)
    if tile_size == 0:
        free = mm.get_free_memory(vae.device)
        if vae.device.type == "cpu":
            return max(minimum, min(vae_geometry.auto_tile_px(program, free, vae.vae_dtype), CPU_AUTO_TILE_PX))
        if mode not in ("fast", "sampled"):
            parked = vae_geometry.parked_bytes(program, size[0], size[1], vae.vae_dtype)
            if parked <= DEVICE_PARK_MAX_SHARE * free:
                free -= parked
        return max(minimum, vae_geometry.auto_tile_px(program, free, vae.vae_dtype))
    if tile_size < minimum:
        raise ValueError(f"{node}: tile_size {tile_size} is smaller than this VAE's minimum of {minimum} px; "
                         f"raise tile_size to {minimum} or more (0 picks a size from free memory)")
    return tile_size


def _park_where(vae, need) -> torch.device:
    """The VAE's GPU where `need()` bytes fit in DEVICE_PARK_SHARE of its free memory, else host
    memory; on a CPU the one device (need is not computed)."""
    if vae.device.type == "cpu":
        return vae.device
    return vae.device if need() <= DEVICE_PARK_SHARE * mm.get_free_memory(vae.device) else torch.device("cpu")


def park_device(program: Program, height: int, width: int, vae, tile: int, dtype: torch.dtype) -> torch.device:
    """Where exact mode parks one sample's activations for an input of height x width."""
    return _park_where(vae, lambda: vae_geometry.parked_bytes(program, height, width, dtype)
                       + vae_geometry.tile_working_bytes(program, tile, dtype))


def sample_park_device(program: Program, height: int, width: int, vae, padding: int,
                       dtype: torch.dtype) -> torch.device:
    """Where sampled mode keeps its sample's activations while it estimates the statistics (beside
    the attention context, which stays on the device)."""
    return _park_where(vae, lambda: vae_sampled_stats.sample_parked_bytes(program, height, width, SAMPLE, padding,
                                                                          dtype)
                       + vae_sampled_stats.context_bytes(program, height, width, dtype))


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


def float32_after_overflow(node: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype to redo a run in after it overflowed (NonFiniteActivation) in dtype: float32, or a
    ValueError where it already was float32 (the input itself is not finite)."""
    if dtype == torch.float32:
        raise ValueError(f"{node}: the VAE produced non-finite values even in float32; "
                         "check the input for NaN or infinite values")
    log.warning("%s: %s overflowed; recomputing in float32", node, dtype)
    return torch.float32


def _run(node: str, program: Program, x: torch.Tensor, sink, *, vae, tile: int, mode: str, padding: int) -> None:
    """Runs the program in the VAE's dtype; an fp16 overflow is redone in float32."""
    if mode not in MODES:
        raise ValueError(f"{node}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    mm.load_models_gpu([vae.patcher])
    sample = estimator_sample(vae, program) if mode == "sampled" else None
    steps = x.shape[0] * tiled_vae.steps_per_sample(program, x.shape[-2], x.shape[-1], tile, mode == "fast", sample,
                                                    padding)
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
            elif mode == "sampled":
                if may_park_on_device:
                    park = sample_park_device(program, x.shape[-2], x.shape[-1], vae, padding, dtype)
                tiled_vae.run_sampled(program, x, sink, tile_px=tile, padding_px=padding, device=vae.device,
                                      dtype=dtype, sample=sample, tick=tick, park_device=park)
            else:
                margin = padding if mode == "local_attention" else None
                if may_park_on_device:
                    park = park_device(program, x.shape[-2], x.shape[-1], vae, tile, dtype)
                tiled_vae.run_exact(program, x, sink, tile_px=tile, device=vae.device, dtype=dtype, tick=tick,
                                    attention_margin_px=margin, park_device=park)
            return
        except vae_runner.NonFiniteActivation:
            dtype = float32_after_overflow(node, dtype)
        except torch.cuda.OutOfMemoryError:
            # Free memory is a snapshot: another process, or fragmentation, can take what it promised.
            if park.type == "cpu":
                raise
            log.warning("%s: the GPU ran out of memory with the activations parked on it; "
                        "redoing the run with them in RAM", node)
            may_park_on_device = False
            mm.soft_empty_cache()


AUTO = "auto"
AUTO_MODES = (AUTO, *MODES)
# auto picks the tiled VAE mode by the upscaled picture's size. Exact mode runs the VAE's mid-block
# attention over the whole latent, a share of the work that grows with the area (SD's decoder: 5%
# at 1024 px, 18% at 2048, 47% at 4096; the demo VAE's: 22%, 53%, 82%), and parks full-resolution
# activations in RAM (about 10 GB at 2048x2048 px for SD's VAE in float32). local_attention keeps
# the exact statistics with windowed attention (linear time, the same RAM); sampled bounds the RAM
# with statistics from a full-resolution sample (fast, from a shrunken copy, is further from exact).
# On a GPU that holds those activations, attention is a small cost and exact is both the fastest
# and the best: auto takes it whatever the size.
AUTO_EXACT_MAX_PIXELS = 2048 * 2048
AUTO_EXACT_MAX_ATTENTION_SHARE = 0.25
AUTO_LOCAL_MAX_PIXELS = 4096 * 4096
# local_attention: 256 px tiles each attending to a 768 px window and to the rest of the canvas
# pooled to 64x64 tokens (attention_context; with the demo VAE at 1024 px, 40.8 dB against exact,
# 36.9 dB with the window alone, at 0.6-0.75x exact's time on a CPU); fast: 1024 px tiles (its memory bound) with
# the VAE nodes' default padding; sampled: the same tiles, padding and SAMPLE (bench/vae_stats_bench.py).
LOCAL_ATTENTION_TILE_PX, LOCAL_ATTENTION_MARGIN_PX = 256, 256
FAST_TILE_PX = 1024
SAMPLED_TILE_PX = 1024
# sampled mode's statistics: a 4 x 4 lattice of 256 px crops inside 64 px border bands (each with
# the run's padding), pooled with the weights of their strata, correcting a copy of the whole
# shrunk to 1024 px (core.vae_sampled_stats.Sample).
SAMPLE = vae_sampled_stats.Sample(per_side=4, crop_px=256, border_px=64)


def estimator_sample(vae, *programs: Program) -> vae_sampled_stats.Sample:
    """SAMPLE with its crops and guide run pass by pass in the tiles exact mode takes on this device
    (the smallest of the programs'), so that no pass holds more than a tile's working set."""
    tile = min(_resolve_tile("sampled", p, 0, vae, (0, 0), "sampled") for p in programs)
    return dataclasses.replace(SAMPLE, pass_tile_px=tile)


def auto_mode(vae, height_px: int, width_px: int, which: str) -> str:
    """The tiled VAE mode auto takes for the encode or decode (`which`: "encoder" or "decoder") of
    a picture of this size: exact on a GPU that holds exact mode's activations at that moment (the
    UNet may hold some of its memory at one and not the other); elsewhere exact while the picture
    is at most AUTO_EXACT_MAX_PIXELS and global attention at most AUTO_EXACT_MAX_ATTENTION_SHARE
    of the decoder's work, local_attention up to AUTO_LOCAL_MAX_PIXELS, sampled above."""
    try:
        if exact_parks_on_device(vae, height_px, width_px, which):
            return "exact"
        area = height_px * width_px
        if area > AUTO_LOCAL_MAX_PIXELS:
            return "sampled"
        if area > AUTO_EXACT_MAX_PIXELS:
            return "local_attention"
        decoder = compile_program(vae, "decoder")
    except UnsupportedVAE:
        return "exact"  # the VAE nodes fall back to ComfyUI's own tiled path, whatever the mode
    ratio = vae.spacial_compression_decode()
    share = vae_geometry.global_attention_share(decoder, height_px // ratio, width_px // ratio)
    return "exact" if share <= AUTO_EXACT_MAX_ATTENTION_SHARE else "local_attention"


def _settings(vae, which: str, height_px: int, width_px: int, mode: str, tile_size: int, padding: int | None,
              default_padding: int) -> tuple[str, int, int]:
    """(mode, tile_size, padding) to run with: those given, or for AUTO those it picks for a picture
    of this size (auto_mode, with its tile settings); padding None is the default."""
    if mode == AUTO:
        mode = auto_mode(vae, height_px, width_px, which)
        if mode == "local_attention":
            return mode, LOCAL_ATTENTION_TILE_PX, LOCAL_ATTENTION_MARGIN_PX
        tile_size, padding = {"fast": FAST_TILE_PX, "sampled": SAMPLED_TILE_PX}.get(mode, 0), None
    return mode, tile_size, default_padding if padding is None else padding


def _check_batch(node: str, name: str, t: torch.Tensor, item: str) -> None:
    if t.shape[0] == 0:
        raise ValueError(f"{node}: {name} is an empty batch; connect at least one {item}")


def _compiled(node: str, vae, which: str) -> Program | None:
    """compile_program, or None (said in the log) where ComfyUI's own tiled path must take over."""
    try:
        return compile_program(vae, which)
    except UnsupportedVAE as e:
        what = "decode" if which == "decoder" else "encode"
        log.warning("%s: this VAE's architecture is not one the exact tiled path understands (%s); falling back "
                    "to ComfyUI's own tiled %s, which does not share statistics between tiles", node, e, what)
        return None


# The old path (decode) builds the whole float32 IMAGE in memory; it refuses a picture that would
# take more than this share of the free memory where the IMAGE lives, instead of running out of it.
IMAGE_MAX_FREE_SHARE = 0.8


def decoded_size(vae, z: torch.Tensor) -> tuple[int, int]:
    """(height, width) in pixels of the picture a latent decodes to."""
    ratio = vae.spacial_compression_decode()
    return z.shape[-2] * ratio, z.shape[-1] * ratio


def _amount(size: float) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def check_image_fits(node: str, batch: int, height: int, width: int, channels: int = 3) -> None:
    """Refuses, with a message naming the node and the size, an IMAGE of this size that would not
    fit in the free memory of the device ComfyUI keeps images on (RAM unless told otherwise)."""
    device = mm.intermediate_device()
    need = batch * height * width * channels * 4
    free = mm.get_free_memory(device)
    if need > IMAGE_MAX_FREE_SHARE * free:
        where = "RAM" if device.type == "cpu" else f"{device} memory"
        items = f"{batch} pictures of " if batch > 1 else ""
        raise MemoryError(f"{node}: the decoded image ({items}{width}x{height} px) would take {_amount(need)} "
                          f"as a float32 IMAGE, and {_amount(free)} of {where} is free; save the latent with "
                          "Save Large Image (Expanse), which decodes it tile by tile straight into a tiled file "
                          "without holding the picture, or decode a smaller latent")


def check_latent(node: str, vae, z: torch.Tensor) -> None:
    vae.throw_exception_if_invalid()
    _check_batch(node, "samples", z, "latent")
    if z.ndim != 4:
        raise ValueError(f"{node}: samples has {z.ndim - 2} spatial dimensions (a video latent?); "
                         "this node decodes images: use ComfyUI's VAE Decode (Tiled) for video")
    if z.shape[1] != vae.latent_channels:
        raise ValueError(f"{node}: samples has {z.shape[1]} channels but this VAE takes {vae.latent_channels}; "
                         "connect the VAE that belongs to the model the latent came from")


def decode_tiles(node: str, vae, z: torch.Tensor, sink, *, tile_size: int = 0, mode: str = "exact",
                 padding: int | None = 96) -> None:
    """An image latent decoded tile by tile, each finished tile handed to sink(b, box, pixels):
    sample index, its Box on the picture (decoded_size) and its pixels, float32 (h, w, RGB) in
    0..1 on the intermediate device. Samples come one after another, each one's tiles in rows,
    top to bottom and left to right; nothing holds the whole picture (except for a VAE the tiled
    path does not understand: ComfyUI's tiled decode then makes it whole, and hands it over as
    one tile per sample). mode, tile_size, padding as in decode."""
    check_latent(node, vae, z)
    height, width = decoded_size(vae, z)
    mode, tile_size, padding = _settings(vae, "decoder", height, width, mode, tile_size, padding, 96)
    log.info("%s: decoding %dx%d px (%s)", node, width, height, mode)
    program = _compiled(node, vae, "decoder")
    if program is None:
        check_image_fits(node, z.shape[0], height, width)
        image = comfy_tiled_decode(vae, z, tile_size or 512, padding)
        for b in range(image.shape[0]):
            sink(b, Box(0, image.shape[1], 0, image.shape[2]), image[b])
        return
    tile = _resolve_tile(node, program, tile_size, vae, z.shape[-2:], mode)
    device = mm.intermediate_device()

    def write(b: int, box: Box, tile_out: torch.Tensor) -> None:
        sink(b, box, vae.process_output(tile_out.float()).movedim(0, -1).to(device))

    _run(node, program, z, write, vae=vae, tile=tile, mode=mode, padding=padding)


def decode(node: str, vae, z: torch.Tensor, *, tile_size: int = 0, mode: str = "exact",
           padding: int | None = 96) -> torch.Tensor:
    """An image latent decoded tile by tile into an IMAGE (batch, height, width, RGB). mode is one
    of MODES, or AUTO for the settings auto picks for the picture's size (tile_size and padding
    then ignored). `node` names the caller in messages. A picture whose IMAGE would not fit in
    free memory is refused (check_image_fits): Save Large Image streams it to a file instead."""
    check_latent(node, vae, z)
    height, width = decoded_size(vae, z)
    check_image_fits(node, z.shape[0], height, width)
    image = None

    def write(b: int, box: Box, pixels: torch.Tensor) -> None:
        nonlocal image
        if image is None:
            image = torch.empty(z.shape[0], height, width, pixels.shape[-1], device=mm.intermediate_device())
        image[b, box.y0:box.y1, box.x0:box.x1] = pixels

    decode_tiles(node, vae, z, write, tile_size=tile_size, mode=mode, padding=padding)
    return image


def encode(node: str, vae, pixels: torch.Tensor, *, tile_size: int = 0, mode: str = "exact",
           padding: int | None = 64) -> torch.Tensor:
    """An IMAGE encoded tile by tile into a latent tensor, its sides cropped to the VAE's grid as
    VAE Encode does; mode as in decode."""
    vae.throw_exception_if_invalid()
    _check_batch(node, "pixels", pixels, "image")
    pixels = vae.vae_encode_crop_pixels(pixels)
    ratio = vae.spacial_compression_encode()
    if pixels.shape[1] < ratio or pixels.shape[2] < ratio:
        raise ValueError(f"{node}: pixels is smaller than one latent pixel ({ratio}x{ratio} px) of this VAE")
    mode, tile_size, padding = _settings(vae, "encoder", pixels.shape[1], pixels.shape[2], mode, tile_size,
                                         padding, 64)
    program = _compiled(node, vae, "encoder")
    if program is None:
        return comfy_tiled_encode(vae, pixels[..., :3], tile_size or 512, padding)
    tile = _resolve_tile(node, program, tile_size, vae, pixels.shape[1:3], mode)
    x = vae.process_input(pixels[..., :3].movedim(-1, 1))
    height, width = program.out_size(x.shape[-2], x.shape[-1])
    latent = torch.empty(x.shape[0], program.out_channels, height, width, device=mm.intermediate_device())

    def write(b: int, box: Box, tile_out: torch.Tensor) -> None:
        latent[b, :, box.y0:box.y1, box.x0:box.x1] = tile_out.to(latent.device, torch.float32)

    _run(node, program, x, write, vae=vae, tile=tile, mode=mode, padding=padding)
    return latent
