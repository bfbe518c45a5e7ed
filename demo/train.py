"""Trains Expanse's demo model from scratch on procedurally drawn, captioned scenes (demo/scenes.py).

    .venv/bin/python demo/train.py            # full run with the default schedule
    .venv/bin/python demo/train.py --quick    # a few steps per stage: checks the pipeline in a minute
    .venv/bin/python demo/train.py --device cuda

Stages, each checkpointed to --workdir so an interrupted run resumes where it stopped:
  1. vae     ComfyUI's AutoencoderKL (small widths) on random scenes: L1 + MSE, a small KL term
  2. stats   the latent scale factor (1 / std of the latents) and a latent-to-RGB map for previews
  3. latents a fixed training set of scenes and captions, encoded once
  4. unet    ComfyUI's UNetModel and CLIP text transformer, trained together (eps prediction,
             min-SNR weighting, 10% empty captions for classifier-free guidance, EMA of the weights)
  5. export  demo/weights/expanse-demo.safetensors (fp16, configs and statistics in its metadata)

Everything is derived from --seed: the same seed and stage sizes give the same weights on the same
machine and torch build. Measured on 2 CPU cores: the VAE stage runs about 2.3 steps/s (64 px, batch 8).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import comfy_server  # noqa: E402

WEIGHTS = ROOT / "demo" / "weights" / "expanse-demo.safetensors"


def stage_seed(seed: int, stage: str, step: int) -> list[int]:
    return [seed, sum(map(ord, stage)), step]


def init_weights(module: torch.nn.Module, seed: int) -> None:
    """ComfyUI's layers are created uninitialised: scaled normal weights, unit norm scales, zero biases."""
    g = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, norms):
                if m.weight is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, torch.nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.02)


def zero_residual_branches(module: torch.nn.Module, names: tuple[str, ...]) -> None:
    """Zeroes the last layer of every residual branch (as SD's own code does with zero_module):
    each block starts as the identity, which trains far faster than random residuals."""
    with torch.no_grad():
        for name, m in module.named_modules():
            if name.endswith(names) and isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()


def scene_batch(seed: int, stage: str, step: int, batch: int, size: int):
    from expanse.demo import scenes

    rng = np.random.default_rng(stage_seed(seed, stage, step))
    images, captions = zip(*(scenes.sample(rng, size, size) for _ in range(batch)))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x * 2 - 1, list(captions)


class Checkpoint:
    def __init__(self, path: pathlib.Path):
        self.path = path

    def load(self):
        return torch.load(self.path, weights_only=False) if self.path.exists() else None

    def restore(self, parts: dict) -> tuple[int, dict]:
        """Loads each saved part into its object (a module or an optimizer); returns the step
        reached and the saved state, (0, {}) when there is nothing to resume."""
        state = self.load()
        if not state:
            return 0, {}
        for name, obj in parts.items():
            obj.load_state_dict(state[name])
        return state["step"], state

    def save(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)


def progress(stage: str, step: int, total: int, started: float, first: int, **values) -> None:
    done = step - first
    rate = done / max(1e-6, time.monotonic() - started)
    eta = (total - step) / max(rate, 1e-6)
    shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
    print(f"[{stage}] {step}/{total} {shown} ({rate:.2f} it/s, {eta / 60:.1f} min left)", flush=True)


# --- stage 1: the VAE --------------------------------------------------------------------------

def train_vae(args, arch, device) -> torch.nn.Module:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(ddconfig=dict(arch.VAE_DDCONFIG), embed_dim=arch.VAE_EMBED_DIM).to(device)
    init_weights(vae, args.seed)
    zero_residual_branches(vae, (".conv2", ".proj_out"))
    with torch.no_grad():  # start with a nearly deterministic posterior (std 0.02, not 1): at std 1
        vae.quant_conv.bias[arch.VAE_EMBED_DIM:].fill_(-8.0)  # the decoder first sees mostly noise
    vae.to(memory_format=torch.channels_last)  # oneDNN's layout: about 1.4x faster steps on a CPU
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    ckpt = Checkpoint(args.workdir / "vae.pt")
    step, _ = ckpt.restore({"model": vae, "opt": opt})
    total = args.vae_steps
    vae.train()
    started, first = time.monotonic(), step
    while step < total:
        x, _ = scene_batch(args.seed, "vae", step, args.vae_batch, args.vae_size)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        lr = args.vae_lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / total))
        for group in opt.param_groups:
            group["lr"] = lr
        moments = vae.quant_conv(vae.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        eps = np.random.default_rng(stage_seed(args.seed, "vae-noise", step)).standard_normal(mean.shape)
        z = mean + torch.exp(0.5 * logvar) * torch.from_numpy(eps.astype(np.float32)).to(device)
        recon = vae.decode(z)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == total:
            psnr = -10 * math.log10(F.mse_loss((recon.detach() + 1) / 2, (x + 1) / 2).item() + 1e-12)
            progress("vae", step, total, started, first, loss=loss.item(), psnr=psnr, kl=kl.item())
        if step % args.checkpoint_every == 0 or step == total:
            ckpt.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step})
    vae.eval()
    return vae


# --- stage 2 and 3: latent statistics and the latent training set -----------------------------

@torch.no_grad()
def encode(vae, x):
    return vae.encode(x)  # the Gaussian's mode, as ComfyUI's VAE Encode returns


@torch.no_grad()
def latent_stats(args, vae, device) -> dict:
    x, _ = scene_batch(args.seed, "stats", 0, 64, args.unet_size * 8)
    z = torch.cat([encode(vae, part.to(device)) for part in x.split(16)]).cpu()
    scale = 1.0 / z.std().item()
    # Previews: a least-squares map from a latent pixel (scaled as the model sees it) to the mean
    # RGB of its 8x8 block, as ComfyUI's latent_rgb_factors.
    rgb = F.avg_pool2d((x + 1) / 2, 8)
    a = torch.cat([(z * scale).permute(0, 2, 3, 1).reshape(-1, z.shape[1]), torch.ones(z[:, :1].numel(), 1)], 1)
    b = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(a, b).solution
    return {"scale_factor": scale, "latent_rgb_factors": solution[:-1].tolist(),
            "latent_rgb_factors_bias": solution[-1].tolist()}


@torch.no_grad()
def latent_dataset(args, vae, device):
    path = args.workdir / "latents.pt"
    if path.exists():
        return torch.load(path)
    latents, captions = [], []
    count = args.dataset_size
    for i in range(0, count, 64):
        x, caps = scene_batch(args.seed, "dataset", i, min(64, count - i), args.unet_size * 8)
        latents.append(torch.cat([encode(vae, p.to(device)).cpu() for p in x.split(16)]))
        captions += caps
        if (i // 64) % 20 == 0:
            print(f"[latents] {i + len(caps)}/{count}", flush=True)
    data = {"latents": torch.cat(latents).to(torch.float16), "captions": captions}
    torch.save(data, path)
    return data


# --- stage 4: UNet and text encoder ------------------------------------------------------------

def _residual_forward(layer, x, mask=None, optimized_attention=None):
    # ComfyUI's CLIPLayer.forward adds its residuals in place (x += ...), which autograd cannot
    # differentiate through (LayerNorm saved the x being overwritten). Same arithmetic, out of place.
    x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
    return x + layer.mlp(layer.layer_norm2(x))


def make_trainable(text) -> None:
    """Lets autograd through this text encoder instance only; the exported weights run under
    ComfyUI's own, unchanged forward at inference."""
    for layer in text.transformer.text_model.encoder.layers:
        layer.forward = types.MethodType(_residual_forward, layer)


def train_unet(args, arch, stats, data, device):
    from expanse.nodes import small_models

    fmt = small_models.latent_format(4, stats["scale_factor"])
    patcher = small_models.unet_patcher(arch.UNET_CONFIG, fmt, arch.PREDICTION, device=device)
    model = patcher.model
    unet = model.diffusion_model
    init_weights(unet, args.seed + 1)
    # Residual branches and the output convolution start at zero, as in SD: the first predictions are zero.
    zero_residual_branches(unet, (".out_layers.3", ".proj_out", "out.2"))
    unet.to(memory_format=torch.channels_last)
    clip = small_models.text_encoder(arch.CLIP_CONFIG, device=device)
    text = clip.cond_stage_model.clip_l
    init_weights(text.transformer, args.seed + 2)
    make_trainable(text)
    for p in list(unet.parameters()) + list(text.parameters()):
        p.requires_grad_(True)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    ckpt = Checkpoint(args.workdir / "unet.pt")
    step, state = ckpt.restore({"unet": unet, "text": text, "opt": opt})
    ema = state.get("ema", ema)

    token_cache: dict[str, list[int]] = {}

    def tokens(caption: str) -> list[int]:
        if caption not in token_cache:
            token_cache[caption] = [t for t, _ in clip.tokenize(caption)["l"][0]]
        return token_cache[caption]

    sampling = model.model_sampling
    latents, captions = data["latents"], data["captions"]
    total = args.unet_steps
    unet.train()
    text.train()
    started, first = time.monotonic(), step
    while step < total:
        rng = np.random.default_rng(stage_seed(args.seed, "unet", step))
        idx = rng.integers(0, len(latents), args.unet_batch)
        x0 = fmt.process_in(latents[idx].float())
        if rng.random() < 0.5:
            x0 = x0.flip(-1)  # landscapes and patterns read the same mirrored
        caps = ["" if rng.random() < 0.1 else captions[i] for i in idx]
        t = torch.from_numpy(rng.integers(0, 1000, args.unet_batch))
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        sigma = sampling.sigmas[t].view(-1, 1, 1, 1)
        x_in = (x0 + sigma * noise) / torch.sqrt(sigma ** 2 + 1)
        warm = min(1.0, (step + 1) / 200)
        for group in opt.param_groups:
            group["lr"] = args.unet_lr * warm * 0.5 * (1 + math.cos(math.pi * step / total))
        context, _ = text([tokens(c) for c in caps])
        x_in = x_in.to(device).contiguous(memory_format=torch.channels_last)
        pred = unet(x_in, t.float().to(device), context=context.to(device))
        snr = 1.0 / sigma.view(-1) ** 2
        weight = (torch.clamp(snr, max=5.0) / snr).to(device)
        loss = (weight * ((pred.float() - noise.to(device)) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - decay)
        step += 1
        if step % args.log_every == 0 or step == total:
            progress("unet", step, total, started, first, loss=loss.item())
        if step % args.checkpoint_every == 0 or step == total:
            ckpt.save({"unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(),
                       "ema": ema, "step": step})
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    # Every token the training captions contain (not just those drawn so far: a resumed run
    # must export the same file).
    used_tokens = sorted({t for caption in set(captions) | {""} for t in tokens(caption)})
    return unet, clip.cond_stage_model, used_tokens


# --- stage 5: export ---------------------------------------------------------------------------

def export(args, arch, vae, stats, unet, text_model, used_tokens) -> None:
    from safetensors.torch import save_file

    from expanse.nodes import demo_weights

    tensors = demo_weights.pack(vae.state_dict(), unet.state_dict(), text_model.state_dict(), used_tokens)
    meta = {"vae_ddconfig": arch.VAE_DDCONFIG, "vae_embed_dim": arch.VAE_EMBED_DIM, "unet_config": arch.UNET_CONFIG,
            "clip_config": arch.CLIP_CONFIG, "prediction": arch.PREDICTION, **stats,
            "training": {"seed": args.seed, "vae_steps": args.vae_steps, "vae_batch": args.vae_batch,
                         "vae_size": args.vae_size, "unet_steps": args.unet_steps, "unet_batch": args.unet_batch,
                         "unet_size": args.unet_size, "dataset_size": args.dataset_size}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"expanse_demo": json.dumps(meta)})
    print(f"[export] wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", type=pathlib.Path, help="checkpoints (default .cache/demo-train)")
    p.add_argument("--out", type=pathlib.Path, help=f"the weight file (default {WEIGHTS.relative_to(ROOT)})")
    p.add_argument("--vae-steps", type=int, default=1600)
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-size", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-6)
    p.add_argument("--dataset-size", type=int, default=8000)
    p.add_argument("--unet-steps", type=int, default=3000)
    p.add_argument("--unet-batch", type=int, default=24)
    p.add_argument("--unet-size", type=int, default=16, help="latent side during UNet training")
    p.add_argument("--unet-lr", type=float, default=5e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--quick", action="store_true", help="a few steps of every stage, into .cache/demo-quick")
    args = p.parse_args()
    if args.quick:
        args.vae_steps, args.unet_steps, args.dataset_size, args.log_every = 4, 4, 128, 2
    default_dir = ROOT / ".cache" / ("demo-quick" if args.quick else "demo-train")
    args.workdir = args.workdir or default_dir
    args.out = args.out or (args.workdir / "expanse-demo-quick.safetensors" if args.quick else WEIGHTS)
    args.workdir.mkdir(parents=True, exist_ok=True)

    comfy_server.import_host(cpu=args.device == "cpu")
    comfy_server.register_pack()
    from expanse.demo import architecture as arch

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    vae = train_vae(args, arch, device)
    stats = latent_stats(args, vae, device)
    print(f"[stats] scale factor {stats['scale_factor']:.4f}", flush=True)
    data = latent_dataset(args, vae, device)
    unet, text_model, used_tokens = train_unet(args, arch, stats, data, device)
    export(args, arch, vae, stats, unet, text_model, used_tokens)


if __name__ == "__main__":
    main()
