"""The pack in a real ComfyUI server, driven only through its HTTP API."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from expanse_harness.workflows import text_to_image_prompt

# Every node the pack registers, with the inputs users wire or set.
PACK_NODES = {
    "ExpanseTiledVAEEncode": {"pixels", "vae", "tile_size", "mode", "padding"},
    "ExpanseTiledVAEDecode": {"samples", "vae", "tile_size", "mode", "padding"},
    "ExpanseTiledDiffusion": {"model", "method", "tile_width", "tile_height", "overlap", "tile_batch_size", "seed"},
    "ExpanseLatentUpscaleAdvanced": {"samples", "upscale_method", "scale_by", "width", "height", "antialias"},
    "ExpanseProgressiveGrowSampler": {"model", "positive", "negative", "latent_image", "seed", "steps", "cfg", "sampler_name",
                               "scheduler", "min_scale", "max_scale", "stages", "spacing", "refine", "denoise_second",
                               "denoise_last", "refine_steps", "upscale_method", "stage_noise"},
    "ExpanseChessTileRedraw": {"model", "positive", "negative", "vae", "upscale_by", "seed", "steps", "cfg", "sampler_name",
                        "scheduler", "denoise", "tile_width", "tile_height", "padding", "mask_feather",
                        "tile_batch_size", "redraw_order", "seam_fix", "seam_fix_denoise", "seam_fix_width",
                        "seam_fix_feather"},
    "ExpanseRegionPrompt": {"conditioning", "region_conditioning", "x", "y", "width", "height", "type", "feather", "strength",
                     "canvas_width", "canvas_height"},
    "ExpanseDemoModelLoader": {"weights"},
    "ExpanseSaveLargeImage": {"samples", "vae", "filename_prefix", "vae_mode", "compression", "deep_zoom"},
    "ExpanseNoiseInversion": {"model", "positive", "negative", "latent", "steps", "scheduler", "denoise"},
}
DEMO = {"class_type": "ExpanseDemoModelLoader", "inputs": {"weights": "expanse-demo.safetensors"}}
# The uploaded picture's side: the demo VAE was fitted at 256-384 px and loses accuracy at its borders
# on pictures under ~128 px (demo/MODEL_CARD.md).
SIDE = 192


def roundtrip_prompt(image_name, tile_size=64):
    return {
        "model": DEMO,
        "picture": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "encode": {"class_type": "ExpanseTiledVAEEncode",
                   "inputs": {"pixels": ["picture", 0], "vae": ["model", 2], "tile_size": 64, "mode": "exact",
                              "padding": 64}},
        "decode": {"class_type": "ExpanseTiledVAEDecode",
                   "inputs": {"samples": ["encode", 0], "vae": ["model", 2], "tile_size": tile_size, "mode": "exact",
                              "padding": 96}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "e2e"}},
    }


@pytest.fixture(scope="module")
def uploaded(server, tmp_path_factory):
    """A smooth gradient picture, uploaded through /upload/image."""
    path = tmp_path_factory.mktemp("pictures") / "picture.png"
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1)
    rgb = np.stack([0.2 + 0.6 * yy, 0.3 + 0.4 * xx, 0.8 - 0.5 * yy], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return server.upload_image(path), rgb


def fetch(server, answer) -> np.ndarray:
    entry = server.wait(answer["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = server.images(entry)
    assert len(images) == 1
    return np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB")) / 255.0


def test_object_info_lists_every_pack_node_with_its_inputs(server):
    info = server.get("/object_info")
    ours = {name for name, node in info.items() if "expanse" in node.get("python_module", "")}
    assert ours == set(PACK_NODES)
    for name, inputs in PACK_NODES.items():
        node = info[name]
        assert node["category"].startswith("Expanse/")
        assert node["description"]
        required = node["input"]["required"]
        assert set(required) == inputs
        for input_name, spec in required.items():
            assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_tiled_vae_roundtrip_through_the_api(server, uploaded):
    name, rgb = uploaded
    status, answer = server.queue(roundtrip_prompt(name))
    assert status == 200, answer
    picture = fetch(server, answer)
    assert picture.shape == (SIDE, SIDE, 3)
    # The demo VAE reconstructs a smooth gradient closely (PNG rounding included).
    assert np.abs(picture - rgb).mean() < 0.05


def test_main_job_graph_draws_with_the_demo_model(server):
    prompt = text_to_image_prompt(DEMO, "red and white horizontal stripes", 128, 128, steps=12, seed=3,
                                  tile=64, prefix="e2e_txt2img")
    status, answer = server.queue(prompt)
    assert status == 200, answer
    picture = fetch(server, answer)
    assert picture.shape == (128, 128, 3)
    assert picture.std() > 0.05  # a picture, not a flat field


def test_invalid_input_is_refused_with_node_errors_naming_it(server, uploaded):
    status, answer = server.queue(roundtrip_prompt(uploaded[0], tile_size=-8))
    assert status == 400
    errors = answer["node_errors"]["decode"]["errors"]
    assert any("tile_size" in (e.get("details", "") + str(e.get("extra_info", ""))) for e in errors), errors
    assert server.get("/system_stats")  # still serving


def test_a_failing_node_reports_a_clear_message_and_the_server_carries_on(server, uploaded):
    status, answer = server.queue(roundtrip_prompt(uploaded[0], tile_size=16))
    assert status == 200
    entry = server.wait(answer["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "error"
    assert "tile_size 16 is smaller than this VAE's minimum of 32 px" in str(entry["status"]["messages"])
    status, answer = server.queue(roundtrip_prompt(uploaded[0]))
    assert status == 200
    assert fetch(server, answer).shape == (SIDE, SIDE, 3)


def region_prompt(x=0.5, width=0.5, diffusion_tile=64):
    """The main-job graph with a red-checks foreground over the right half of a blue-sky canvas."""
    graph = text_to_image_prompt(DEMO, "a day sky with clouds", 128, 128, steps=12, seed=5, tile=64,
                                 diffusion_tile=diffusion_tile, prefix="e2e_region")
    graph["region_text"] = {"class_type": "CLIPTextEncode",
                            "inputs": {"clip": ["model", 1], "text": "red and yellow checks"}}
    graph["region"] = {"class_type": "ExpanseRegionPrompt",
                       "inputs": {"conditioning": ["positive", 0], "region_conditioning": ["region_text", 0],
                                  "x": x, "y": 0.0, "width": width, "height": 1.0, "type": "foreground",
                                  "feather": 0.1, "strength": 1.0, "canvas_width": 128, "canvas_height": 128}}
    graph["sample"]["inputs"]["positive"] = ["region", 0]
    return graph


def test_region_prompt_draws_its_half_through_the_api(server):
    picture = fetch(server, server.queue(region_prompt())[1])
    left, right = picture[:, :56], picture[:, 72:]
    redness = lambda part: float((part[..., 0] - part[..., 2]).mean())  # noqa: E731
    assert redness(right) > redness(left) + 0.2, (redness(left), redness(right))


def test_region_outside_the_canvas_is_refused_naming_it(server):
    status, answer = server.queue(region_prompt(x=0.8, width=0.5))
    assert status == 400
    assert "x + width" in json.dumps(answer["node_errors"]["region"]), answer


def poster_prompt(read_the_redraws_image: bool) -> dict:
    """The poster template's shape, small: a sampled latent redrawn by ChessTileRedraw, whose latent
    the tiled VAE decodes; optionally a second SaveImage reads ChessTileRedraw's own image."""
    prompt = text_to_image_prompt(DEMO, "green fields under a blue sky", 64, 64, steps=2, seed=4, tile=64,
                                  prefix="e2e_poster")
    prompt["chess"] = {"class_type": "ExpanseChessTileRedraw", "inputs": {
        "model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0], "vae": ["model", 2],
        "latent": ["sample", 0], "upscale_by": 2.0, "seed": 1, "steps": 1, "cfg": 5.0, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 0.3, "tile_width": 64, "tile_height": 64, "padding": 16,
        "mask_feather": 8, "tile_batch_size": 4, "redraw_order": "chess", "seam_fix": "none",
        "seam_fix_denoise": 0.3, "seam_fix_width": 16, "seam_fix_feather": 8, "vae_mode": "exact"}}
    prompt["decode"]["inputs"].update(samples=["chess", 1], mode="exact", tile_size=64)
    if read_the_redraws_image:
        prompt["save_redraw"] = {"class_type": "SaveImage",
                                 "inputs": {"images": ["chess", 0], "filename_prefix": "e2e_poster_redraw"}}
    return prompt


def decodes_logged(server, since: int) -> list[str]:
    return [line for line in server.log_text()[since:].splitlines() if ": decoding " in line]


def test_chess_redraw_decodes_only_when_its_image_is_read(server):
    """The poster's chain decodes once: ChessTileRedraw leaves its image to the decode downstream
    when nothing reads it. Then, with the same inputs and a reader of its image, it runs again (its
    cached result has no image; the decode below it, whose key holds its ancestors', runs too), and
    its image is the picture the tiled decode drew."""
    start = len(server.log_text())
    status, answer = server.queue(poster_prompt(read_the_redraws_image=False))
    assert status == 200, answer
    downstream = fetch(server, answer)
    assert downstream.shape == (128, 128, 3)
    decodes = decodes_logged(server, start)
    assert len(decodes) == 1 and "TiledVAEDecode" in decodes[0], decodes
    assert "nothing reads the image output" in server.log_text()[start:]

    start = len(server.log_text())
    status, answer = server.queue(poster_prompt(read_the_redraws_image=True))
    assert status == 200, answer
    entry = server.wait(answer["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    cached = next(m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached")
    assert "sample" in cached and "chess" not in cached, cached
    decodes = decodes_logged(server, start)
    assert len(decodes) == 2 and any("ChessTileRedraw" in line for line in decodes), decodes
    own = server.images({"outputs": {"save_redraw": entry["outputs"]["save_redraw"]}})
    redrawn = np.asarray(Image.open(io.BytesIO(own[0])).convert("RGB")) / 255.0
    assert np.abs(redrawn - downstream).max() <= 1.5 / 255  # the same exact decode, 8-bit rounding


def test_search_aliases_reach_the_frontend_where_the_host_has_them(server):
    info = server.get("/object_info")
    if "search_aliases" not in info["KSampler"] and "search_aliases" not in info["ExpanseChessTileRedraw"]:
        pytest.skip("this host's node schema has no search aliases (0.3.75; its frontend searches names only)")
    assert "ultimate sd upscale" in info["ExpanseChessTileRedraw"]["search_aliases"]
    assert "mixture of diffusers" in info["ExpanseTiledDiffusion"]["search_aliases"]
    for name in PACK_NODES:
        assert info[name].get("search_aliases"), f"{name} has no search aliases"
