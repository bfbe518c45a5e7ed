"""Resizing latents without the blur or clipping of an image resize.

A latent is not an image: its values are unbounded (roughly -4..4, not 0..1), it may have any
number of channels (4 for SD1/SDXL, 16 for SD3/Flux), and the direction of a pixel's channel
vector carries as much meaning as its length. So everything here works in floating point on the
latent itself, never clamps (the overshoot of bicubic and Lanczos at an edge is what keeps it
sharp), and offers `bislerp`, which interpolates a pixel's channel vector by its length and its
direction separately instead of averaging vectors (averaging shortens them, which reads as a
loss of detail to the model).

Methods:

* ``nearest``, ``nearest-exact``, ``bilinear``, ``bicubic``, ``area``: torch's interpolate
  (align_corners=False). When a dimension shrinks, bilinear and bicubic widen their kernel by
  the scale factor (antialias) if asked. The nearest modes stay nearest: antialias does not
  apply to them. ``area`` averages the source pixels each output pixel covers; when enlarging
  it picks the covering source pixel, the same as nearest.
* ``bislerp``: separable (width, then height) spherical interpolation between the two bilinear
  neighbours, with the norm interpolated linearly. When a dimension shrinks by a factor of two or
  more and antialias is on, that dimension is first area-averaged by the whole factor, and
  bislerp covers the remaining factor below two, so every source pixel is seen.
* ``lanczos``: separable Lanczos-3 weight matrices, widened by the scale factor when shrinking
  (antialias, as PIL does), rows normalised to sum 1, image edges replicated.

Same-size dimensions are passed through untouched, so a scale of 1 returns the input exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .tiling import snap

METHODS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area", "bislerp", "lanczos")

# Lanczos lobes: 3 is the usual trade-off between sharpness and ringing (PIL's LANCZOS).
LANCZOS_LOBES = 3

# Below this norm a channel vector has no direction worth following.
_ZERO_NORM = 1e-12
# Within this of +-1 the angle between two directions is too poorly conditioned for slerp's
# sin(omega) denominator; a normalised linear blend is as accurate there.
_PARALLEL_DOT = 1e-4

_INTERPOLATE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
_ANTIALIASED_MODES = ("bilinear", "bicubic")  # the modes torch can antialias


def resample(x: torch.Tensor, height: int, width: int, method: str, *, antialias: bool = True) -> torch.Tensor:
    """x (B, C, H, W) resized to (B, C, height, width) with `method` (one of METHODS).

    Computed in float32 for half-precision inputs and returned in x's dtype and device. With
    antialias, shrinking dimensions are low-pass filtered first (bilinear, bicubic, bislerp,
    lanczos); nearest and nearest-exact always pick a single source pixel, and area always
    averages, whatever `antialias` says. Nothing is clamped."""
    if x.ndim != 4:
        raise ValueError(f"x must be a 4-D latent (B, C, H, W), got shape {tuple(x.shape)}")
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    _check_size(height, width)
    work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if method in _INTERPOLATE_MODES:
        out = _interpolate(work, height, width, method, antialias)
    elif method == "bislerp":
        out = _bislerp(work, height, width, antialias)
    else:
        out = _lanczos(work, height, width, antialias)
    return out.to(x.dtype)


def resample_video(x: torch.Tensor, height: int, width: int, method: str, antialias: bool = True) -> torch.Tensor:
    """x (B, C, T, H, W) resized frame by frame to (B, C, T, height, width); see resample."""
    if x.ndim != 5:
        raise ValueError(f"x must be a 5-D video latent (B, C, T, H, W), got shape {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    # Frames go into the batch; channels must stay in dim 1, bislerp's vectors live there.
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    out = resample(frames, height, width, method, antialias=antialias)
    return out.reshape(b, t, c, height, width).permute(0, 2, 1, 3, 4)


def resample_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A noise mask resized to (height, width) bilinearly, antialiased when shrinking, clamped to
    [0, 1] (it is a weight). Any leading layout, (H, W), (B, H, W) or (B, 1, H, W), is kept, and
    the source may be at latent or pixel resolution: only the last two dims change."""
    if mask.ndim < 2:
        raise ValueError(f"mask must have at least 2 dims (H, W), got shape {tuple(mask.shape)}")
    _check_size(height, width)
    out_dtype = mask.dtype if mask.is_floating_point() else torch.float32
    leading = mask.shape[:-2]
    planes = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    resized = _interpolate(planes, height, width, "bilinear", antialias=True)
    return resized.clamp(0.0, 1.0).reshape(*leading, height, width).to(out_dtype)


def scaled_size(height: int, width: int, *, scale: float | None = None, target_height: int = 0,
                target_width: int = 0, grid: int = 1) -> tuple[int, int]:
    """The (height, width) to resize a height x width latent to.

    By `scale` when given (the targets are then ignored), else by the targets, where a 0 target
    follows the other one keeping the aspect ratio. The result is rounded (halves up) to the
    nearest multiple of `grid`, and is at least one grid unit."""
    _check_size(height, width)
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    if scale is not None:
        if not scale > 0:  # also catches NaN
            raise ValueError(f"scale must be positive, got {scale}")
        new_h, new_w = height * scale, width * scale
    else:
        if target_height < 0:
            raise ValueError(f"target_height must not be negative, got {target_height}")
        if target_width < 0:
            raise ValueError(f"target_width must not be negative, got {target_width}")
        if target_height == 0 and target_width == 0:
            raise ValueError("target_height and target_width are both 0: give one of them, or a scale")
        new_h = target_height or target_width * height / width
        new_w = target_width or target_height * width / height
    return snap(new_h, grid), snap(new_w, grid)


def _check_size(height: int, width: int) -> None:
    if height < 1:
        raise ValueError(f"height must be positive, got {height}")
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")


# ---- torch's interpolate -------------------------------------------------------------------

def _interpolate(x: torch.Tensor, height: int, width: int, method: str, antialias: bool) -> torch.Tensor:
    if method not in _ANTIALIASED_MODES:
        return F.interpolate(x, size=(height, width), mode=method)
    shrinks_h, shrinks_w = height < x.shape[-2], width < x.shape[-1]
    if antialias and shrinks_h != shrinks_w:
        # torch's antialiased bicubic is PIL's (a = -0.5), its plain one a = -0.75: shrink one
        # dimension first so that the growing one gets the same kernel as in a plain upscale.
        if shrinks_h:
            x = F.interpolate(x, size=(height, x.shape[-1]), mode=method, align_corners=False, antialias=True)
        else:
            x = F.interpolate(x, size=(x.shape[-2], width), mode=method, align_corners=False, antialias=True)
        return F.interpolate(x, size=(height, width), mode=method, align_corners=False)
    return F.interpolate(x, size=(height, width), mode=method, align_corners=False,
                         antialias=antialias and shrinks_h)


def _source_positions(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """Where each output pixel's centre falls on the input grid (align_corners=False)."""
    i = torch.arange(size_out, dtype=torch.float64, device=device)
    return (i + 0.5) * (size_in / size_out) - 0.5


# ---- bislerp -------------------------------------------------------------------------------

def _bislerp(x: torch.Tensor, height: int, width: int, antialias: bool) -> torch.Tensor:
    x = _bislerp_last_dim(x, width, antialias)
    x = _bislerp_last_dim(x.transpose(-1, -2), height, antialias).transpose(-1, -2)
    return x.contiguous()


def _bislerp_last_dim(x: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """x (B, C, ..., L) resized to `size` along the last dim, slerping the dim-1 vectors."""
    length = x.shape[-1]
    if size == length:
        return x
    factor = length // size
    if antialias and factor >= 2:
        # Averaging whole blocks leaves a shrink below two for bislerp, which then skips no
        # source pixel. Averaging shortens vectors that disagree; that is the low-pass filter.
        length = round(length / factor)
        x = F.adaptive_avg_pool1d(x.reshape(-1, 1, x.shape[-1]), length).reshape(*x.shape[:-1], length)
        if size == length:
            return x
    pos = _source_positions(length, size, x.device).clamp(min=0.0)
    left = pos.floor().long().clamp(max=length - 1)
    right = (left + 1).clamp(max=length - 1)
    t = (pos - left).to(x.dtype)
    return _slerp(x.index_select(-1, left), x.index_select(-1, right), t)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per position, the vector (along dim 1) whose norm is lerp(|a|, |b|, t) and whose
    direction is slerp(a/|a|, b/|b|, t). t broadcasts against the last dim."""
    norm_a = a.norm(dim=1, keepdim=True)
    norm_b = b.norm(dim=1, keepdim=True)
    unit_a = _direction(a, norm_a)
    unit_b = _direction(b, norm_b)
    # A zero vector has no direction: follow the other one (both zero: the result is zero anyway).
    unit_a, unit_b = (torch.where(norm_a > _ZERO_NORM, unit_a, unit_b),
                      torch.where(norm_b > _ZERO_NORM, unit_b, unit_a))
    dot = (unit_a * unit_b).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    degenerate = dot.abs() > 1.0 - _PARALLEL_DOT
    omega = torch.acos(dot)
    sin_omega = torch.where(degenerate, torch.ones_like(omega), torch.sin(omega))
    weight_a = torch.where(degenerate, 1.0 - t, torch.sin((1.0 - t) * omega) / sin_omega)
    weight_b = torch.where(degenerate, t, torch.sin(t * omega) / sin_omega)
    blend = weight_a * unit_a + weight_b * unit_b
    blend_norm = blend.norm(dim=1, keepdim=True)
    # Renormalised so the result's norm is exactly the lerped one. Opposite directions blended
    # half and half cancel: take the nearer end's direction rather than none.
    nearer = torch.where(t < 0.5, unit_a, unit_b)
    direction = torch.where(blend_norm > _ZERO_NORM, blend / blend_norm.clamp(min=_ZERO_NORM), nearer)
    return direction * torch.lerp(norm_a, norm_b, t)


def _direction(v: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    return v / norm.clamp(min=_ZERO_NORM)


# ---- lanczos -------------------------------------------------------------------------------

# Output rows computed at a time: the passes' temporaries are a band's, not the picture's (a band
# of 256 rows of a 32768 px wide latent canvas is 128 MiB a channel group; the whole canvas's were
# 3x the output, 1 GiB at 32768x40960 px).
LANCZOS_BAND_ROWS = 256


def _lanczos(x: torch.Tensor, height: int, width: int, antialias: bool) -> torch.Tensor:
    # Gathering each output's few taps costs O(output x taps): a dense matrix would cost
    # O(output x input) per row, far too much for the latent of a gigapixel picture.
    # Gathering whole rows is a copy per row; gathering single values along a row is 2-3x slower
    # than transposing, gathering rows and transposing back, so both passes gather rows.
    # Band by band of output rows, each from the input rows its taps read: rows are independent
    # in the width pass and each output row reads its own taps in the height pass, so the bands
    # give the whole picture's values bit for bit.
    resize_rows, resize_columns = height != x.shape[-2], width != x.shape[-1]
    if resize_rows:
        rows, row_weights = _lanczos_taps(x.shape[-2], height, antialias=antialias, lobes=LANCZOS_LOBES)
    out = x.new_empty(*x.shape[:-2], height, width)
    for y0 in range(0, height, LANCZOS_BAND_ROWS):
        y1 = min(height, y0 + LANCZOS_BAND_ROWS)
        if resize_rows:
            first, last = int(rows[y0:y1].min()), int(rows[y0:y1].max())
            band = x[..., first:last + 1, :]
        else:
            band = x[..., y0:y1, :]
        if resize_columns:
            band = _lanczos_dim(band.transpose(-1, -2).contiguous(), width, -2, antialias).transpose(-1, -2)
        if resize_rows:
            band = _gather_rows(band.contiguous(), rows[y0:y1] - first, row_weights[y0:y1])
        out[..., y0:y1, :] = band
    return out


def _lanczos_dim(x: torch.Tensor, size: int, dim: int, antialias: bool) -> torch.Tensor:
    return _gather_rows(x, *_lanczos_taps(x.shape[dim], size, antialias=antialias, lobes=LANCZOS_LOBES), dim=dim)


def _gather_rows(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """Along dim, each output the weighted sum of the inputs index names: (out, taps) each."""
    index, weight = index.to(x.device), weight.to(x.device, x.dtype)
    along = [1] * x.ndim
    along[dim] = -1
    # One tap at a time: gathering all taps at once would hold (taps x output) values, 7x the
    # output when enlarging, and runs slower for the memory traffic.
    out = x.index_select(dim, index[:, 0]) * weight[:, 0].view(along)
    for k in range(1, index.shape[1]):
        out.addcmul_(x.index_select(dim, index[:, k]), weight[:, k].view(along))
    return out


def _lanczos_taps(size_in: int, size_out: int, *, antialias: bool, lobes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each output pixel, the input pixels it reads (out, taps) and their weights, summing to
    1 per row. Taps past the edge land on the edge pixel (replicate)."""
    # Shrinking, the kernel is stretched over `stretch` input pixels per lobe so it averages
    # what it skips instead of aliasing.
    stretch = max(size_in / size_out, 1.0) if antialias else 1.0
    support = lobes * stretch
    centre = _source_positions(size_in, size_out, torch.device("cpu"))
    offsets = torch.arange(-math.ceil(support), math.ceil(support) + 1, dtype=torch.float64)
    taps = centre.floor()[:, None] + offsets[None, :]  # (out, taps), may fall outside the input
    weights = _lanczos_kernel((taps - centre[:, None]) / stretch, lobes)
    weights /= weights.sum(dim=1, keepdim=True)
    return taps.long().clamp(0, size_in - 1), weights


def lanczos_taps(size_in: int, size_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What `resample(..., "lanczos")` reads along one axis: for each output pixel the input
    pixels (out, taps) and their weights, so a caller can resample any window of the output from
    the window of the input it needs (core.pixel_upscale). Equal sizes: the identity, one tap."""
    if size_in == size_out:
        return torch.arange(size_out).unsqueeze(1), torch.ones(size_out, 1, dtype=torch.float64)
    return _lanczos_taps(size_in, size_out, antialias=True, lobes=LANCZOS_LOBES)


def lanczos_matrix(size_in: int, size_out: int, *, antialias: bool = True, lobes: int = LANCZOS_LOBES,
                   dtype=torch.float32, device=None) -> torch.Tensor:
    """The (size_out, size_in) Lanczos resampling matrix (what `resample` applies, tap by tap):
    row i holds the weights of the input pixels that make output pixel i, summing to 1. The
    identity when the sizes match."""
    if size_in == size_out:
        return torch.eye(size_in, dtype=dtype, device=device)
    index, weight = _lanczos_taps(size_in, size_out, antialias=antialias, lobes=lobes)
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    matrix.scatter_add_(1, index, weight)
    return matrix.to(dtype=dtype, device=device)


def _lanczos_kernel(x: torch.Tensor, lobes: int) -> torch.Tensor:
    return torch.where(x.abs() < lobes, torch.sinc(x) * torch.sinc(x / lobes), torch.zeros_like(x))
