"""Trains Expanse's demo model from scratch on procedurally drawn, captioned scenes (demo/scenes.py).

    .venv/bin/python demo/train.py            # full run with the default schedule (the shipped file's)
    .venv/bin/python demo/train.py --schedule hour   # about an hour on 2 CPU cores, a weaker VAE
    .venv/bin/python demo/train.py --quick    # a few steps per stage: checks the pipeline in a minute
    .venv/bin/python demo/train.py --device cuda

Stages, each checkpointed to --workdir so an interrupted run resumes where it stopped:
  1. vae     ComfyUI's AutoencoderKL (small widths) on crops of random scenes: L1 + MSE, a small KL term
     vae-fit the whole VAE on larger crops (128-256 px) at a lower rate, so it works at picture sizes
     vae-decoder  the decoder alone on 256-384 px crops, the encoder (and so the latents) frozen
     vae-joint    encoder and decoder on whole 256-320 px scenes, the latents anchored near stage 1b's
  2. stats   the latent scale factor (1 / std of the latents) and a latent-to-RGB map for previews
  3. latents a fixed training set of scenes and captions, encoded once
  4. unet    ComfyUI's UNetModel and CLIP text transformer, trained together (eps prediction,
             min-SNR weighting, 10% empty captions for classifier-free guidance, EMA of the weights)
  5. export  demo/weights/expanse-demo.safetensors (fp16, configs and statistics in its metadata)

Everything is derived from --seed: the same seed and stage sizes give the same weights on the same
machine and torch build. Measured on 2 idle CPU cores (the hour schedule, 67 min in all): stage 1 runs
1.46 steps/s, stage 1d 0.30, the UNet 2.15 at 128 px and 1.5 at 256 px.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import time
import types
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[1]

WEIGHTS = ROOT / "demo" / "weights" / "expanse-demo.safetensors"
# The command-line settings that decide the weights, recorded in the file's metadata.
TRAINING_SETTINGS = ("seed", "schedule", "vae_steps", "vae_batch", "vae_size", "vae_render", "vae_lr", "vae_kl",
                     "fit_steps", "fit_batch", "fit_lr", "dec_steps", "dec_batch", "dec_lr",
                     "joint_steps", "joint_batch", "joint_lr", "joint_loss", "joint_anchor",
                     "dataset_size", "unet_steps", "unet_batch", "unet_size", "fine_dataset_size",
                     "unet_fine_steps", "unet_fine_batch", "unet_fine_size", "unet_lr", "ema")


# --schedule hour: the stages cut to about an hour on the 2-core CPU (the full schedule takes
# about 127 minutes): a shorter stage 1, no 1b or 1c, and stage 1d on a PSNR-shaped loss with the
# encoder free (the UNet is trained after it, on its latents). Flags given explicitly still win.
HOUR_SCHEDULE = {"vae_steps": 1200, "fit_steps": 0, "dec_steps": 0, "joint_steps": 400, "joint_lr": 3e-4,
                 "joint_loss": "log-mse", "joint_anchor": 0.0}


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
    return _to_model_range(images), list(captions)


def crop_batch(seed: int, step: int, batch: int, crop: int, render: tuple[int, int]):
    """Random crop x crop windows of scenes drawn at random sizes in render: the VAE learns the
    scale at which pictures are decoded (a check or a ridge spans many latent pixels), not whole
    scenes squeezed into a crop's size, where every feature is a pixel or two."""
    from expanse.demo import scenes

    rng = np.random.default_rng(stage_seed(seed, "vae", step))
    images = []
    for _ in range(batch):
        size = int(rng.integers(render[0], render[1] + 1))
        image, _ = scenes.sample(rng, size, size)
        y, x = rng.integers(0, size - crop + 1, 2)
        images.append(image[y:y + crop, x:x + crop])
    return _to_model_range(images)


def _to_model_range(images) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x * 2 - 1


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

def vae_loss(vae, x, noise_seed, kl_weight):
    """L1 + MSE of the reconstruction from a posterior sample, plus a small KL term: (loss, recon, kl)."""
    moments = vae.quant_conv(vae.encoder(x))
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)
    eps = np.random.default_rng(noise_seed).standard_normal(mean.shape)
    z = mean + torch.exp(0.5 * logvar) * torch.from_numpy(eps.astype(np.float32)).to(x.device)
    recon = vae.decode(z)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    return F.l1_loss(recon, x) + F.mse_loss(recon, x) + kl_weight * kl, recon, kl


@dataclasses.dataclass
class VaeStage:
    """One stage of VAE training: its checkpoint and log name, length, peak learning rate and
    warm-up, the parameters it trains, the images of each step and the loss on them."""
    name: str
    steps: int
    lr: float
    warmup: int
    params: list
    images: Callable[[int], torch.Tensor]
    loss: Callable[[torch.nn.Module, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def run_vae_stage(args, vae, stage: VaeStage, device) -> torch.nn.Module:
    """AdamW with a cosine schedule over stage.steps, checkpointed every --checkpoint-every steps."""
    opt = torch.optim.AdamW(stage.params, lr=stage.lr, weight_decay=0.0)
    ckpt = Checkpoint(args.workdir / f"{stage.name}.pt")
    step, _ = ckpt.restore({"model": vae, "opt": opt})
    vae.train()
    started, first = time.monotonic(), step
    while step < stage.steps:
        x = stage.images(step).to(device).contiguous(memory_format=torch.channels_last)
        warm = min(1.0, (step + 1) / stage.warmup) if stage.warmup else 1.0
        for group in opt.param_groups:
            group["lr"] = stage.lr * warm * 0.5 * (1 + math.cos(math.pi * step / stage.steps))
        loss, recon = stage.loss(vae, x, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(stage.params, 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == stage.steps:
            psnr = -10 * math.log10(F.mse_loss((recon.detach() + 1) / 2, (x + 1) / 2).item() + 1e-12)
            progress(stage.name, step, stage.steps, started, first, loss=loss.item(), psnr=psnr, side=x.shape[-1])
        if step % args.checkpoint_every == 0 or step == stage.steps:
            ckpt.save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step})
    vae.eval()
    return vae


def new_vae(arch, device) -> torch.nn.Module:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(ddconfig=dict(arch.VAE_DDCONFIG), embed_dim=arch.VAE_EMBED_DIM).to(device)
    vae.to(memory_format=torch.channels_last)  # oneDNN's layout: about 1.4x faster steps on a CPU
    return vae


def train_vae(args, arch, device) -> torch.nn.Module:
    """Stage 1: the whole VAE on small crops at a high rate."""
    vae = new_vae(arch, device)
    init_weights(vae, args.seed)
    zero_residual_branches(vae, (".conv2", ".proj_out"))
    with torch.no_grad():  # start with a nearly deterministic posterior (std 0.02, not 1): at std 1
        vae.quant_conv.bias[arch.VAE_EMBED_DIM:].fill_(-8.0)  # the decoder first sees mostly noise
    return run_vae_stage(args, vae, VaeStage(
        "vae", args.vae_steps, args.vae_lr, 100, list(vae.parameters()),
        lambda step: crop_batch(args.seed, step, args.vae_batch, args.vae_size, args.vae_render),
        lambda model, x, step: vae_loss(model, x, stage_seed(args.seed, "vae-noise", step), args.vae_kl)[:2]), device)


# Stage 1b's crop sides, in turn.
FIT_CROPS = (128, 192, 256)


def fit_vae_sizes(args, vae, device) -> torch.nn.Module:
    """Stage 1b: the whole VAE on larger crops (FIT_CROPS in turn) at a lower learning rate.

    Stage 1's small crops are cheap, but they show the mid-block attention only 144 latent pixels
    at a time, and an attention fitted to that does not carry over to the sizes pictures are
    decoded at (measured after stage 1 alone: 28 dB on 96 px crops, 18 dB on whole 256 px
    scenes). Ahead of the latent statistics, so the latents come from the final encoder."""
    def images(step):
        crop = FIT_CROPS[step % len(FIT_CROPS)]
        return crop_batch(args.seed + 1, step, args.fit_batch, crop, (max(crop, args.vae_render[0]), args.vae_render[1]))

    return run_vae_stage(args, vae, VaeStage(
        "vae-fit", args.fit_steps, args.fit_lr, 0, list(vae.parameters()), images,
        lambda model, x, step: vae_loss(model, x, stage_seed(args.seed, "vae-fit-noise", step), args.vae_kl)[:2]), device)


# Stage 1c's crop sides, in turn: the sizes the demo's pictures and tiles are decoded at.
DECODER_CROPS = (256, 320, 384)


def decoder_loss(vae, x, step):
    """L1 + MSE of decoding the frozen encoder's mode: the latents, and so the UNet trained on
    them, are unchanged by this stage."""
    with torch.no_grad():
        z = encode(vae, x)
    recon = vae.decode(z)
    return F.l1_loss(recon, x) + F.mse_loss(recon, x), recon


def fit_decoder(args, vae, device) -> torch.nn.Module:
    """Stage 1c: the decoder alone on picture-sized crops (DECODER_CROPS in turn).

    Stage 1b left whole 256 px scenes at about 26 dB; the decoder gains the rest at these sizes.
    With the encoder frozen the latents do not move, so this stage could as well run after the
    UNet (it does, with --decoder-from, on an exported file)."""
    def images(step):
        crop = DECODER_CROPS[step % len(DECODER_CROPS)]
        return crop_batch(args.seed + 2, step, args.dec_batch, crop, (crop, max(crop, args.vae_render[1])))

    params = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
    return run_vae_stage(args, vae, VaeStage("vae-decoder", args.dec_steps, args.dec_lr, 20, params, images,
                                             decoder_loss), device)


def log_mse_loss(recon, x):
    """The mean over pictures of log10 of each one's squared error on the 0..1 scale (clamped as a
    decoded picture is): minus a tenth of the mean PSNR the model card reports. Each picture's error
    counts relative to itself, so smooth landscapes keep improving beside hard-edged patterns,
    where L1 + MSE spends itself on edges it can only blur."""
    per_picture = ((recon.clamp(-1, 1) - x) ** 2).mean(dim=(1, 2, 3)) / 4
    return torch.log10(per_picture + 1e-6).mean()


# Stage 1d's reconstruction losses: the one every run used up to 27.47 dB, and the PSNR-shaped one
# the shipped file's last two refits used (27.47 -> 28.23 dB).
JOINT_LOSSES = {"l1-mse": lambda recon, x: F.l1_loss(recon, x) + F.mse_loss(recon, x), "log-mse": log_mse_loss}

# Stage 1d's scene sides, in turn: whole scenes at the size reconstruction is judged at, and larger.
JOINT_SIDES = (256, 256, 320)


def fit_joint(args, vae, device) -> torch.nn.Module:
    """Stage 1d: encoder and decoder together on whole scenes, the latents held (with
    --joint-anchor > 0) near the ones the UNet was or will be trained on.

    A whole 256 px scene carries more detail than the decoder alone can recover from stage 1b's
    latents (1c stops near 26.5 dB); letting the encoder move lets the latent keep more of it. The
    anchor term, the latents' mean squared change over their variance, keeps an exported file's UNet
    valid; the hour schedule sets it to 0, as its UNet is trained afterwards on the new latents."""
    import copy

    # Without an anchor (a from-scratch run, where the UNet is trained after this stage) the
    # frozen copy's encode would only cost time.
    frozen = copy.deepcopy(vae).eval().requires_grad_(False) if args.joint_anchor else None

    def images(step):
        side = JOINT_SIDES[step % len(JOINT_SIDES)]
        return scene_batch(args.seed + 3, "vae-joint", step, args.joint_batch, side)[0]

    def loss(model, x, step):
        z = model.encode(x)
        recon = model.decode(z)
        total = JOINT_LOSSES[args.joint_loss](recon, x)
        if frozen is not None:
            before = encode(frozen, x)
            drift = F.mse_loss(z, before) / before.var()
            if step % args.log_every == 0:
                print(f"[vae-joint] latent drift {drift.item():.4f} of the latent variance", flush=True)
            total = total + args.joint_anchor * drift
        return total, recon

    return run_vae_stage(args, vae, VaeStage("vae-joint", args.joint_steps, args.joint_lr, 20,
                                             list(vae.parameters()), images, loss), device)


# --- stage 2 and 3: latent statistics and the latent training set -----------------------------

@torch.no_grad()
def encode(vae, x):
    return vae.encode(x)  # the Gaussian's mode, as ComfyUI's VAE Encode returns


@torch.no_grad()
def latent_stats(args, vae, device) -> dict:
    x, _ = scene_batch(args.seed, "stats", 0, 64, args.unet_fine_size * 8)
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
def latent_dataset(args, vae, device, count: int, side: int):
    """count scenes drawn at side * 8 pixels and their captions, encoded once (the UNet stage
    draws from these many times)."""
    path = args.workdir / f"latents-{side}.pt"
    if path.exists():
        return torch.load(path)
    latents, captions = [], []
    for i in range(0, count, 64):
        x, caps = scene_batch(args.seed, f"dataset-{side}", i, min(64, count - i), side * 8)
        latents.append(torch.cat([encode(vae, p.to(device)).cpu() for p in x.split(16)]))
        captions += caps
        if (i // 64) % 20 == 0:
            print(f"[latents {side}x{side}] {i + len(caps)}/{count}", flush=True)
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


@dataclasses.dataclass
class Phase:
    """A stretch of UNet training: its latent training set, steps and batch size."""
    data: dict
    steps: int
    batch: int


def current_phase(phases: list[Phase], step: int) -> Phase:
    for phase in phases:
        if step < phase.steps:
            return phase
        step -= phase.steps
    return phases[-1]


def train_unet(args, arch, stats, phases: list[Phase], device):
    from expanse.runtime import small_models

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
    total = sum(phase.steps for phase in phases)
    unet.train()
    text.train()
    started, first = time.monotonic(), step
    while step < total:
        phase = current_phase(phases, step)
        latents, captions = phase.data["latents"], phase.data["captions"]
        rng = np.random.default_rng(stage_seed(args.seed, "unet", step))
        idx = rng.integers(0, len(latents), phase.batch)
        x0 = fmt.process_in(latents[idx].float())
        if rng.random() < 0.5:
            x0 = x0.flip(-1)  # landscapes and patterns read the same mirrored
        caps = ["" if rng.random() < 0.1 else captions[i] for i in idx]
        t = torch.from_numpy(rng.integers(0, 1000, phase.batch))
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
    all_captions = {c for phase in phases for c in phase.data["captions"]} | {""}
    used_tokens = sorted({t for caption in all_captions for t in tokens(caption)})
    return unet, clip.cond_stage_model, used_tokens


# --- stage 5: export ---------------------------------------------------------------------------

def export(args, arch, vae, stats, unet, text_model, used_tokens) -> None:
    from safetensors.torch import save_file

    from expanse.runtime import demo_weights

    tensors = demo_weights.pack(vae.state_dict(), unet.state_dict(), text_model.state_dict(), used_tokens)
    meta = {"vae_ddconfig": arch.VAE_DDCONFIG, "vae_embed_dim": arch.VAE_EMBED_DIM, "unet_config": arch.UNET_CONFIG,
            "clip_config": arch.CLIP_CONFIG, "prediction": arch.PREDICTION, **stats,
            "training": {name: getattr(args, name) for name in TRAINING_SETTINGS}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"expanse_demo": json.dumps(meta)})
    print(f"[export] wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


def refit_vae_of_file(args, arch, device, source: pathlib.Path, fit, settings: tuple[str, ...]) -> None:
    """A VAE stage (`fit`: 1c or 1d) on the VAE of an exported file; every other tensor is copied
    through unchanged, and the stage's settings are added to the file's training record."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from expanse.runtime import demo_weights

    meta, vae_sd, _, _ = demo_weights.load(source)
    vae = new_vae(arch, device)
    vae.load_state_dict(vae_sd)
    vae = fit(args, vae, device)
    with safe_open(str(source), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors.update({k: v for k, v in demo_weights.pack(vae.state_dict(), {}, {}, []).items()})
    settings = {name: getattr(args, name) for name in settings}
    meta["training"].update(settings)
    # Every refit in order, so the file says how it was made even after several.
    meta["training"].setdefault("refits", []).append({"stage": fit.__name__, "seed": args.seed, **settings})
    save_file(tensors, str(args.out), metadata={"expanse_demo": json.dumps(meta)})
    print(f"[export] wrote {args.out} with the refitted VAE ({fit.__name__})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", choices=("full", "hour"), default="full",
                   help="full: the shipped file's stages (about 2 h on 2 CPU cores); hour: about 1 h, a weaker VAE")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", type=pathlib.Path, help="checkpoints (default .cache/demo-train)")
    p.add_argument("--out", type=pathlib.Path, help=f"the weight file (default {WEIGHTS.relative_to(ROOT)})")
    p.add_argument("--vae-steps", type=int, default=1800)
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-size", type=int, default=96, help="side of the training crops")
    p.add_argument("--vae-render", type=int, nargs=2, default=(192, 512), metavar=("MIN", "MAX"),
                   help="the crops come from scenes drawn at a random side in this range")
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=1e-6)
    p.add_argument("--fit-steps", type=int, default=300, help="stage 1b: the VAE on larger crops")
    p.add_argument("--fit-batch", type=int, default=4)
    p.add_argument("--fit-lr", type=float, default=2e-4)
    p.add_argument("--dec-steps", type=int, default=300, help="stage 1c: the decoder alone on 256-384 px crops")
    p.add_argument("--dec-batch", type=int, default=4)
    p.add_argument("--dec-lr", type=float, default=2e-4)
    p.add_argument("--decoder-from", type=pathlib.Path, metavar="FILE",
                   help="run only stage 1c on an exported weight file and write the result to --out")
    p.add_argument("--joint-steps", type=int, default=300,
                   help="stage 1d: encoder and decoder on whole scenes, latents anchored (with --joint-from)")
    p.add_argument("--joint-batch", type=int, default=4)
    p.add_argument("--joint-lr", type=float, default=1e-4)
    p.add_argument("--joint-loss", choices=sorted(JOINT_LOSSES), default="l1-mse",
                   help="stage 1d's reconstruction loss: L1 + MSE, or the mean log squared error per picture (PSNR)")
    p.add_argument("--joint-anchor", type=float, default=1.0, help="weight of the latent-drift term")
    p.add_argument("--joint-from", type=pathlib.Path, metavar="FILE",
                   help="run only stage 1d on an exported weight file and write the result to --out")
    p.add_argument("--dataset-size", type=int, default=8000)
    p.add_argument("--unet-steps", type=int, default=2000)
    p.add_argument("--unet-batch", type=int, default=24)
    p.add_argument("--unet-size", type=int, default=16, help="latent side during the first UNet phase")
    p.add_argument("--fine-dataset-size", type=int, default=3000)
    p.add_argument("--unet-fine-steps", type=int, default=800)
    p.add_argument("--unet-fine-batch", type=int, default=12)
    p.add_argument("--unet-fine-size", type=int, default=32, help="latent side during the second UNet phase")
    p.add_argument("--unet-lr", type=float, default=5e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--quick", action="store_true", help="a few steps of every stage, into .cache/demo-quick")
    if p.parse_known_args()[0].schedule == "hour":
        p.set_defaults(**HOUR_SCHEDULE)
    args = p.parse_args()
    if args.schedule == "hour" and (args.joint_from or args.decoder_from):
        # Under the preset a joint refit would free the encoder (moving the latents under the
        # file's trained UNet) and a decoder refit would run for 0 steps.
        p.error("--schedule hour trains from scratch; --joint-from and --decoder-from refit an exported "
                "file's VAE with the full schedule's settings (leave --schedule out)")
    if args.quick:  # a schedule's skipped stages stay skipped
        args.vae_steps, args.unet_steps, args.unet_fine_steps, args.log_every = 4, 4, 2, 2
        args.fit_steps, args.dec_steps, args.joint_steps = (min(n, 3) for n in
                                                            (args.fit_steps, args.dec_steps, args.joint_steps))
        args.dataset_size, args.fine_dataset_size = 128, 64
    default_dir = ROOT / ".cache" / ("demo-quick" if args.quick else "demo-train")
    args.workdir = args.workdir or default_dir
    args.out = args.out or (args.workdir / "expanse-demo-quick.safetensors" if args.quick else WEIGHTS)
    args.workdir.mkdir(parents=True, exist_ok=True)

    from expanse_harness import host

    host.import_host(cpu=args.device == "cpu")
    host.register_pack()
    from expanse.demo import architecture as arch

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if args.decoder_from:
        return refit_vae_of_file(args, arch, device, args.decoder_from, fit_decoder, ("dec_steps", "dec_batch", "dec_lr"))
    if args.joint_from:
        return refit_vae_of_file(args, arch, device, args.joint_from, fit_joint,
                                 tuple(name for name in TRAINING_SETTINGS if name.startswith("joint_")))
    vae = train_vae(args, arch, device)
    vae = fit_vae_sizes(args, vae, device)
    vae = fit_decoder(args, vae, device)
    vae = fit_joint(args, vae, device)
    stats = latent_stats(args, vae, device)
    print(f"[stats] scale factor {stats['scale_factor']:.4f}", flush=True)
    # Most steps at 128 px, where a step costs a quarter; then 256 px, the size the samples are
    # drawn at, so the composition is learnt at the scale it is used (as SD went 256 -> 512).
    phases = [Phase(latent_dataset(args, vae, device, args.dataset_size, args.unet_size), args.unet_steps,
                    args.unet_batch),
              Phase(latent_dataset(args, vae, device, args.fine_dataset_size, args.unet_fine_size),
                    args.unet_fine_steps, args.unet_fine_batch)]
    unet, text_model, used_tokens = train_unet(args, arch, stats, phases, device)
    export(args, arch, vae, stats, unet, text_model, used_tokens)


if __name__ == "__main__":
    main()
