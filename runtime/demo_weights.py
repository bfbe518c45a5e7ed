"""The demo model's weight file: one safetensors file holding the VAE, the UNet and the text
encoder (fp16), with the architecture and the measured latent statistics in its metadata.

The text encoder uses ComfyUI's SD1 tokenizer, whose 49408-token vocabulary would make the token
embedding the largest tensor in the file although the captions use a few dozen tokens. Only the
rows of the tokens seen in training are stored; the others load as zeros.
"""
from __future__ import annotations

import json
import pathlib

import torch

_TOKEN_EMBEDDING = "token_embedding.weight"
_PARTS = ("vae.", "unet.", "clip.")


def pack(vae_sd: dict, unet_sd: dict, clip_sd: dict, used_tokens: list[int]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for prefix, sd in zip(_PARTS, (vae_sd, unet_sd, clip_sd)):
        for key, value in sd.items():
            if key.endswith(_TOKEN_EMBEDDING):
                ids = torch.tensor(used_tokens, dtype=torch.int32)
                out["clip_token_ids"] = ids
                out["clip_token_rows"] = value[ids.long()].to(torch.float16).contiguous()
                out[f"{prefix}{key}.shape"] = torch.tensor(list(value.shape), dtype=torch.int64)
                continue
            value = value.detach()
            out[prefix + key] = (value.to(torch.float16) if value.is_floating_point() else value).contiguous()
    return out


def load(path: pathlib.Path) -> tuple[dict, dict, dict, dict]:
    """(metadata, vae state dict, unet state dict, text encoder state dict), all float32."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["expanse_demo"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    parts: dict[str, dict] = {p: {} for p in _PARTS}
    for key, value in tensors.items():
        if key.endswith(".shape"):
            prefix = next(p for p in _PARTS if key.startswith(p))
            embedding = torch.zeros(*value.tolist(), dtype=torch.float32)
            embedding[tensors["clip_token_ids"].long()] = tensors["clip_token_rows"].float()
            parts[prefix][key[len(prefix):-len(".shape")]] = embedding
            continue
        prefix = next((p for p in _PARTS if key.startswith(p)), None)
        if prefix is not None:
            parts[prefix][key[len(prefix):]] = value.float() if value.is_floating_point() else value
    return meta, parts["vae."], parts["unet."], parts["clip."]
