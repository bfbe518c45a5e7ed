"""SaveLargeImage inside the real ComfyUI: the streamed TIFF (and Deep Zoom) against the in-memory
decode, its pyramid, cancel, bad input; and the old path's refusal of a picture too large for RAM."""
import io
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_grad_enabled(False)

NODE = "ExpanseSaveLargeImage"


def latent(channels=4, height=40, width=28, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"samples": torch.randn(batch, channels, height, width, generator=g)}


def as_uint8(image: torch.Tensor) -> np.ndarray:
    """An IMAGE as SaveImage writes it."""
    return np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)


@pytest.fixture
def output_dir(comfy_nodes, tmp_path, monkeypatch):
    import folder_paths

    out = tmp_path / "output"
    out.mkdir()
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(out))
    return out


@pytest.fixture(scope="module")
def runtime(comfy_nodes):
    """The pack's runtime modules, as ComfyUI loaded them."""
    module = sys.modules[comfy_nodes.NODE_CLASS_MAPPINGS[NODE].__module__]
    package = module.__name__.rsplit(".", 2)[0]
    return sys.modules[f"{package}.runtime.vae"], sys.modules[f"{package}.runtime.large_image"]


def save(node, vae, samples, **kw):
    kw = {"filename_prefix": "Expanse/large", "vae_mode": "fast", "compression": "deflate", "deep_zoom": False,
          **kw}
    return node(NODE).execute(samples=samples, vae=vae, **kw)


def shown(out) -> list[dict]:
    """The images the node shows in the UI (its ui result, as ComfyUI sends it)."""
    return out.ui.as_dict()["images"]


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("mode", ["fast", "exact", "sampled"])
def test_streamed_save_equals_the_in_memory_decode(node, tiny_vae, output_dir, runtime, mode):
    import tifffile

    runtime_vae, large = runtime
    samples = latent(height=80, width=44)  # 640 x 352 px: three 256 px TIFF tile rows, the last one partial
    expected = as_uint8(runtime_vae.decode("test", tiny_vae, samples["samples"], mode=mode)[0])
    out = save(node, tiny_vae, samples, vae_mode=mode)
    path = output_dir / "Expanse" / "large_00001_.tif"
    assert out.result[1] == str(path)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        page = tif.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256) and page.compression == 8
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [(640, 352, 3)]  # already at most 1024 px
        np.testing.assert_array_equal(levels[0].asarray(), expected)
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), expected)
    overview = out.result[0]
    assert overview.shape == (1, 640, 352, 3) and overview.dtype == torch.float32
    np.testing.assert_array_equal(np.rint(overview[0].numpy() * 255).astype(np.uint8), expected)
    assert shown(out)[0]["type"] == "temp"
    assert files(output_dir) == ["Expanse", "Expanse/large_00001_.tif"]  # nothing left behind


def test_pyramid_levels_and_deep_zoom(node, tiny_vae, output_dir, runtime, monkeypatch):
    """With the overview limit lowered to 128 px, a 640 x 352 px picture has levels 640, 320, 160,
    80 px high; Deep Zoom has 11 levels (640 px: 2^10 > 640 > 2^9) down to 1 x 1."""
    import tifffile

    _, large = runtime
    monkeypatch.setattr(large, "OVERVIEW_PX", 128)
    samples = latent(height=80, width=44)
    out = save(node, tiny_vae, samples, deep_zoom=True, compression="lzma")
    path = output_dir / "Expanse" / "large_00001_.tif"
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [(640, 352, 3), (320, 176, 3), (160, 88, 3), (80, 44, 3)]
        full = levels[0].asarray().astype(np.float64)
        half = levels[1].asarray().astype(np.float64)
        box = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] + full[1::2, 1::2]) / 4
        assert np.abs(half - box).max() <= 0.5 + 1e-9  # 2x2 averages, rounded
        smallest = levels[-1].asarray()
        assert all(p.subfiletype == 1 for p in tif.pages[1:]) and tif.pages[0].subfiletype == 0
    with Image.open(path) as im:
        assert im.n_frames == 4
        im.seek(3)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), smallest)
    np.testing.assert_array_equal(as_uint8(out.result[0][0]), smallest)

    dzi = ET.parse(output_dir / "Expanse" / "large_00001_.dzi").getroot()
    assert (dzi.get("TileSize"), dzi.get("Overlap"), dzi.get("Format")) == ("254", "1", "jpg")
    size = dzi.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert (size.get("Width"), size.get("Height")) == ("352", "640")
    tiles = output_dir / "Expanse" / "large_00001__files"
    assert sorted(int(p.name) for p in tiles.iterdir()) == list(range(11))
    assert sorted(p.name for p in (tiles / "10").iterdir()) == [f"{c}_{r}.jpg" for c in range(2) for r in range(3)]
    with Image.open(tiles / "10" / "0_0.jpg") as t:
        assert t.size == (255, 255)  # 254 + the overlap on the right and bottom
    with Image.open(tiles / "10" / "1_1.jpg") as t:
        assert t.size == (352 - 253, 256)  # the overlap on both sides of a middle row
    with Image.open(tiles / "9" / "0_0.jpg") as t:
        assert t.size == (176, 255)
    with Image.open(tiles / "0" / "0_0.jpg") as t:
        assert t.size == (1, 1)
    same = io.BytesIO()  # the tile is the picture's corner, as Pillow encodes it
    Image.fromarray(full[:255, :255].astype(np.uint8)).save(same, format="JPEG", quality=90)
    with Image.open(tiles / "10" / "0_0.jpg") as t, Image.open(same) as expected:
        np.testing.assert_array_equal(np.asarray(t), np.asarray(expected))
    assert not [p for p in (output_dir / "Expanse").iterdir() if p.name.startswith(".")]


def test_small_read_backs_make_the_same_file(node, tiny_vae, output_dir, runtime, monkeypatch):
    """The spilled rows read back in the smallest pieces (TIFF tiles of 64 px two at a time, one
    waiting for the writer, runs of two rows for the pyramid) give the same levels as the decode."""
    import tifffile

    runtime_vae, large = runtime
    for name, value in [("TIFF_TILE", 64), ("TIFF_GROUP", 2), ("TIFF_QUEUE", 1), ("TIFF_BATCH", 1),
                        ("ROW_RUN_BYTES", 1), ("OVERVIEW_PX", 200)]:
        monkeypatch.setattr(large, name, value)
    samples = latent(height=80, width=44)  # 640 x 352 px: 5 1/2 tiles across, in three groups
    expected = as_uint8(runtime_vae.decode("test", tiny_vae, samples["samples"], mode="fast")[0])
    save(node, tiny_vae, samples)
    with tifffile.TiffFile(output_dir / "Expanse" / "large_00001_.tif") as tif:
        levels = [level.asarray() for level in tif.series[0].levels]
    assert [level.shape for level in levels] == [(640, 352, 3), (320, 176, 3), (160, 88, 3)]
    np.testing.assert_array_equal(levels[0], expected)
    full = expected.astype(np.uint16)
    box = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] + full[1::2, 1::2] + 2) >> 2
    np.testing.assert_array_equal(levels[1], box)
    assert files(output_dir) == ["Expanse", "Expanse/large_00001_.tif"]


def test_batch_saves_one_file_per_picture_with_counters(node, tiny_vae, output_dir):
    (output_dir / "Expanse").mkdir()
    (output_dir / "Expanse" / "large_00004_.png").write_bytes(b"")  # a SaveImage file: the counter goes on
    out = save(node, tiny_vae, latent(height=16, width=24, batch=2))
    assert out.result[0].shape == (2, 128, 192, 3)
    assert out.result[1].splitlines() == [str(output_dir / "Expanse" / f"large_0000{i}_.tif") for i in (5, 6)]
    assert len(shown(out)) == 2


def test_cancel_leaves_no_file(node, tiny_vae, output_dir, runtime, monkeypatch):
    import comfy.model_management as mm

    _, large = runtime
    calls = {"n": 0}
    throw = mm.throw_exception_if_processing_interrupted

    def interrupt_after_some_tiles():
        calls["n"] += 1
        if calls["n"] == 4:
            mm.interrupt_current_processing(True)
        throw()

    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", interrupt_after_some_tiles)
    monkeypatch.setattr(large, "TIFF_TILE", 64)  # rows of the file are written before the cancel
    try:
        with pytest.raises(mm.InterruptProcessingException):
            save(node, tiny_vae, latent(height=80, width=44), deep_zoom=True)
    finally:
        mm.interrupt_current_processing(False)
    assert calls["n"] == 4
    assert files(output_dir) == ["Expanse"]


def test_a_failing_writer_leaves_no_file_and_says_why(node, tiny_vae, output_dir, runtime, monkeypatch):
    _, large = runtime

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(large._Spool, "add", broken)
    with pytest.raises(OSError, match="No space left"):
        save(node, tiny_vae, latent(height=160, width=44))  # 1280 px: a lower level is spooled
    assert files(output_dir) == ["Expanse"]


@pytest.mark.parametrize("prefix, message", [
    ("../escape", "leads outside ComfyUI's output folder"),
    ("Expanse/../../escape", "leads outside ComfyUI's output folder"),
    ("blocker/large", "cannot"),
    ("", "names no file"),
    (".", "names no file"),
])
def test_bad_prefixes_are_refused(node, tiny_vae, output_dir, prefix, message):
    (output_dir / "blocker").write_bytes(b"a file where a folder should be")
    with pytest.raises(ValueError, match=message) as e:
        save(node, tiny_vae, latent(height=8, width=8), filename_prefix=prefix)
    assert str(e.value).startswith("SaveLargeImage: ") and "filename_prefix" in str(e.value)
    assert files(output_dir) == ["blocker"]


@pytest.mark.parametrize("samples, message", [
    (latent(channels=16, height=8, width=8), "16 channels but this VAE takes 4"),
    ({"samples": torch.zeros(0, 4, 8, 8)}, "samples is empty"),
    ({"samples": torch.zeros(1, 4, 2, 8, 8)}, "3 spatial dimensions"),
])
def test_bad_latents_are_refused(node, tiny_vae, output_dir, samples, message):
    with pytest.raises(ValueError, match=message):
        save(node, tiny_vae, samples)
    assert files(output_dir) == []


def test_without_tifffile_the_node_says_how_to_install_it(node, tiny_vae, output_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tifffile", None)  # import tifffile now raises ImportError
    with pytest.raises(RuntimeError, match="pip install tifffile"):
        save(node, tiny_vae, latent(height=8, width=8))
    assert files(output_dir) == []


@pytest.mark.parametrize("caller", ["ExpanseTiledVAEDecode", "ExpanseChessTileRedraw"])
def test_the_in_memory_decode_refuses_a_picture_too_large_for_ram(node, tiny_vae, runtime, monkeypatch, caller):
    import comfy.model_management as mm

    free = mm.get_free_memory
    monkeypatch.setattr(mm, "get_free_memory",
                        lambda dev=None, torch_free_too=False: 1_000_000 if getattr(dev, "type", None) == "cpu"
                        else free(dev, torch_free_too))
    samples = latent(height=64, width=64)  # 512 x 512 px: 3.1 MB as an IMAGE, more than 80% of 1 MB
    if caller == "ExpanseTiledVAEDecode":
        run = lambda: node(caller).execute(samples=samples, vae=tiny_vae, tile_size=64, mode="fast")  # noqa: E731
        name = "TiledVAEDecode"
    else:
        runtime_vae, _ = runtime
        run = lambda: runtime_vae.decode("ChessTileRedraw", tiny_vae, samples["samples"])  # noqa: E731
        name = "ChessTileRedraw"
    with pytest.raises(MemoryError) as e:
        run()
    text = str(e.value)
    assert text.startswith(f"{name}: ") and "512x512 px" in text and "3.1 MB" in text
    assert "1.0 MB of RAM is free" in text and "Save Large Image" in text
