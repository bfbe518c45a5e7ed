"""The pack in a real ComfyUI server, driven only through its HTTP API."""
import io

import pytest
from PIL import Image

import main_job

# Every node the pack registers, with the inputs users wire or set.
PACK_NODES = {
    "TiledVAEEncode": {"pixels", "vae", "tile_size", "mode", "padding"},
    "TiledVAEDecode": {"samples", "vae", "tile_size", "mode", "padding"},
    "TiledDiffusion": {"model", "method", "tile_width", "tile_height", "overlap", "tile_batch_size", "seed"},
    "LatentUpscaleAdvanced": {"samples", "method", "scale_by", "width", "height", "antialias"},
    "ProgressiveGrowSampler": {"model", "positive", "negative", "latent_image", "seed", "steps", "cfg", "sampler_name",
                               "scheduler", "min_scale", "max_scale", "stages", "spacing", "refine", "denoise_second",
                               "denoise_last", "refine_steps", "upscale_method", "stage_noise"},
    "ChessTileRedraw": {"model", "positive", "negative", "vae", "upscale_by", "seed", "steps", "cfg", "sampler_name",
                        "scheduler", "denoise", "tile_width", "tile_height", "padding", "mask_feather",
                        "tile_batch_size", "redraw_order", "seam_fix", "seam_fix_denoise", "seam_fix_width",
                        "seam_fix_feather"},
}


def roundtrip_prompt(image_name, vae_name, tile_size=64):
    return {
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}},
        "picture": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "encode": {"class_type": "TiledVAEEncode",
                   "inputs": {"pixels": ["picture", 0], "vae": ["vae", 0], "tile_size": 64, "mode": "exact",
                              "padding": 64}},
        "decode": {"class_type": "TiledVAEDecode",
                   "inputs": {"samples": ["encode", 0], "vae": ["vae", 0], "tile_size": tile_size, "mode": "exact",
                              "padding": 96}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "e2e"}},
    }


@pytest.fixture(scope="module")
def uploaded(server, tmp_path_factory):
    path = tmp_path_factory.mktemp("pictures") / "picture.png"
    main_job.draw_picture(path, 96)
    return server.upload_image(path)


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


def test_a_graph_queued_through_the_api_writes_an_image(server, uploaded, vae_file):
    status, answer = server.queue(roundtrip_prompt(uploaded, vae_file.name))
    assert status == 200, answer
    entry = server.wait(answer["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = server.images(entry)
    assert len(images) == 1
    picture = Image.open(io.BytesIO(images[0]))
    assert picture.size == (96, 96) and picture.mode == "RGB"


def test_invalid_input_is_refused_with_node_errors_naming_it(server, uploaded, vae_file):
    status, answer = server.queue(roundtrip_prompt(uploaded, vae_file.name, tile_size=-8))
    assert status == 400
    errors = answer["node_errors"]["decode"]["errors"]
    assert any("tile_size" in (e.get("details", "") + str(e.get("extra_info", ""))) for e in errors), errors
    assert server.get("/system_stats")  # still serving


def test_a_failing_node_reports_a_clear_message_and_the_server_carries_on(server, uploaded, vae_file):
    status, answer = server.queue(roundtrip_prompt(uploaded, vae_file.name, tile_size=16))
    assert status == 200
    entry = server.wait(answer["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "error"
    messages = str(entry["status"]["messages"])
    assert "tile_size 16 is smaller than this VAE's minimum of 32 px" in messages
    status, answer = server.queue(roundtrip_prompt(uploaded, vae_file.name))
    assert status == 200
    assert server.wait(answer["prompt_id"], timeout=600)["status"]["status_str"] == "success"
