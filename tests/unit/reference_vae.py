"""A plain-torch AutoencoderKL with ComfyUI's module layout (conv_in, down/up levels, mid block,
norm_out, conv_out, quant convs), used as the whole-image oracle for core/ without importing
ComfyUI. The integration tests repeat the comparison on ComfyUI's own classes."""
import torch
import torch.nn.functional as F
from torch import nn


def _norm(ch, groups):
    return nn.GroupNorm(groups, ch, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, ch, groups):
        super().__init__()
        self.norm = _norm(ch, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q, k, v = (m(h).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, hh, ww)
        return x + self.proj_out(a)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.with_conv, self.scale_factor, self.conv = True, 2.0, nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.with_conv, self.conv = True, nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Encoder(nn.Module):
    def __init__(self, ch, mult, blocks, z, groups, attn_levels=()):
        super().__init__()
        self.num_resolutions = len(mult)
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for level, m in enumerate(mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(blocks):
                stage.block.append(ResnetBlock(cin, ch * m, groups))
                cin = ch * m
                if level in attn_levels:
                    stage.attn.append(AttnBlock(cin, groups))
            if level != len(mult) - 1:
                stage.downsample = Downsample(cin)
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = ResnetBlock(cin, cin, groups), AttnBlock(cin, groups), ResnetBlock(cin, cin, groups)
        self.norm_out, self.conv_out = _norm(cin, groups), nn.Conv2d(cin, 2 * z, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level, stage in enumerate(self.down):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if level != self.num_resolutions - 1:
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch, mult, blocks, z, groups, attn_levels=()):
        super().__init__()
        self.num_resolutions = len(mult)
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(z, cin, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = ResnetBlock(cin, cin, groups), AttnBlock(cin, groups), ResnetBlock(cin, cin, groups)
        self.up = nn.ModuleList()
        for level in reversed(range(len(mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(blocks + 1):
                stage.block.append(ResnetBlock(cin, ch * mult[level], groups))
                cin = ch * mult[level]
                if level in attn_levels:
                    stage.attn.append(AttnBlock(cin, groups))
            if level != 0:
                stage.upsample = Upsample(cin)
            self.up.insert(0, stage)
        self.norm_out, self.conv_out = _norm(cin, groups), nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(range(self.num_resolutions)):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if level != 0:
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiagonalGaussianRegularizer(nn.Module):
    sample = False

    def forward(self, z):
        return z.chunk(2, dim=1)[0]


class Autoencoder(nn.Module):
    """quant convs present: the AutoencoderKL layout (SD1.x/SDXL); absent: SD3/Flux's AutoencodingEngine."""

    def __init__(self, ch=16, mult=(1, 2, 2), blocks=1, z=4, groups=8, quant=True, attn_levels=()):
        super().__init__()
        self.encoder = Encoder(ch, mult, blocks, z, groups, attn_levels)
        self.decoder = Decoder(ch, mult, blocks, z, groups, attn_levels)
        self.regularization = DiagonalGaussianRegularizer()
        if quant:
            self.quant_conv, self.post_quant_conv = nn.Conv2d(2 * z, 2 * z, 1), nn.Conv2d(z, z, 1)
        self.eval()

    def encode(self, x):
        h = self.encoder(x)
        if hasattr(self, "quant_conv"):
            h = self.quant_conv(h)
        return self.regularization(h)

    def decode(self, z):
        if hasattr(self, "post_quant_conv"):
            z = self.post_quant_conv(z)
        return self.decoder(z)


def randomize(module, seed=0):
    """Weights that keep activations O(1) through the net (GroupNorm scales near one, biases small)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return module
