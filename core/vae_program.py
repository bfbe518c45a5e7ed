"""Flattening an AutoencoderKL-style encoder or decoder into a list of tileable passes.

Nearly every convolution in these networks follows a GroupNorm, and a GroupNorm needs the
statistics of the whole image. Running the network module by module would force either the
whole activation onto the device or per-tile statistics (the source of seams). Instead the
network is rewritten as passes of one shape,

    dst = conv(zero_pad(resample(silu(group_norm(src))))) + shortcut(residual)

plus whole-image attention, so the executor (``tiled_vae``) can run each pass tile by tile and
pool the statistics every GroupNorm needs between passes.

The compiler reads the structure from the modules themselves (channel counts, group counts,
kernel sizes, how many up/down samplings), so SD1.x, SDXL, SD3 and Flux VAEs, and any other
channel or group count, go through the same code. Whatever it does not recognise raises
``UnsupportedVAE`` with the reason; callers fall back to a generic path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import nn


class UnsupportedVAE(ValueError):
    """The module is not an encoder/decoder structure the tiled path can replay exactly."""


@dataclass(frozen=True)
class Conv:
    """A convolution taken apart: weight, bias, stride and explicit (top, bottom, left, right) zero padding."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: int
    padding: tuple[int, int, int, int]

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1]

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]


@dataclass(frozen=True)
class Norm:
    """A GroupNorm's parameters; its statistics come from the executor."""

    groups: int
    eps: float
    weight: torch.Tensor | None
    bias: torch.Tensor | None


@dataclass(frozen=True)
class ConvPass:
    """dst = conv(zero_pad(upsample?(silu?(norm?(src))))) + shortcut?(residual)."""

    src: str
    dst: str
    conv: Conv
    norm: Norm | None = None
    silu: bool = False
    upsample: bool = False  # nearest 2x before the convolution
    residual: str | None = None
    shortcut: Conv | None = None  # 1x1 convolution applied to the residual

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels


@dataclass(frozen=True)
class AttentionPass:
    """dst = src + proj(softmax(q k^T / sqrt(C)) v), q/k/v from norm(src): needs the whole image."""

    src: str
    dst: str
    norm: Norm
    q: Conv
    k: Conv
    v: Conv
    proj: Conv

    @property
    def out_channels(self) -> int:
        return self.proj.out_channels


Pass = ConvPass | AttentionPass


@dataclass
class Program:
    """Passes in execution order, each output's resolution relative to the input, and which
    buffers each pass is the last to read (so the executor can free them)."""

    passes: list[Pass]
    input: str
    in_channels: int
    scales: list[Fraction]  # scales[i]: size of pass i's output / size of the program input
    last_reads: list[list[str]] = field(default_factory=list)

    @property
    def output_scale(self) -> Fraction:
        return self.scales[-1]

    @property
    def out_channels(self) -> int:
        return self.passes[-1].out_channels

    @property
    def pixel_scale(self) -> Fraction:
        """Scale of the pixel side of the network (the decoder's output, the encoder's input)."""
        return max(Fraction(1), self.output_scale)

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        return int(height * self.output_scale), int(width * self.output_scale)


class _Builder:
    def __init__(self, input_name: str, in_channels: int):
        self.passes: list[Pass] = []
        self.scales: list[Fraction] = []
        self.scale = Fraction(1)
        self.input = input_name
        self.in_channels = in_channels
        self._names = 0

    def _new(self) -> str:
        self._names += 1
        return f"a{self._names}"

    def _add(self, p: Pass) -> str:
        self.passes.append(p)
        self.scales.append(self.scale)
        return p.dst

    def conv(self, src: str, module: nn.Module, *, norm: nn.Module | None = None, silu: bool = False,
             residual: str | None = None, shortcut: nn.Module | None = None, out_slice: int | None = None) -> str:
        conv = _conv(module, out_slice=out_slice)
        return self._add(ConvPass(src, self._new(), conv, _norm(norm) if norm is not None else None, silu,
                                  residual=residual, shortcut=_conv(shortcut) if shortcut is not None else None))

    def upsample(self, src: str, module: nn.Module) -> str:
        scale = getattr(module, "scale_factor", None)
        if not getattr(module, "with_conv", False) or scale not in (2, 2.0):
            raise UnsupportedVAE(f"an upsampling layer with scale {scale!r} and with_conv="
                                 f"{getattr(module, 'with_conv', None)!r} (expected 2x nearest followed by a conv)")
        self.scale *= 2
        return self._add(ConvPass(src, self._new(), _conv(module.conv), upsample=True))

    def downsample(self, src: str, module: nn.Module) -> str:
        # comfy's Downsample pads one zero row/column at the bottom/right, then convolves with stride 2.
        if not getattr(module, "with_conv", False):
            raise UnsupportedVAE("a downsampling layer without a convolution (average pooling)")
        conv = _conv(module.conv, expect_padding=0, expect_stride=2)
        conv = Conv(conv.weight, conv.bias, conv.stride, (0, 1, 0, 1))
        self.scale /= 2
        return self._add(ConvPass(src, self._new(), conv))

    def resnet(self, src: str, block: nn.Module) -> str:
        _require(block, "norm1", "conv1", "norm2", "conv2")
        if getattr(block, "temb_proj", None) is not None:
            raise UnsupportedVAE("a ResnetBlock with a timestep embedding")
        shortcut = None
        if block.conv1.in_channels != block.conv2.out_channels:
            if getattr(block, "use_conv_shortcut", False):
                raise UnsupportedVAE("a ResnetBlock with a 3x3 conv shortcut")
            shortcut = block.nin_shortcut
        hidden = self.conv(src, block.conv1, norm=block.norm1, silu=True)
        return self.conv(hidden, block.conv2, norm=block.norm2, silu=True, residual=src, shortcut=shortcut)

    def attention(self, src: str, block: nn.Module) -> str:
        _require(block, "norm", "q", "k", "v", "proj_out")
        parts = [_conv(getattr(block, n), expect_kernel=1) for n in ("q", "k", "v", "proj_out")]
        return self._add(AttentionPass(src, self._new(), _norm(block.norm), *parts))

    def level(self, src: str, stage: nn.Module) -> str:
        """One resolution level's residual blocks, each followed by its attention block if it has one."""
        x = src
        for i, block in enumerate(stage.block):
            x = self.resnet(x, block)
            if len(stage.attn) > 0:
                x = self.attention(x, stage.attn[i])
        return x

    def program(self) -> Program:
        prog = Program(self.passes, self.input, self.in_channels, self.scales)
        prog.last_reads = _last_reads(prog)
        return prog


def _require(module: nn.Module, *names: str) -> None:
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        raise UnsupportedVAE(f"{type(module).__name__} has no {', '.join(missing)}")


def _conv(module: nn.Module, *, expect_kernel: int | None = None, expect_padding: int | None = None,
          expect_stride: int = 1, out_slice: int | None = None) -> Conv:
    if not isinstance(module, nn.Conv2d):
        raise UnsupportedVAE(f"a {type(module).__name__} where a 2-D convolution was expected")
    k = module.kernel_size
    if k[0] != k[1] or module.dilation != (1, 1) or module.groups != 1:
        raise UnsupportedVAE(f"a convolution with kernel {k}, dilation {module.dilation}, groups {module.groups}")
    if expect_kernel is not None and k[0] != expect_kernel:
        raise UnsupportedVAE(f"a {k[0]}x{k[0]} convolution where {expect_kernel}x{expect_kernel} was expected")
    if module.padding_mode != "zeros" or isinstance(module.padding, str) or module.padding[0] != module.padding[1]:
        raise UnsupportedVAE(f"a convolution padded {module.padding!r} ({module.padding_mode})")
    pad = module.padding[0]
    if expect_padding is not None and pad != expect_padding:
        raise UnsupportedVAE(f"a convolution padded {pad} where {expect_padding} was expected")
    if module.stride != (expect_stride, expect_stride):
        raise UnsupportedVAE(f"a convolution with stride {module.stride}")
    weight, bias = module.weight, module.bias
    if out_slice is not None:
        weight = weight[:out_slice]
        bias = bias[:out_slice] if bias is not None else None
    return Conv(weight, bias, expect_stride, (pad, pad, pad, pad))


def _norm(module: nn.Module) -> Norm:
    if not isinstance(module, nn.GroupNorm):
        raise UnsupportedVAE(f"a {type(module).__name__} where a GroupNorm was expected")
    return Norm(module.num_groups, module.eps, module.weight, module.bias)


def _last_reads(prog: Program) -> list[list[str]]:
    """For each pass, the buffers no later pass reads (the program input included)."""
    reads = [[p.src] + ([p.residual] if isinstance(p, ConvPass) and p.residual else []) for p in prog.passes]
    last: dict[str, int] = {}
    for i, names in enumerate(reads):
        for n in names:
            last[n] = i
    out: list[list[str]] = [[] for _ in prog.passes]
    for name, i in last.items():
        out[i].append(name)
    return out


def _network(autoencoder: nn.Module, name: str, levels: str) -> tuple[nn.Module, nn.ModuleList]:
    """The autoencoder's `name` network and its resolution levels, checked for what the compiler needs."""
    if getattr(autoencoder, "bn", None) is not None:
        raise UnsupportedVAE("a latent batch-norm (patchified latent) autoencoder")
    net = getattr(autoencoder, name, None)
    if net is None:
        raise UnsupportedVAE(f"{type(autoencoder).__name__} has no {name}")
    _require(net, "conv_in", "mid", "norm_out", "conv_out", levels, "num_resolutions")
    # A video network is told by its convolutions, not by attributes: since ComfyUI 0.3.76 every
    # 2-D Encoder carries a `time_compress` (8 for SD's) and video ones are built of 3-D convolutions.
    if not isinstance(net.conv_in, nn.Conv2d):
        raise UnsupportedVAE(f"a video (3-D) {type(net).__name__} (its conv_in is a {type(net.conv_in).__name__})")
    _require(net.mid, "block_1", "attn_1", "block_2")
    return net, getattr(net, levels)


def _mid(b: _Builder, x: str, mid: nn.Module) -> str:
    x = b.resnet(x, mid.block_1)
    x = b.attention(x, mid.attn_1)
    return b.resnet(x, mid.block_2)


def _gaussian_mode_channels(autoencoder: nn.Module, produced: int) -> int | None:
    """How many of the encoder's output channels the latent keeps (the Gaussian's mean)."""
    reg = getattr(autoencoder, "regularization", None)
    if reg is None:
        return None
    if type(reg).__name__ != "DiagonalGaussianRegularizer" or getattr(reg, "sample", False):
        raise UnsupportedVAE(f"a latent regulariser {type(reg).__name__} that samples or is not Gaussian")
    return produced // 2


def compile_decoder(autoencoder: nn.Module) -> Program:
    """The passes of ``autoencoder.decode`` (post_quant_conv, if any, then the decoder)."""
    dec, up = _network(autoencoder, "decoder", "up")
    if getattr(dec, "give_pre_end", False) or getattr(dec, "tanh_out", False):
        raise UnsupportedVAE("a decoder with give_pre_end or tanh_out")
    post = getattr(autoencoder, "post_quant_conv", None)
    first = post if post is not None else dec.conv_in
    b = _Builder("input", first.in_channels)
    x = b.input
    if post is not None:
        x = b.conv(x, post)
    x = b.conv(x, dec.conv_in)
    x = _mid(b, x, dec.mid)
    for level in reversed(range(dec.num_resolutions)):
        x = b.level(x, up[level])
        if level != 0:
            x = b.upsample(x, up[level].upsample)
    b.conv(x, dec.conv_out, norm=dec.norm_out, silu=True)
    return b.program()


def compile_encoder(autoencoder: nn.Module) -> Program:
    """The passes of ``autoencoder.encode`` up to the latent (the Gaussian's mode)."""
    enc, down = _network(autoencoder, "encoder", "down")
    b = _Builder("input", enc.conv_in.in_channels)
    x = b.conv(b.input, enc.conv_in)
    for level in range(enc.num_resolutions):
        x = b.level(x, down[level])
        if level != enc.num_resolutions - 1:
            x = b.downsample(x, down[level].downsample)
    x = _mid(b, x, enc.mid)
    quant = getattr(autoencoder, "quant_conv", None)
    last = quant if quant is not None else enc.conv_out
    keep = _gaussian_mode_channels(autoencoder, last.out_channels)
    if quant is None:
        b.conv(x, enc.conv_out, norm=enc.norm_out, silu=True, out_slice=keep)
    else:
        x = b.conv(x, enc.conv_out, norm=enc.norm_out, silu=True)
        b.conv(x, quant, out_slice=keep)
    return b.program()
