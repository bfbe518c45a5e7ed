"""scripts/upgrade_workflow.py on workflows saved with Expanse 0.1, in both saved formats."""
import importlib.util
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "upgrade_workflow.py"
spec = importlib.util.spec_from_file_location("upgrade_workflow", SCRIPT)
upgrade_workflow = importlib.util.module_from_spec(spec)
spec.loader.exec_module(upgrade_workflow)


def ui_workflow() -> dict:
    """The shape frontend 1.32-1.49 saves: two old nodes (one in a subgraph) and one of ComfyUI's."""
    upscale = {"id": 7, "type": "LatentUpscaleAdvanced", "properties": {"Node name for S&R": "LatentUpscaleAdvanced"},
               "inputs": [{"localized_name": "samples", "name": "samples", "type": "LATENT", "link": 7},
                          {"localized_name": "method", "name": "method", "type": "COMBO",
                           "widget": {"name": "method"}, "link": None}],
               "widgets_values": ["bislerp", 2.0, 0, 0, True]}
    redraw = {"id": 3, "type": "ChessTileRedraw", "properties": {}, "inputs": [], "widgets_values": [2.0]}
    return {"nodes": [upscale, {"id": 1, "type": "KSampler", "inputs": [], "widgets_values": [1]}],
            "definitions": {"subgraphs": [{"nodes": [redraw]}]}, "links": [], "version": 0.4}


def test_ui_format_gets_the_new_ids_and_input_names_and_keeps_the_rest():
    workflow = ui_workflow()
    before = json.loads(json.dumps(workflow))
    assert upgrade_workflow.upgrade(workflow) == 2
    upscale, sampler = workflow["nodes"]
    assert upscale["type"] == upscale["properties"]["Node name for S&R"] == "ExpanseLatentUpscaleAdvanced"
    assert upscale["inputs"][1] == {"localized_name": "upscale_method", "name": "upscale_method", "type": "COMBO",
                                    "widget": {"name": "upscale_method"}, "link": None}
    assert upscale["inputs"][0] == before["nodes"][0]["inputs"][0]
    assert upscale["widgets_values"] == before["nodes"][0]["widgets_values"]  # positional: unchanged
    assert sampler == before["nodes"][1]
    assert workflow["definitions"]["subgraphs"][0]["nodes"][0]["type"] == "ExpanseChessTileRedraw"
    assert upgrade_workflow.upgrade(workflow) == 0  # already upgraded


def test_api_format_gets_the_new_class_types_and_input_names():
    prompt = {"5": {"class_type": "LatentUpscaleAdvanced", "inputs": {"samples": ["4", 0], "method": "lanczos"}},
              "6": {"class_type": "TiledVAEDecode", "inputs": {"samples": ["5", 0]}},
              "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0]}}}
    assert upgrade_workflow.upgrade(prompt) == 2
    assert prompt["5"] == {"class_type": "ExpanseLatentUpscaleAdvanced",
                           "inputs": {"samples": ["4", 0], "upscale_method": "lanczos"}}
    assert prompt["6"]["class_type"] == "ExpanseTiledVAEDecode" and prompt["7"]["class_type"] == "SaveImage"


def test_command_line_rewrites_the_file(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(ui_workflow()))
    done = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=True)
    assert "2 node(s) upgraded" in done.stdout
    assert json.loads(path.read_text())["nodes"][0]["type"] == "ExpanseLatentUpscaleAdvanced"
