"""runtime.checks: every value a node receives is held to its schema at entry, the way ComfyUI
checks a widget, also when it came through a link (which ComfyUI does not check) or is NaN."""
import math

import pytest
import torch

GOOD = {"tile_width": 512, "denoise": 0.35, "refine": True, "order": "chess", "model": object()}


@pytest.fixture(scope="module")
def checks(comfy_nodes):
    from expanse.runtime import checks
    return checks


@pytest.fixture(scope="module")
def schema(comfy_nodes):
    from comfy_api.latest import io
    return io.Schema(node_id="ExpanseTest", inputs=[
        io.Int.Input("tile_width", default=512, min=64, max=8192),
        io.Float.Input("denoise", default=0.35, min=0.0, max=1.0),
        io.Boolean.Input("refine", default=True),
        io.Combo.Input("order", options=["chess", "linear"], default="chess"),
        io.Latent.Input("latent", optional=True),
        io.Image.Input("image", optional=True),
        io.Mask.Input("mask", optional=True),
        io.Model.Input("model"),
    ])


@pytest.mark.parametrize("name,value,words", [
    ("tile_width", -64, "tile_width is -64; it must be from 64 to 8192"),
    ("tile_width", 0, "tile_width is 0; it must be from 64 to 8192"),
    ("tile_width", 100000, "tile_width is 100000"),
    ("tile_width", 512.5, "tile_width is 512.5; it must be a whole number"),
    ("tile_width", math.nan, "tile_width is nan; it must be a finite number"),
    ("tile_width", "512", "tile_width is '512'; it must be a whole number"),
    ("tile_width", True, "tile_width is True; it must be a whole number"),
    ("denoise", math.nan, "denoise is nan; it must be a finite number"),
    ("denoise", math.inf, "denoise is inf"),
    ("denoise", -0.1, "denoise is -0.1; it must be from 0.0 to 1.0"),
    ("refine", 1, "refine is 1; it must be true or false"),
    ("order", "zigzag", "order is 'zigzag'; it must be one of chess, linear"),
    ("model", None, "model is not connected"),
    ("latent", {"samples": torch.zeros(0, 4, 8, 8)}, "latent is empty"),
    ("latent", {"samples": torch.zeros(1, 4, 8)}, "latent has shape (1, 4, 8); a latent has 4 or 5 dimensions"),
    ("latent", {"samples": torch.full((1, 4, 8, 8), math.nan)}, "latent holds NaN or infinite values"),
    ("latent", torch.zeros(1, 4, 8, 8), "connect a LATENT"),
    ("image", torch.zeros(1, 8, 8), "image has shape (1, 8, 8)"),
    ("mask", torch.full((1, 8, 8), math.inf), "mask holds NaN or infinite values"),
])
def test_a_bad_value_is_refused_naming_the_node_the_input_and_the_value(checks, schema, name, value, words):
    with pytest.raises(checks.EntryError) as caught:
        checks.check_entry("Test", schema, dict(GOOD, **{name: value}))
    message = str(caught.value)
    assert message.startswith("Test: ") and words in message, message


def test_good_values_pass_and_numbers_come_out_as_their_type(checks, schema):
    values = checks.check_entry("Test", schema, dict(GOOD, tile_width=512.0, denoise=1, latent=None))
    assert values["tile_width"] == 512 and type(values["tile_width"]) is int
    assert values["denoise"] == 1.0 and type(values["denoise"]) is float
    assert values["latent"] is None  # an optional input left unconnected


def test_the_schema_range_is_the_bound_inclusive(checks, schema):
    spec = schema.inputs[0]
    assert checks.check_value("Test", spec, 64) == 64 and checks.check_value("Test", spec, 8192) == 8192
    with pytest.raises(checks.EntryError):
        checks.check_value("Test", spec, 63)


def test_every_node_checks_its_values_at_entry(nodes, pack_node_ids):
    ours = {name: cls for name, cls in nodes.items() if name.startswith("Expanse")}
    assert pack_node_ids and sorted(ours) == pack_node_ids
    for name, cls in ours.items():
        assert getattr(cls.execute, "__wrapped__", None) is not None, f"{name}.execute is not checked_entry's"


def test_the_issues_values_are_refused_at_entry_naming_node_and_input(nodes, tiny_vae):
    """Values the API fuzzing of issue 20 sent through links: a negative tile width (it hung),
    a zero batch size (range() failed), NaN strength (it hung), NaN upscale_by (int() failed)."""
    from expanse_harness import tiny_models

    unet = tiny_models.tiny_unet()
    image = torch.rand(1, 64, 64, 3)
    chess = nodes["ExpanseChessTileRedraw"].execute
    for name, value, words in [("tile_width", -64, "tile_width is -64"),
                               ("tile_batch_size", 0, "tile_batch_size is 0"),
                               ("padding", -8, "padding is -8"),
                               ("upscale_by", math.nan, "upscale_by is nan"),
                               ("seam_fix_denoise", math.nan, "seam_fix_denoise is nan")]:
        with pytest.raises(ValueError, match="^ChessTileRedraw: " + words):
            chess(unet, [], [], tiny_vae, image=image, **{name: value})
    with pytest.raises(ValueError, match=r"^ChessTileRedraw: latent has shape \(1, 4, 2, 8, 8\)"):
        chess(unet, [], [], tiny_vae, latent={"samples": torch.zeros(1, 4, 2, 8, 8)})
    with pytest.raises(ValueError, match="^RegionPrompt: strength is nan"):
        nodes["ExpanseRegionPrompt"].execute([], [], 0.25, 0.25, 0.5, 0.5, "foreground", 0.2, math.nan, 512, 512)
    with pytest.raises(ValueError, match="^TiledDiffusion: overlap 56 on 64x64 tiles covers every pixel with about 64"):
        nodes["ExpanseTiledDiffusion"].execute(unet, "multidiffusion", 64, 64, 56, 4, 0)
    assert "about 64 tiles" in nodes["ExpanseTiledDiffusion"].validate_inputs(
        method="mixture_of_diffusers", tile_width=64, tile_height=64, overlap=56)
    assert nodes["ExpanseTiledDiffusion"].validate_inputs(method="shifted", tile_width=64, tile_height=64,
                                                          overlap=56) is True  # shifted has no overlap
