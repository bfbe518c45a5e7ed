"""TiledVAEEncode/TiledVAEDecode inside the real ComfyUI, against ComfyUI's own VAE nodes."""
import logging
import types

import pytest
import torch

from expanse_harness import tiny_models

torch.set_grad_enabled(False)


def rel_l2(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def latent(channels=4, height=25, width=19, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, channels, height, width, generator=g)}


def image(height=200, width=152, batch=1, seed=0):
    """A smooth picture with edges: gradients plus a disc, the kind of content seams show on."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([yy, xx, 1 - yy * xx], dim=-1)
    disc = ((yy - 0.4) ** 2 + (xx - 0.6) ** 2 < 0.05).float().unsqueeze(-1)
    img = (0.7 * base + 0.3 * disc + 0.05 * torch.rand(height, width, 3, generator=g)).clamp(0, 1)
    return img.unsqueeze(0).repeat(batch, 1, 1, 1)


def decode(node, vae, samples, **kw):
    return node("ExpanseTiledVAEDecode").execute(samples=samples, vae=vae, **kw).result[0]


def encode(node, vae, pixels, **kw):
    return node("ExpanseTiledVAEEncode").execute(pixels=pixels, vae=vae, **kw).result[0]["samples"]


@pytest.mark.parametrize("tile", [64, 72, 120])  # none divides the 200 x 152 px canvas
def test_exact_decode_matches_whole_image_decode(node, tiny_vae, tile):
    samples = latent()
    whole = node("VAEDecode")().decode(tiny_vae, samples)[0]
    ours = decode(node, tiny_vae, samples, tile_size=tile)
    assert ours.shape == whole.shape == (1, 200, 152, 3)
    assert ours.dtype == whole.dtype == torch.float32 and ours.device == whole.device
    assert rel_l2(ours, whole) < 1e-5


def test_builtin_tiled_decode_error_for_comparison(node, tiny_vae):
    """ComfyUI's VAEDecodeTiled at the same tile size shares no statistics: its error is orders
    of magnitude above ours (the benchmark measures this on the full-size architecture)."""
    samples = latent()
    whole = node("VAEDecode")().decode(tiny_vae, samples)[0]
    builtin = node("VAEDecodeTiled")().decode(tiny_vae, samples, 64, 32, 64, 8)[0]
    ours = decode(node, tiny_vae, samples, tile_size=64)
    builtin_err, our_err = rel_l2(builtin, whole), rel_l2(ours, whole)
    print(f"relative L2 vs whole-image decode at 64 px tiles: built-in {builtin_err:.2e}, ours {our_err:.2e}")
    assert our_err * 100 < builtin_err


@pytest.mark.parametrize("tile", [64, 104])
def test_exact_encode_matches_whole_image_encode(node, tiny_vae, tile):
    pixels = image()
    whole = node("VAEEncode")().encode(tiny_vae, pixels)[0]["samples"]
    ours = encode(node, tiny_vae, pixels, tile_size=tile)
    assert ours.shape == whole.shape == (1, 4, 25, 19)
    assert rel_l2(ours, whole) < 1e-5


def test_crop_to_the_latent_grid_like_vae_encode(node, tiny_vae):
    pixels = image(203, 157)
    whole = node("VAEEncode")().encode(tiny_vae, pixels)[0]["samples"]
    ours = encode(node, tiny_vae, pixels, tile_size=64)
    assert ours.shape == whole.shape == (1, 4, 25, 19)
    assert rel_l2(ours, whole) < 1e-5


def test_batches_and_auto_tile(node, tiny_vae):
    samples = latent(batch=2)
    whole = node("VAEDecode")().decode(tiny_vae, samples)[0]
    ours = decode(node, tiny_vae, samples)  # tile_size 0: chosen from free memory
    assert ours.shape == (2, 200, 152, 3)
    assert rel_l2(ours, whole) < 1e-5
    assert not torch.equal(ours[0], ours[1])


def test_deterministic(node, tiny_vae):
    samples = latent()
    assert torch.equal(decode(node, tiny_vae, samples, tile_size=64), decode(node, tiny_vae, samples, tile_size=64))


def test_sixteen_channel_flux_layout(node, comfy_nodes):
    """The SD3/Flux.1 VAE: 16 latent channels, no quant convs (ComfyUI builds an AutoencodingEngine)."""
    vae = tiny_models.full_size_vae(latent_channels=16, quant_convs=False)
    assert vae.latent_channels == 16 and not hasattr(vae.first_stage_model, "post_quant_conv")
    samples = latent(channels=16, height=9, width=7)
    whole = node("VAEDecode")().decode(vae, samples)[0]
    ours = decode(node, vae, samples, tile_size=32)
    assert rel_l2(ours, whole) < 1e-5
    pixels = image(72, 56)
    assert rel_l2(encode(node, vae, pixels, tile_size=32), node("VAEEncode")().encode(vae, pixels)[0]["samples"]) < 1e-5


def test_fast_mode_is_close_to_exact(node, tiny_vae):
    """Fast mode estimates statistics from a shrunken copy (the canvas is larger than the 512 px
    estimate) and decodes padded tiles independently: close to, but not equal to, the exact result.
    Random weights and a white-noise latent are its worst case; real VAEs do better."""
    samples = latent(height=72, width=64)
    whole = node("VAEDecode")().decode(tiny_vae, samples)[0]
    exact = decode(node, tiny_vae, samples, tile_size=256)
    fast = decode(node, tiny_vae, samples, tile_size=256, mode="fast", padding=96)
    assert fast.shape == whole.shape == (1, 576, 512, 3)
    assert rel_l2(exact, whole) * 100 < rel_l2(fast, whole) < 0.1


def test_fast_encode_improves_with_padding(node, tiny_vae):
    """The encoder's mid-block attention is global, so a fast tile sees only its crop: the error
    comes from context and falls as padding grows; the statistics estimate alone is near-exact."""
    pixels = image(576, 512)
    whole = node("VAEEncode")().encode(tiny_vae, pixels)[0]["samples"]
    errors = [rel_l2(encode(node, tiny_vae, pixels, tile_size=256, mode="fast", padding=pad), whole)
              for pad in (32, 128)]
    assert errors[1] < errors[0] < 0.5
    one_tile = encode(node, tiny_vae, pixels, tile_size=1024, mode="fast", padding=0)
    assert rel_l2(one_tile, whole) < 1e-3


def test_sampled_mode_is_close_to_exact(node, tiny_vae, monkeypatch):
    """Sampled mode pools the statistics over full-resolution crops (here a 2 x 2 lattice inside
    the border bands, under half the picture) and decodes padded tiles with them: the image's
    shape and dtype, close to exact; a sample covering the picture with padding reaching across it
    gives the exact result."""
    from expanse.core.vae_sampled_stats import Sample
    from expanse.runtime import vae as module

    samples = latent(height=20, width=24)
    exact = decode(node, tiny_vae, samples, tile_size=96)
    monkeypatch.setattr(module, "SAMPLE", Sample(per_side=2, crop_px=32, border_px=16, guide_px=96))
    ours = decode(node, tiny_vae, samples, tile_size=96, mode="sampled", padding=32)
    assert ours.shape == exact.shape == (1, 160, 192, 3) and ours.dtype == exact.dtype == torch.float32
    assert 1e-4 < rel_l2(ours, exact) < 0.2  # random weights, a white-noise latent: the worst case
    monkeypatch.setattr(module, "SAMPLE", Sample(per_side=1, crop_px=512, border_px=0))
    covering = decode(node, tiny_vae, samples, tile_size=512, mode="sampled", padding=0)
    assert rel_l2(covering, exact) < 1e-5
    pixels = image(96, 80)
    exact_latent = encode(node, tiny_vae, pixels, tile_size=64)
    ours_latent = encode(node, tiny_vae, pixels, tile_size=64, mode="sampled", padding=32)
    assert ours_latent.shape == exact_latent.shape and rel_l2(ours_latent, exact_latent) < 0.5


def test_local_attention_keeps_exact_statistics_and_windows_attention(node, tiny_vae, monkeypatch):
    """local_attention runs the exact program with each tile attending to itself and `padding` px
    around it, and to the rest of the latent pooled to WINDOW_CONTEXT_SIDE tokens a side: a window
    covering the picture is the exact result, and so is a small one while the rest comes in at
    full resolution (WINDOW_CONTEXT_SIDE as large as the latent); pooled, the small one changes it."""
    from expanse.core import attention_context

    samples = latent(height=72, width=64)
    exact = decode(node, tiny_vae, samples, tile_size=128)
    covering = decode(node, tiny_vae, samples, tile_size=128, mode="local_attention", padding=576)
    assert rel_l2(covering, exact) < 1e-5
    monkeypatch.setattr(attention_context, "WINDOW_CONTEXT_SIDE", 72)
    windowed = decode(node, tiny_vae, samples, tile_size=128, mode="local_attention", padding=32)
    assert windowed.shape == exact.shape and rel_l2(windowed, exact) < 1e-5
    monkeypatch.setattr(attention_context, "WINDOW_CONTEXT_SIDE", 2)
    windowed = decode(node, tiny_vae, samples, tile_size=128, mode="local_attention", padding=32)
    assert windowed.shape == exact.shape and rel_l2(windowed, exact) > 1e-3
    pixels = image(576, 512)
    exact_latent = encode(node, tiny_vae, pixels, tile_size=128)
    covering_latent = encode(node, tiny_vae, pixels, tile_size=128, mode="local_attention", padding=576)
    assert rel_l2(covering_latent, exact_latent) < 1e-5
    with pytest.raises(ValueError, match="mode is .approximate.; it must be one of"):
        decode(node, tiny_vae, samples, mode="approximate")


def test_local_attention_is_close_to_exact_on_the_trained_demo_vae(node):
    """On a trained VAE (the demo model's) windowed attention changes little and far less than
    fast mode's estimated statistics: PSNR against the exact decode of a 1024 px scene."""
    from expanse.runtime.demo_model import WEIGHTS_DIR

    vae = node("ExpanseDemoModelLoader").execute(weights="expanse-demo.safetensors").result[2]
    assert (WEIGHTS_DIR / "expanse-demo.safetensors").exists()
    samples = {"samples": encode(node, vae, image(1024, 1024))}

    def psnr(a, b):
        return (10 * torch.log10(1 / ((a - b) ** 2).mean())).item()

    exact = decode(node, vae, samples)
    local = decode(node, vae, samples, tile_size=256, mode="local_attention", padding=256)  # ChessTileRedraw's
    fast = decode(node, vae, samples, tile_size=256, mode="fast", padding=96)
    print(f"PSNR vs exact: local_attention {psnr(local, exact):.1f} dB, fast {psnr(fast, exact):.1f} dB")
    # 44.3 dB in float32 on a CPU with the rest of the latent as pooled context (36.9 with the window
    # alone); 33.8 on an H200 before the context, where the VAE runs in bfloat16.
    assert psnr(local, exact) > 33 and psnr(local, exact) > psnr(fast, exact) + 5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_vaes(node, dtype):
    vae16 = tiny_models.tiny_vae(dtype=dtype)
    vae32 = tiny_models.tiny_vae()
    samples = latent(height=12, width=10)
    ours = decode(node, vae16, samples, tile_size=40)
    assert torch.isfinite(ours).all()
    assert rel_l2(ours, node("VAEDecode")().decode(vae32, samples)[0]) < 0.05


def test_fp16_overflow_is_recomputed_in_float32(node, caplog):
    """Weights that push activations past fp16's range: the whole-image fp16 decode breaks (NaN or
    black), ours notices and recomputes in float32."""
    def scaled(vae):
        with torch.no_grad():
            vae.first_stage_model.decoder.conv_in.weight.mul_(1e5)
        return vae

    vae16 = scaled(tiny_models.tiny_vae(dtype=torch.float16))
    vae32 = scaled(tiny_models.tiny_vae())
    with torch.no_grad():  # the same fp16-rounded weights, so only the arithmetic differs
        for p in vae32.first_stage_model.parameters():
            p.copy_(p.half().float())
    samples = latent(height=12, width=10)
    broken = node("VAEDecode")().decode(vae16, samples)[0]
    reference = node("VAEDecode")().decode(vae32, samples)[0]
    assert torch.isfinite(reference).all()
    assert not torch.isfinite(broken).all() or rel_l2(broken, reference) > 0.1
    with caplog.at_level(logging.WARNING):
        ours = decode(node, vae16, samples, tile_size=40)
    assert "recomputing in float32" in caplog.text
    # 1e5-sized residual streams make even float32 rounding visible after the GroupNorms that
    # follow, in the whole-image reference as in ours: agreement to 1e-3, not the usual 1e-5.
    assert rel_l2(ours, reference) < 1e-3


def test_progress_and_cancel(node, tiny_vae, progress_updates):
    import comfy.model_management as mm

    try:
        decode(node, tiny_vae, latent(), tile_size=64)
        assert len(progress_updates) > 10 and progress_updates[-1][0] == progress_updates[-1][1]
        mm.interrupt_current_processing(True)
        with pytest.raises(mm.InterruptProcessingException):
            decode(node, tiny_vae, latent(), tile_size=64)
    finally:
        mm.interrupt_current_processing(False)


def test_bad_inputs_name_the_input(node, tiny_vae):
    with pytest.raises(ValueError, match="tile_size 16 is smaller than this VAE's minimum of 32"):
        decode(node, tiny_vae, latent(), tile_size=16)
    with pytest.raises(ValueError, match="samples has 16 channels but this VAE takes 4"):
        decode(node, tiny_vae, latent(channels=16))
    with pytest.raises(ValueError, match=r"^TiledVAEDecode: samples is empty \(shape \(0, 4, 8, 8\)\)"):
        decode(node, tiny_vae, {"samples": torch.zeros(0, 4, 8, 8)})
    with pytest.raises(ValueError, match=r"^TiledVAEEncode: pixels is empty \(shape \(0, 64, 64, 3\)\)"):
        encode(node, tiny_vae, torch.zeros(0, 64, 64, 3))
    with pytest.raises(ValueError, match="tile_size 8 is smaller"):
        encode(node, tiny_vae, image(64, 64), tile_size=8)


@pytest.mark.parametrize("tile", [64, 128])
@pytest.mark.parametrize("inference_mode", [False, True])
def test_unknown_architecture_falls_back_with_a_message(node, caplog, tile, inference_mode):
    """ComfyUI's own tiled VAE takes over, said in the log; its tile is at least as large as the
    overlap asked for (padding 64/96 px at 64-128 px tiles once divided by zero), and it runs both
    under ComfyUI's inference mode and outside it."""
    vae = tiny_models.tiny_vae()
    for net in (vae.first_stage_model.decoder, vae.first_stage_model.encoder):
        class CustomAttention(type(net.mid.attn_1)):
            pass

        net.mid.attn_1.__class__ = CustomAttention
    samples, pixels = latent(), image()
    with caplog.at_level(logging.WARNING), torch.inference_mode(inference_mode):
        out = decode(node, vae, samples, tile_size=tile)
        z = encode(node, vae, pixels, tile_size=tile)
    for which in ("TiledVAEDecode", "TiledVAEEncode"):
        assert f"{which}: this VAE's architecture is not one the exact tiled path understands" in caplog.text
    assert "CustomAttention" in caplog.text
    assert out.shape == (1, 200, 152, 3) and z.shape == (1, 4, 25, 19)
    assert not out.is_inference() or inference_mode
    # It is ComfyUI's own tiled path, with the overlap (padding 96 / 64 px asked) cut to a quarter
    # of the tile.
    with torch.inference_mode():
        theirs_image = vae.decode_tiled(samples["samples"], tile_x=tile // 8, tile_y=tile // 8, overlap=tile // 32)
        theirs_latent = vae.encode_tiled(pixels, tile_x=tile, tile_y=tile, overlap=tile // 4)
    torch.testing.assert_close(out, theirs_image)
    torch.testing.assert_close(z, theirs_latent)


def test_exact_mode_parks_on_a_gpu_only_where_the_activations_fit(nodes, tiny_vae, monkeypatch):
    """On a GPU, exact mode keeps its full-resolution activations on the device when they fit beside
    a tile (each pass then skips two trips through host memory), and an automatic tile leaves them
    room; on a CPU, or where they do not fit, they stay in host memory. (The GPU is faked: these are
    the decisions; a GPU run of the same code is measured in bench/vae_bench.py.)"""
    from expanse.runtime import vae as module  # the one copy of the pack: ComfyUI's nodes run it
    program = module.compile_program(tiny_vae, "decoder")
    h, w, f32 = 25, 19, torch.float32
    parked = module.vae_geometry.parked_bytes(program, h, w, f32)
    gpu, host = torch.device("cuda"), torch.device("cpu")
    fake_gpu_vae = types.SimpleNamespace(
        device=gpu, vae_dtype=f32, patcher=None, first_stage_model=tiny_vae.first_stage_model,
        spacial_compression_decode=tiny_vae.spacial_compression_decode)
    free = {"bytes": 0}
    monkeypatch.setattr(module.mm, "get_free_memory", lambda *a, **k: free["bytes"])
    monkeypatch.setattr(module.mm, "load_models_gpu", lambda *a, **k: None)

    free["bytes"] = 1000 * parked
    exact_tile = module._resolve_tile("t", program, 0, fake_gpu_vae, (h, w), "exact")
    fast_tile = module._resolve_tile("t", program, 0, fake_gpu_vae, (h, w), "fast")
    assert module.vae_geometry.auto_tile_px(program, free["bytes"] - parked, f32) == exact_tile <= fast_tile
    assert module.park_device(program, h, w, fake_gpu_vae, exact_tile, f32) == gpu
    assert module.exact_parks_on_device(fake_gpu_vae, 8 * h, 8 * w, "decoder")
    assert module.park_device(program, h, w, tiny_vae, exact_tile, f32) == tiny_vae.device == host

    free["bytes"] = parked  # the activations alone would take all of it
    assert module._resolve_tile("t", program, 0, fake_gpu_vae, (h, w), "exact") == \
        module._resolve_tile("t", program, 0, fake_gpu_vae, (h, w), "fast"), "no room is kept for them"
    assert module.park_device(program, h, w, fake_gpu_vae, exact_tile, f32) == host
    assert not module.exact_parks_on_device(fake_gpu_vae, 8 * h, 8 * w, "decoder")
    assert not module.exact_parks_on_device(tiny_vae, 8 * h, 8 * w, "decoder"), "never on a CPU"


def test_out_of_memory_with_activations_on_the_gpu_redoes_the_run_in_ram(node, nodes, tiny_vae, monkeypatch,
                                                                          caplog):
    """Free memory is a snapshot: if the device runs out with exact mode's activations parked on it,
    the node redoes the run with them in RAM instead of failing; out of memory with them in RAM is
    the caller's error, as before. (A CPU run stands in for the device; the out-of-memory error is
    raised where the GPU would raise it.)"""
    from expanse.runtime import vae as module
    samples = latent()
    expected = decode(node, tiny_vae, samples, tile_size=64)
    parks = []
    real_run_exact = module.tiled_vae.run_exact

    def run_exact(*args, park_device, **kwargs):
        parks.append(park_device.type)
        if park_device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_run_exact(*args, park_device=park_device, **kwargs)

    monkeypatch.setattr(module.tiled_vae, "run_exact", run_exact)
    monkeypatch.setattr(module, "park_device", lambda *a, **k: torch.device("cuda"))
    with caplog.at_level(logging.WARNING):
        image = decode(node, tiny_vae, samples, tile_size=64)
    assert parks == ["cuda", "cpu"]
    assert "ran out of memory" in caplog.text
    torch.testing.assert_close(image, expected)

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("out of memory")

    monkeypatch.setattr(module.tiled_vae, "run_exact", out_of_memory)
    monkeypatch.setattr(module, "park_device", lambda *a, **k: torch.device("cpu"))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        decode(node, tiny_vae, samples, tile_size=64)
