"""The shipped demo model, loaded by the pack's loader node, in ComfyUI's own nodes."""
import json
import pathlib

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "demo" / "weights" / "expanse-demo.safetensors"
EVALUATION = ROOT / "demo" / "weights" / "evaluation.json"

torch.set_grad_enabled(False)


@pytest.fixture(scope="module")
def demo(node):
    return node("ExpanseDemoModelLoader").execute(weights=WEIGHTS.name).result


def test_weights_fit_the_size_budget():
    assert WEIGHTS.stat().st_size <= 30 * 2 ** 20


def test_loader_objects_work_in_comfyui_nodes(node, demo):
    model, clip, vae = demo
    assert vae.latent_channels == 4 and vae.spacial_compression_decode() == 8
    positive = node("CLIPTextEncode")().encode(clip, "red and white vertical stripes")[0]
    negative = node("CLIPTextEncode")().encode(clip, "")[0]
    assert positive[0][0].shape == (1, 77, 128)
    latent = node("EmptyLatentImage")().generate(64, 64, 1)[0]
    out = node("KSampler")().sample(model, 0, 4, 4.0, "euler", "normal", positive, negative, latent)[0]
    image = node("VAEDecode")().decode(vae, out)[0]
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


def test_fixed_seed_sample_matches_the_reference_statistics(comfy_nodes, demo):
    """Regression check against demo/weights/evaluation.json, written by demo/evaluate.py when the
    weights were trained: the same prompt, seed and sampler must give the same picture statistics."""
    from expanse.demo import evaluate

    reference = json.loads(EVALUATION.read_text())["reference_sample"]
    model, clip, vae = demo
    picture = evaluate.sample(comfy_nodes.NODE_CLASS_MAPPINGS, model, clip, vae,
                              reference["prompt"], reference["seed"], negative=reference["negative"],
                              steps=reference["steps"], cfg=reference["cfg"], sampler=reference["sampler"],
                              scheduler=reference["scheduler"], width=reference["size"], height=reference["size"])
    stats = evaluate.image_stats(picture)
    for key in ("mean", "std", "quadrant_means"):
        np.testing.assert_allclose(stats[key], reference["stats"][key], atol=0.01, err_msg=key)


def test_weight_file_roundtrip_restores_the_used_token_rows(tmp_path):
    from expanse.runtime import demo_weights
    from safetensors.torch import save_file

    vae = {"w": torch.randn(3, 3)}
    unet = {"conv.weight": torch.randn(2, 2)}
    embedding = torch.randn(10, 4)
    clip = {"clip_l.transformer.text_model.embeddings.token_embedding.weight": embedding}
    packed = demo_weights.pack(vae, unet, clip, used_tokens=[1, 7])
    path = tmp_path / "w.safetensors"
    save_file(packed, str(path), metadata={"expanse_demo": json.dumps({"x": 1})})
    meta, vae2, unet2, clip2 = demo_weights.load(path)
    assert meta == {"x": 1}
    torch.testing.assert_close(vae2["w"], vae["w"].half().float())
    restored = clip2["clip_l.transformer.text_model.embeddings.token_embedding.weight"]
    assert restored.shape == (10, 4)
    torch.testing.assert_close(restored[[1, 7]], embedding[[1, 7]].half().float())
    assert restored[[0, 2, 3, 4, 5, 6, 8, 9]].abs().sum() == 0
