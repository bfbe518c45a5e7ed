"""The templates in example_workflows/: each technique twice, once for a real checkpoint (SD1.5 or
SDXL, at the sizes the technique is for) and once as a demo that runs on the first click with the
demo model that ships with the pack (no download, small sizes). Each is described compactly as a
Graph (nodes, their wiring, the values that differ from the defaults, and the notes); TEMPLATES
gives each its id (scripts/workflows.py --only, DEMO_RUNS), its title and how its thumbnail is
drawn; DEMO_RUNS says, as data, what it takes to run it with the demo model.

Titles are file names. ComfyUI's template browser shows a custom node pack's templates by file
name (frontends 1.32.9 and 1.49.6 look up no title for them: the card's title is the name, the
description the name with - and _ as spaces), so the files are named as titles: technique first,
then the model it needs in brackets (the card cuts a title to one line, about 30 characters), then
what it draws. Only characters every file system and URL path takes as they are. The browser's category is the pack's
folder name, which locales/en/main.json translates to "Expanse".

scripts/workflows.py writes them; the end-to-end tests check the files against what these
builders give and run each one.
"""
from __future__ import annotations

import copy
import pathlib
from dataclasses import dataclass
from typing import Callable

from ..host import ROOT
from .demo_scale import scaled_inputs
from .prompts import DEMO_WEIGHTS
from .save_format import Definitions, Graph, Node, Out

EXAMPLE_DIR = ROOT / "example_workflows"
# The checkpoints the templates name, and where the frontend offers to download them from (a
# loader's properties.models, as ComfyUI's own templates carry it). The SD1.5 file is the one
# ComfyUI's default workflow and its own templates name, so many users have it already.
SD15 = "v1-5-pruned-emaonly-fp16.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
MODEL_URLS = {
    SD15: "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
          "v1-5-pruned-emaonly-fp16.safetensors?download=true",
    SDXL: "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
          "sd_xl_base_1.0.safetensors?download=true",
}
EXAMPLE_IMAGE = "example.png"  # ComfyUI ships input/example.png; users pick their own picture

NEGATIVE_SD15 = "blurry, lowres, jpeg artifacts, watermark, text, deformed"
NEGATIVE_SDXL = "blurry, lowres, oversaturated, watermark, text, deformed, extra fingers"

DEMO_ABOUT = """This template runs as it is on the demo model that ships with Expanse (Demo Model Loader): no download, a few seconds on a CPU. The demo model was trained only on skies, suns, moons, clouds, mountains, lakes, fields and forests, and on stripes, checks and circles in eight named colours: prompts in other words draw noise. For real pictures open the {other} template, which runs the same nodes on {model} at full size."""


# --- building blocks -------------------------------------------------------------------------------

def _checkpoint(g: Graph, name: str) -> Node:
    """Load Checkpoint for `name`, carrying the model's download (the frontend offers it when the
    file is missing)."""
    return g.add("CheckpointLoaderSimple", f"Load Checkpoint ({'SDXL' if name == SDXL else 'SD1.5'})",
                 ckpt_name=name, properties={"models": [{"name": name, "url": MODEL_URLS[name],
                                                        "directory": "checkpoints"}]})


def _demo_model(g: Graph) -> Node:
    return g.add("ExpanseDemoModelLoader", "Demo model (no download)", weights=DEMO_WEIGHTS)


def _prompts(g: Graph, clip: Out, positive: str, negative: str) -> tuple[Node, Node]:
    pos = g.add("CLIPTextEncode", "Positive prompt", text=positive, clip=clip)
    neg = g.add("CLIPTextEncode", "Negative prompt", text=negative, clip=clip)
    return pos, neg


def _demo_picture(g: Graph, model: Node, text: str, width: int, height: int, seed: int, title: str) -> Node:
    """A picture drawn by the demo model (text to image), for the demo templates whose technique
    starts from a picture: they need no file of the user's."""
    pos, neg = _prompts(g, model["CLIP"], text, "")
    latent = g.add("EmptyLatentImage", "Picture size", width=width, height=height, batch_size=1)
    sample = g.add("KSampler", "Draw the picture", model=model["MODEL"], seed=seed, steps=20, cfg=5.0,
                   sampler_name="euler", scheduler="normal", positive=pos["CONDITIONING"],
                   negative=neg["CONDITIONING"], latent_image=latent["LATENT"], denoise=1.0)
    decode = g.add("VAEDecode", "Picture", samples=sample["LATENT"], vae=model["VAE"])
    g.add("PreviewImage", title, images=decode["IMAGE"])
    return decode


# --- progressive growing -------------------------------------------------------------------------

def progressive_portrait(defs: Definitions) -> Graph:
    g = Graph("progressive_grow_portrait_2048", defs)
    g.note(f"""Progressive growing, 1536x2048 portrait with SDXL.

SDXL composes well near 1024x1024 and repeats subjects when asked for 2048 px at once. Progressive Grow Sampler draws the picture at half size first (768x1024, min_scale 0.5: SDXL's own size), then grows the latent in 3 stages to the Empty Latent Image's size, refining each stage with img2img. Composition comes from the small pass, detail from the large ones.

Needs {SDXL} (or any SDXL checkpoint) in models/checkpoints: the frontend offers its download when it is missing. For SD1.5 use min_scale 0.25 (512 px first stage). The "(demo model)" template of this technique runs the same nodes with no download.""",
           title="About this workflow")
    ckpt = _checkpoint(g, SDXL)
    pos, neg = _prompts(g, ckpt["CLIP"],
                        "portrait of an old lighthouse keeper with a white beard and a knitted cap, standing on "
                        "a rocky coast at golden hour, soft rim light, detailed skin and wool texture, "
                        "85mm photograph, shallow depth of field", NEGATIVE_SDXL)
    latent = g.add("EmptyLatentImage", "Final size", width=1536, height=2048, batch_size=1)
    grow = g.add("ExpanseProgressiveGrowSampler", model=ckpt["MODEL"], positive=pos["CONDITIONING"],
                 negative=neg["CONDITIONING"], latent_image=latent["LATENT"], seed=424242, steps=30, cfg=6.5,
                 sampler_name="dpmpp_2m", scheduler="karras", min_scale=0.5, max_scale=1.0, stages=3,
                 spacing="geometric", refine=True, denoise_second=0.5, denoise_last=0.3, refine_steps=10,
                 upscale_method="bislerp", stage_noise=0.03)
    g.note("""Stages: 768x1024 (30 steps) -> 1088x1448 (refine 10 steps at denoise 0.5) -> 1536x2048 (10 steps at 0.3).

denoise_second / denoise_last: how much each refine redraws; higher adds detail but can change the composition. stage_noise 0.03 adds a little fresh texture before each refine so skin and fabric do not go smooth.

The stage_latents output lists every stage's latent, smallest first, to inspect how the picture grew.""",
           title="Progressive Grow settings", near=grow)
    decode = g.add("ExpanseTiledVAEDecode", samples=grow["latent"], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.note("""Tiled VAE Decode in exact mode gives the same picture as a whole-image decode, with GPU memory bounded by the 1024 px tile. tile_size 0 picks the largest tile that fits the free memory.""",
           title="Decode", near=decode)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/progressive_portrait")
    return g


def progressive_demo(defs: Definitions) -> Graph:
    g = Graph("progressive_grow_demo", defs)
    g.note("""Progressive growing on the demo model: a 384x512 picture drawn at 192x256 (the size the demo model was trained at), then grown in 3 stages, each refined with img2img. The "Each stage" preview shows how it grew.

""" + DEMO_ABOUT.format(other=f"{TITLES['progressive_grow_portrait_2048']!r}", model="SDXL"),
           title="About this workflow")
    model = _demo_model(g)
    pos, neg = _prompts(g, model["CLIP"], "a sunset sky with a sun and clouds over mountains and a lake", "")
    latent = g.add("EmptyLatentImage", "Final size", width=384, height=512, batch_size=1)
    grow = g.add("ExpanseProgressiveGrowSampler", model=model["MODEL"], positive=pos["CONDITIONING"],
                 negative=neg["CONDITIONING"], latent_image=latent["LATENT"], seed=424242, steps=20, cfg=5.0,
                 sampler_name="dpmpp_2m", scheduler="karras", min_scale=0.5, max_scale=1.0, stages=3,
                 spacing="geometric", refine=True, denoise_second=0.5, denoise_last=0.3, refine_steps=8,
                 upscale_method="bislerp", stage_noise=0.03)
    g.note("""Stages: 192x256 (20 steps) -> 272x360 (refine 8 steps at denoise 0.5) -> 384x512 (8 steps at 0.3). min_scale is the first stage's size as a fraction of the final one; stages how many sizes in all.""",
           title="Progressive Grow settings", near=grow)
    decode = g.add("ExpanseTiledVAEDecode", samples=grow["latent"], vae=model["VAE"], tile_size=256, mode="exact",
                   padding=96)
    stages = g.add("VAEDecode", "Decode each stage", samples=grow["stage_latents"], vae=model["VAE"])
    g.add("PreviewImage", "Each stage", images=stages["IMAGE"])
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/progressive_demo")
    return g


# --- tiled diffusion -------------------------------------------------------------------------------

def tiled_panorama(defs: Definitions) -> Graph:
    g = Graph("tiled_diffusion_panorama", defs)
    g.note(f"""A 3072x1024 panorama with SD1.5 and Tiled Diffusion.

SD1.5 was trained at 512 px: asked for 3072x1024 in one go it repeats the scene and loses the horizon. Tiled Diffusion patches the model so the sampler denoises the canvas in 768x768 tiles (128 px overlap) whose predictions are fused at every step: each tile sees a size the model knows, and the overlaps tie them into one picture.

Needs {SD15} (or any SD1.5 checkpoint) in models/checkpoints: the frontend offers its download when it is missing. The "(demo model)" template of this technique runs the same nodes with no download.""",
           title="About this workflow")
    ckpt = _checkpoint(g, SD15)
    pos, neg = _prompts(g, ckpt["CLIP"],
                        "panoramic landscape photograph, snow-capped mountain range above a calm alpine lake at "
                        "sunset, pine forest on the shore, warm light on the peaks, reflections, wide angle, "
                        "highly detailed", NEGATIVE_SD15)
    tiled = g.add("ExpanseTiledDiffusion", model=ckpt["MODEL"], method="mixture_of_diffusers", tile_width=768,
                  tile_height=768, overlap=128, tile_batch_size=4, seed=0)
    g.note("""mixture_of_diffusers blends the tiles with Gaussian weights (smoother than multidiffusion at the same cost); shifted is the fastest (no overlap, the grid moves every step; give it 25+ steps).

3072x1024 with 768 px tiles and 128 px overlap: 5 x 2 = 10 tiles per step, 4 per model call. Raise tile_batch_size until the GPU is full.""",
           title="Tiled Diffusion settings", near=tiled)
    latent = g.add("EmptyLatentImage", "Panorama size", width=3072, height=1024, batch_size=1)
    sample = g.add("KSampler", model=tiled["MODEL"], seed=7, steps=30, cfg=7.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    decode = g.add("ExpanseTiledVAEDecode", samples=sample["LATENT"], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.note("""Any sampler works with the patched model (KSampler, KSamplerAdvanced, SamplerCustom). Tiled VAE Decode (exact) decodes the 3072x1024 latent without seams in bounded GPU memory.""",
           title="Sampling and decoding", near=sample)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/panorama")
    return g


def tiled_demo(defs: Definitions) -> Graph:
    g = Graph("tiled_diffusion_demo", defs)
    g.note("""A 1024x256 panorama on the demo model with Tiled Diffusion: 256 px tiles (the size the demo model was trained at) with 64 px overlap, 5 tiles per step, fused at every step into one picture.

""" + DEMO_ABOUT.format(other=f"{TITLES['tiled_diffusion_panorama']!r}", model="SD1.5"),
           title="About this workflow")
    model = _demo_model(g)
    pos, neg = _prompts(g, model["CLIP"], "a sunset sky with clouds over mountains and a lake", "")
    tiled = g.add("ExpanseTiledDiffusion", model=model["MODEL"], method="mixture_of_diffusers", tile_width=256,
                  tile_height=256, overlap=64, tile_batch_size=4, seed=0)
    g.note("""Try method multidiffusion (flat weights) or shifted (no overlap, the grid moves every step), or a wider canvas: each tile draws a scene of its own, which is why the sun and the ridges repeat. To keep one composition, draw small and grow it (the Poster template).""",
           title="Tiled Diffusion settings", near=tiled)
    latent = g.add("EmptyLatentImage", "Panorama size", width=1024, height=256, batch_size=1)
    sample = g.add("KSampler", model=tiled["MODEL"], seed=7, steps=20, cfg=5.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    decode = g.add("ExpanseTiledVAEDecode", samples=sample["LATENT"], vae=model["VAE"], tile_size=256, mode="exact",
                   padding=96)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/panorama_demo")
    return g


# --- regional prompts ------------------------------------------------------------------------------

REGIONS_ABOUT = """Region Prompt nodes are chained: each takes the chain so far and adds one region. x / y / width / height are fractions of the canvas (drag the box in the node's editor, or type them), so the layout survives a size change. Set canvas_width / canvas_height to the Empty Latent Image's size so the feather is measured on the right canvas."""


def region_composition(defs: Definitions) -> Graph:
    g = Graph("region_prompt_composition", defs)
    g.note(f"""Regional prompts with SDXL, 1536x1024: a living room (main prompt), a sofa across the lower half (background region) and two people on it (foreground regions).

{REGIONS_ABOUT}

Needs {SDXL} in models/checkpoints: the frontend offers its download when it is missing. The "(demo model)" template of this technique runs the same nodes with no download.""",
           title="About this workflow")
    ckpt = _checkpoint(g, SDXL)
    clip = ckpt["CLIP"]
    pos, neg = _prompts(g, clip, "a cozy living room in the evening, warm lamp light, bookshelves, large window, "
                                 "wooden floor, photograph", NEGATIVE_SDXL)
    sofa_text = g.add("CLIPTextEncode", "Sofa prompt",
                      text="a large green velvet sofa with soft cushions, photograph", clip=clip)
    left_text = g.add("CLIPTextEncode", "First character prompt",
                      text="a young woman with red hair in a yellow sweater, sitting, reading a book", clip=clip)
    right_text = g.add("CLIPTextEncode", "Second character prompt",
                       text="an old man with a grey beard in a blue cardigan, sitting, holding a cup of tea",
                       clip=clip)
    canvas = dict(canvas_width=1536, canvas_height=1024)
    sofa = g.add("ExpanseRegionPrompt", "Sofa (background)", conditioning=pos["CONDITIONING"],
                 region_conditioning=sofa_text["CONDITIONING"], x=0.0, y=0.45, width=1.0, height=0.55,
                 type="background", feather=0.25, strength=1.0, **canvas)
    g.note("""A background region blends with the prompt under it (a weighted average), good for a setting or an object that should sit in the scene: the sofa fills the lower 55% of the canvas.""",
           title="Background region", near=sofa)
    left = g.add("ExpanseRegionPrompt", "First character (foreground)", conditioning=sofa["CONDITIONING"],
                 region_conditioning=left_text["CONDITIONING"], x=0.08, y=0.15, width=0.36, height=0.8,
                 type="foreground", feather=0.2, strength=1.0, **canvas)
    right = g.add("ExpanseRegionPrompt", "Second character (foreground)", conditioning=left["CONDITIONING"],
                  region_conditioning=right_text["CONDITIONING"], x=0.56, y=0.12, width=0.36, height=0.83,
                  type="foreground", feather=0.2, strength=1.0, **canvas)
    g.note("""Foreground regions replace what is under them inside their feathered edge: one subject each. Later regions lie on top of earlier ones where they overlap. feather 0.2 fades the edge over a fifth of the box's smaller side.""",
           title="Foreground regions", near=left)
    tiled = g.add("ExpanseTiledDiffusion", model=ckpt["MODEL"], method="multidiffusion", tile_width=1024,
                  tile_height=1024, overlap=128, tile_batch_size=4, seed=0)
    g.note("""Through Tiled Diffusion the foregrounds are composited exactly (each evaluated on its own and blended by its mask) and each 1024 px tile evaluates only the regions it meets. A plain KSampler without it also works (ComfyUI's own area/mask conditioning).""",
           title="Why Tiled Diffusion here", near=tiled)
    latent = g.add("EmptyLatentImage", "Canvas", width=1536, height=1024, batch_size=1)
    sample = g.add("KSampler", model=tiled["MODEL"], seed=1234, steps=30, cfg=6.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=right["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    decode = g.add("ExpanseTiledVAEDecode", samples=sample["LATENT"], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/regions")
    return g


def region_demo(defs: Definitions) -> Graph:
    g = Graph("region_prompt_demo", defs)
    g.note(f"""Regional prompts on the demo model, 384x256: a landscape (main prompt), a golden field across the lower part (background region), red and white checks on the left and yellow circles on blue on the right (foreground regions): the patterns show where each region lies.

{REGIONS_ABOUT}

""" + DEMO_ABOUT.format(other=f"{TITLES['region_prompt_composition']!r}", model="SDXL"),
           title="About this workflow")
    model = _demo_model(g)
    clip = model["CLIP"]
    pos, neg = _prompts(g, clip, "a day sky with clouds over mountains and a lake", "")
    field_text = g.add("CLIPTextEncode", "Field prompt", text="a day sky over a golden field", clip=clip)
    left_text = g.add("CLIPTextEncode", "Left prompt", text="red and white checks", clip=clip)
    right_text = g.add("CLIPTextEncode", "Right prompt", text="yellow circles on a blue background", clip=clip)
    canvas = dict(canvas_width=384, canvas_height=256)
    field = g.add("ExpanseRegionPrompt", "Field (background)", conditioning=pos["CONDITIONING"],
                  region_conditioning=field_text["CONDITIONING"], x=0.0, y=0.55, width=1.0, height=0.45,
                  type="background", feather=0.25, strength=1.0, **canvas)
    left = g.add("ExpanseRegionPrompt", "Checks (foreground)", conditioning=field["CONDITIONING"],
                 region_conditioning=left_text["CONDITIONING"], x=0.06, y=0.12, width=0.34, height=0.6,
                 type="foreground", feather=0.15, strength=1.0, **canvas)
    right = g.add("ExpanseRegionPrompt", "Circles (foreground)", conditioning=left["CONDITIONING"],
                  region_conditioning=right_text["CONDITIONING"], x=0.6, y=0.3, width=0.34, height=0.6,
                  type="foreground", feather=0.15, strength=1.0, **canvas)
    g.note("""A background region blends with the prompt under it; a foreground region replaces what is under it inside its feathered edge. Drag a box in a node's editor and run again.""",
           title="Regions", near=left)
    tiled = g.add("ExpanseTiledDiffusion", model=model["MODEL"], method="multidiffusion", tile_width=256,
                  tile_height=256, overlap=64, tile_batch_size=4, seed=0)
    latent = g.add("EmptyLatentImage", "Canvas", width=384, height=256, batch_size=1)
    sample = g.add("KSampler", model=tiled["MODEL"], seed=1234, steps=20, cfg=4.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=right["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    decode = g.add("ExpanseTiledVAEDecode", samples=sample["LATENT"], vae=model["VAE"], tile_size=256, mode="exact",
                   padding=96)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/regions_demo")
    return g


# --- chess tile redraw -------------------------------------------------------------------------------

def chess_upscale(defs: Definitions) -> Graph:
    g = Graph("chess_redraw_upscale_2x_4x", defs)
    g.note(f"""Upscale a picture 2x, then 2x again (4x in all), redrawing it tile by tile with SD1.5 (Ultimate SD Upscale's technique).

Each Chess Tile Redraw resizes the picture (float lanczos, or an upscale model on its optional input), encodes it once with the tiled VAE, redraws 512 px tiles at low denoise in chess order and in batches, fixes the seams, and decodes once. Two 2x steps keep more detail than one 4x step: the second pass redraws what the first one added.

Load your picture in Load Image; the prompt should describe it. Needs {SD15} in models/checkpoints: the frontend offers its download when it is missing. The "(demo model)" template of this technique runs the same nodes with no download.""",
           title="About this workflow")
    ckpt = _checkpoint(g, SD15)
    picture = g.add("LoadImage", "Picture to upscale", image=EXAMPLE_IMAGE)
    pos, neg = _prompts(g, ckpt["CLIP"], "a detailed landscape photograph, sharp focus, fine texture, high quality",
                        NEGATIVE_SD15)
    sampling = dict(model=ckpt["MODEL"], positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                    vae=ckpt["VAE"], cfg=7.0, sampler_name="dpmpp_2m", scheduler="karras", tile_width=512,
                    tile_height=512, tile_batch_size=4, redraw_order="chess")
    first = g.add("ExpanseChessTileRedraw", "Chess Tile Redraw 2x", image=picture["IMAGE"], upscale_by=2.0, seed=101,
                  steps=20, denoise=0.35, padding=64, mask_feather=32, seam_fix="band", seam_fix_denoise=0.3,
                  seam_fix_width=64, seam_fix_feather=16, **sampling)
    g.note("""2x: denoise 0.35 adds detail and keeps the picture; 512 px tiles suit SD1.5 (768-1024 for SDXL). padding 64 is the context each tile sees around itself; mask_feather fades its result into the neighbours. seam_fix band redraws a 64 px strip on each tile border afterwards.""",
           title="First pass", near=first)
    g.add("PreviewImage", "2x result", images=first["image"])
    second = g.add("ExpanseChessTileRedraw", "Chess Tile Redraw 4x", image=first["image"], upscale_by=2.0, seed=202,
                   steps=20, denoise=0.3, padding=96, mask_feather=48, seam_fix="half_tile", seam_fix_denoise=0.25,
                   seam_fix_width=64, seam_fix_feather=32, **sampling)
    g.note("""4x: a lower denoise (0.3) at the larger size, where each tile covers less of the picture; seam_fix half_tile redraws tiles centred on the borders. tile_batch_size only changes speed, never the picture.""",
           title="Second pass", near=second)
    g.add("SaveImage", images=second["image"], filename_prefix="expanse/chess_upscale_4x")
    return g


def chess_demo(defs: Definitions) -> Graph:
    g = Graph("chess_redraw_demo", defs)
    g.note("""Upscale a picture 2x by redrawing it tile by tile on the demo model (Ultimate SD Upscale's technique): the demo model first draws a 256x192 picture, then Chess Tile Redraw resizes it to 512x384 and redraws it in 256x192 px tiles at denoise 0.35, in chess order (2 tiles, then the other 2), and fixes the seams.

To upscale a picture of your own, put a Load Image in place of the drawn picture.

""" + DEMO_ABOUT.format(other=f"{TITLES['chess_redraw_upscale_2x_4x']!r}", model="SD1.5"),
           title="About this workflow")
    model = _demo_model(g)
    picture = _demo_picture(g, model, "a day sky with clouds over mountains and a forest", 256, 192, seed=11,
                            title="Picture to upscale")
    pos, neg = _prompts(g, model["CLIP"], "a day sky with clouds over mountains and a forest", "")
    redraw = g.add("ExpanseChessTileRedraw", "Chess Tile Redraw 2x", model=model["MODEL"],
                   positive=pos["CONDITIONING"], negative=neg["CONDITIONING"], vae=model["VAE"], image=picture["IMAGE"],
                   upscale_by=2.0, seed=101, steps=10, cfg=5.0, sampler_name="dpmpp_2m", scheduler="karras",
                   denoise=0.35, tile_width=256, tile_height=192, padding=32, mask_feather=16, tile_batch_size=4,
                   redraw_order="chess", seam_fix="band", seam_fix_denoise=0.3, seam_fix_width=32, seam_fix_feather=8)
    g.note("""denoise 0.35 adds detail and keeps the picture; padding is the context each tile sees around itself; seam_fix band redraws a strip on each tile border afterwards. tile_batch_size only changes speed, never the picture.""",
           title="Redraw settings", near=redraw)
    g.add("SaveImage", images=redraw["image"], filename_prefix="expanse/chess_upscale_demo")
    return g


def _sky_mask(g: Graph) -> Node:
    """The top half white: a 64x64 mask the redraw stretches over any picture (a soft edge)."""
    black = g.add("SolidMask", "Keep (black)", value=0.0, width=64, height=64)
    white = g.add("SolidMask", "Redraw (white)", value=1.0, width=64, height=32)
    return g.add("MaskComposite", "Mask: the top half", destination=black["MASK"], source=white["MASK"], x=0, y=0,
                 operation="add")


def _one_redraw(g: Graph, loader: Node, picture: Out, prompts: tuple[str, str], title: str, note: tuple[str, str],
                prefix: str, **settings) -> Node:
    """Prompts, one Chess Tile Redraw of `picture` with the loader's model, a note by it (title,
    text) and a Save Image of its picture."""
    pos, neg = _prompts(g, loader["CLIP"], *prompts)
    redraw = g.add("ExpanseChessTileRedraw", title, model=loader["MODEL"], positive=pos["CONDITIONING"],
                   negative=neg["CONDITIONING"], vae=loader["VAE"], image=picture, upscale_by=2.0, seed=101,
                   redraw_order="chess", tile_batch_size=4, **settings)
    g.note(note[1], title=note[0], near=redraw)
    g.add("SaveImage", images=redraw["image"], filename_prefix=prefix)
    return redraw


SD15_ABOUT = """Load your picture in Load Image; the prompt should describe {what}. Needs {model} in models/checkpoints: the frontend offers its download when it is missing. The "(demo model)" template of this technique runs the same nodes with no download."""
OWN_PICTURE = """To upscale a picture of your own, put a Load Image in place of the drawn picture.

"""
INVERSION_NOTE = """noise_inversion on: each tile starts from the noise the model inverts it to, not from random noise, so denoise {denoise} adds detail and keeps the composition (with random noise, tiles redraw their content at this strength: turn it off to compare). The inversion costs one more model call per step and tile. euler keeps the inversion; ancestral and SDE samplers add noise of their own at each step and partly undo it."""
MASK_NOTE = """mask: where to redraw (white), stretched over the picture. Outside it the picture stays as upscaled, bit for bit, and tiles whose paste cannot reach it are not sampled at all. Here the top half (the sky); to choose the part yourself, paint it in Load Image's mask editor (right-click the node, Open in MaskEditor) and connect Load Image's MASK to mask instead. color_match is off so that the prompt may change the sky's colours (on, a redraw keeps them)."""


def chess_inversion(defs: Definitions) -> Graph:
    g = Graph("chess_redraw_noise_inversion", defs)
    g.note("""Upscale a picture 2x and redraw it strongly (denoise 0.55) with SD1.5 without losing its composition: Chess Tile Redraw with noise inversion (the most praised upscale mode of the A1111 Tiled Diffusion extension).

""" + SD15_ABOUT.format(what="it", model=SD15), title="About this workflow")
    ckpt = _checkpoint(g, SD15)
    picture = g.add("LoadImage", "Picture to upscale", image=EXAMPLE_IMAGE)
    _one_redraw(g, ckpt, picture["IMAGE"],
                ("a detailed landscape photograph, sharp focus, fine texture, high quality", NEGATIVE_SD15),
                "Chess Tile Redraw 2x, noise inversion", ("Redraw settings", INVERSION_NOTE.format(denoise=0.55)),
                "expanse/chess_noise_inversion", steps=20, cfg=6.0, sampler_name="euler", scheduler="normal",
                denoise=0.55, tile_width=512, tile_height=512, padding=64, mask_feather=32, seam_fix="band",
                seam_fix_denoise=0.3, seam_fix_width=64, seam_fix_feather=16, noise_inversion=True)
    return g


def chess_inversion_demo(defs: Definitions) -> Graph:
    g = Graph("chess_redraw_noise_inversion_demo", defs)
    g.note("""Upscale a picture 2x and redraw it strongly (denoise 0.6) on the demo model without losing its composition: Chess Tile Redraw with noise inversion. The demo model first draws a 256x192 picture; the redraw doubles it and redraws 256x192 px tiles in chess order.

""" + OWN_PICTURE + DEMO_ABOUT.format(other=f"{TITLES['chess_redraw_noise_inversion']!r}", model="SD1.5"),
           title="About this workflow")
    model = _demo_model(g)
    text = "red and white vertical stripes"
    picture = _demo_picture(g, model, text, 256, 192, seed=2, title="Picture to upscale")
    _one_redraw(g, model, picture["IMAGE"], (text, ""), "Chess Tile Redraw 2x, noise inversion",
                ("Redraw settings", INVERSION_NOTE.format(denoise=0.6)), "expanse/chess_noise_inversion_demo",
                steps=8, cfg=4.0, sampler_name="euler", scheduler="normal", denoise=0.6, tile_width=256,
                tile_height=192, padding=32, mask_feather=16, noise_inversion=True)
    return g


def chess_masked(defs: Definitions) -> Graph:
    g = Graph("chess_redraw_masked", defs)
    g.note("""Upscale a picture 2x and redraw only part of it with SD1.5: Chess Tile Redraw with a mask. The rest of the picture is upscaled and kept as it is, and the tiles away from the mask cost nothing.

""" + SD15_ABOUT.format(what="the part you redraw", model=SD15), title="About this workflow")
    ckpt = _checkpoint(g, SD15)
    picture = g.add("LoadImage", "Picture to upscale", image=EXAMPLE_IMAGE)
    _one_redraw(g, ckpt, picture["IMAGE"], ("a dramatic sky with detailed clouds, sharp focus, high quality",
                                            NEGATIVE_SD15),
                "Chess Tile Redraw 2x, masked", ("Mask", MASK_NOTE), "expanse/chess_masked", mask=_sky_mask(g)["MASK"], color_match=False,
                steps=20, cfg=7.0, sampler_name="dpmpp_2m", scheduler="karras", denoise=0.45, tile_width=512,
                tile_height=512, padding=64, mask_feather=32)
    return g


def chess_masked_demo(defs: Definitions) -> Graph:
    g = Graph("chess_redraw_masked_demo", defs)
    g.note("""Upscale a picture 2x and redraw only its top half on the demo model: Chess Tile Redraw with a mask. The demo model first draws a 256x192 picture; the redraw doubles it and redraws the 128x96 px tiles under the mask, and keeps the rest as upscaled.

""" + OWN_PICTURE + DEMO_ABOUT.format(other=f"{TITLES['chess_redraw_masked']!r}", model="SD1.5"),
           title="About this workflow")
    model = _demo_model(g)
    picture = _demo_picture(g, model, "a day sky with clouds over mountains and a forest", 256, 192, seed=13,
                            title="Picture to upscale")
    _one_redraw(g, model, picture["IMAGE"], ("a sunset sky with clouds", ""), "Chess Tile Redraw 2x, masked",
                ("Mask", MASK_NOTE), "expanse/chess_masked_demo", mask=_sky_mask(g)["MASK"], color_match=False, steps=10, cfg=5.0,
                sampler_name="dpmpp_2m", scheduler="karras", denoise=0.5, tile_width=128, tile_height=96,
                padding=32, mask_feather=16)
    return g


# --- the poster pipeline ---------------------------------------------------------------------------

def poster(defs: Definitions) -> Graph:
    g = Graph("poster_progressive_chess_redraw", defs)
    g.note(f"""A 2048x3072 poster with SD1.5: Progressive Grow Sampler composes it (512x768 first, grown to 1024x1536), Chess Tile Redraw upscales the latent 2x and redraws it tile by tile for detail, Tiled VAE Decode turns it into the picture.

The latent goes from node to node without a decode/encode round trip, and the picture is decoded once, at the end. Needs {SD15} in models/checkpoints: the frontend offers its download when it is missing. The "(demo model)" template of this technique runs the same nodes with no download.""",
           title="About this workflow")
    ckpt = _checkpoint(g, SD15)
    pos, neg = _prompts(g, ckpt["CLIP"],
                        "vintage travel poster of a mountain village above a turquoise lake, bold flat colours, "
                        "art deco style, dramatic clouds, clean shapes, screen print texture", NEGATIVE_SD15)
    latent = g.add("EmptyLatentImage", "Composition size", width=1024, height=1536, batch_size=1)
    grow = g.add("ExpanseProgressiveGrowSampler", model=ckpt["MODEL"], positive=pos["CONDITIONING"],
                 negative=neg["CONDITIONING"], latent_image=latent["LATENT"], seed=2024, steps=25, cfg=7.0,
                 sampler_name="euler_ancestral", scheduler="normal", min_scale=0.5, max_scale=1.0, stages=2,
                 spacing="geometric", refine=True, denoise_second=0.5, denoise_last=0.35, refine_steps=12,
                 upscale_method="bislerp", stage_noise=0.0)
    g.note("""512x768 (SD1.5's own size) then 1024x1536 at denoise 0.5. Ancestral samplers work: each stage is an ordinary sampling run.""",
           title="Composition", near=grow)
    redraw = g.add("ExpanseChessTileRedraw", "Chess Tile Redraw 2x (latent)", model=ckpt["MODEL"],
                   positive=pos["CONDITIONING"], negative=neg["CONDITIONING"], vae=ckpt["VAE"], latent=grow["latent"],
                   upscale_by=2.0, seed=77, steps=20, cfg=6.0, sampler_name="dpmpp_2m", scheduler="karras",
                   denoise=0.3, tile_width=512, tile_height=512, padding=64, mask_feather=32, tile_batch_size=4,
                   redraw_order="chess", seam_fix="band", seam_fix_denoise=0.25, seam_fix_width=64,
                   seam_fix_feather=16)
    g.note(POSTER_REDRAW_NOTE.format(size="2048x3072", tile=512, tiles=24), title="Detail pass", near=redraw)
    decode = g.add("ExpanseTiledVAEDecode", samples=redraw["latent"], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/poster")
    return g


POSTER_REDRAW_NOTE = """With a latent connected, Chess Tile Redraw resizes it with float lanczos and redraws {tile} px tiles at denoise 0.3: {tiles} tiles at {size}, in chess order, 4 at a time. Its latent output goes on to Tiled VAE Decode; its image output is left unconnected, so the redraw does not decode the picture a second time (connect it only if you want that picture from it)."""


def poster_demo(defs: Definitions) -> Graph:
    g = Graph("poster_demo", defs)
    g.note("""The poster pipeline on the demo model, 576x864: Progressive Grow Sampler composes it (192x288 first, grown to 384x576), Chess Tile Redraw upscales the latent 1.5x and redraws it in 288 px tiles, Tiled VAE Decode turns it into the picture, once.

""" + DEMO_ABOUT.format(other=f"{TITLES['poster_progressive_chess_redraw']!r}", model="SD1.5"),
           title="About this workflow")
    model = _demo_model(g)
    pos, neg = _prompts(g, model["CLIP"], "a sunset sky with a sun and clouds over mountains and a lake", "")
    latent = g.add("EmptyLatentImage", "Composition size", width=384, height=576, batch_size=1)
    grow = g.add("ExpanseProgressiveGrowSampler", model=model["MODEL"], positive=pos["CONDITIONING"],
                 negative=neg["CONDITIONING"], latent_image=latent["LATENT"], seed=2024, steps=20, cfg=5.0,
                 sampler_name="euler_ancestral", scheduler="normal", min_scale=0.5, max_scale=1.0, stages=2,
                 spacing="geometric", refine=True, denoise_second=0.5, denoise_last=0.35, refine_steps=8,
                 upscale_method="bislerp", stage_noise=0.0)
    redraw = g.add("ExpanseChessTileRedraw", "Chess Tile Redraw 1.5x (latent)", model=model["MODEL"],
                   positive=pos["CONDITIONING"], negative=neg["CONDITIONING"], vae=model["VAE"], latent=grow["latent"],
                   upscale_by=1.5, seed=77, steps=10, cfg=5.0, sampler_name="dpmpp_2m", scheduler="karras",
                   denoise=0.3, tile_width=288, tile_height=288, padding=32, mask_feather=16, tile_batch_size=4,
                   redraw_order="chess", seam_fix="band", seam_fix_denoise=0.25, seam_fix_width=32,
                   seam_fix_feather=8)
    g.note(POSTER_REDRAW_NOTE.format(size="576x864", tile=288, tiles=6), title="Detail pass", near=redraw)
    decode = g.add("ExpanseTiledVAEDecode", samples=redraw["latent"], vae=model["VAE"], tile_size=256, mode="exact",
                   padding=96)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/poster_demo")
    return g


# --- the poster print: a latent chain streamed to a large file -------------------------------------

PRINT_CHAIN_NOTE = """Each Chess Tile Redraw takes the previous one's latent and returns its own (latent to latent): the picture is never decoded between passes, and their image outputs are left unconnected, so none of them decodes it. Each pass doubles the sides and redraws {tile} px tiles in chess order at a lower denoise than the last ({denoises}): the first pass invents the most detail, the later ones refine it without changing the picture."""

PRINT_SAVE_NOTE = """Save Large Image decodes the final latent tile by tile straight into a tiled, pyramidal BigTIFF in the output folder (Expanse/...tif): the picture is never held whole, so its size is bounded by disk, not RAM. It shows the overview here; open the file in a viewer that reads pyramidal TIFF (QuPath, vips, GIMP opens the full page), or the Deep Zoom .dzi in OpenSeadragon. Needs the tifffile package (pip install tifffile)."""


PRINT_DENOISES = (0.45, 0.4, 0.35)  # the seeds' recipe: each 2x pass redraws a little less


def _print(g: Graph, loader: Node, positive: str, negative: str, *, size: tuple[int, int], steps: int, cfg: float,
           redraw_steps: int, redraw_cfg: float, tile: int, padding: int, feather: int, prefix: str) -> None:
    """A picture drawn at `size`, three Chess Tile Redraw 2x passes latent to latent with denoise
    falling 0.45 -> 0.4 -> 0.35, and Save Large Image."""
    pos, neg = _prompts(g, loader["CLIP"], positive, negative)
    latent = g.add("EmptyLatentImage", "Picture size", width=size[0], height=size[1], batch_size=1)
    sample = g.add("KSampler", "Draw the picture", model=loader["MODEL"], seed=2024, steps=steps, cfg=cfg,
                   sampler_name="dpmpp_2m", scheduler="karras", positive=pos["CONDITIONING"],
                   negative=neg["CONDITIONING"], latent_image=latent["LATENT"], denoise=1.0)
    chained = sample["LATENT"]
    for i, denoise in enumerate(PRINT_DENOISES):
        redraw = g.add("ExpanseChessTileRedraw", f"Chess Tile Redraw 2x, pass {i + 1} (latent)", model=loader["MODEL"],
                       positive=pos["CONDITIONING"], negative=neg["CONDITIONING"], vae=loader["VAE"], latent=chained,
                       upscale_by=2.0, seed=77 + i, steps=redraw_steps, cfg=redraw_cfg,
                       sampler_name="dpmpp_2m", scheduler="karras", denoise=denoise, tile_width=tile, tile_height=tile,
                       padding=padding, mask_feather=feather, tile_batch_size=4, redraw_order="chess", seam_fix="band",
                       seam_fix_denoise=0.25, seam_fix_width=padding, seam_fix_feather=feather // 2)
        if i == 0:
            g.note(PRINT_CHAIN_NOTE.format(tile=tile, denoises=" -> ".join(f"{d:g}" for d in PRINT_DENOISES)),
                   title="Three 2x passes", near=redraw)
        chained = redraw["latent"]
    save = g.add("ExpanseSaveLargeImage", samples=chained, vae=loader["VAE"], filename_prefix=prefix, vae_mode="auto",
                 compression="deflate", deep_zoom=True)
    g.note(PRINT_SAVE_NOTE, title="Save Large Image", near=save)


def poster_print(defs: Definitions) -> Graph:
    g = Graph("poster_print_large_tiff", defs)
    g.note(f"""A 4096x6144 print with SD1.5 (35x52 cm at 300 dpi): a 512x768 picture, upscaled 2x three times by Chess Tile Redraw from latent to latent with falling denoise, saved by Save Large Image as a tiled, pyramidal BigTIFF (and a Deep Zoom picture) without ever holding the picture in memory.

The same chain goes on to 8K-32K: add passes. Memory stays at the latent canvas plus a tile's work; the file grows on disk. Needs {SD15} in models/checkpoints: the frontend offers its download when it is missing. The "(demo model)" template of this technique runs the same nodes with no download.""",
           title="About this workflow")
    _print(g, _checkpoint(g, SD15),
           "vintage travel poster of a mountain village above a turquoise lake, bold flat colours, art deco style, "
           "dramatic clouds, clean shapes, screen print texture", NEGATIVE_SD15, size=(512, 768), steps=25, cfg=7.0,
           redraw_steps=20, redraw_cfg=6.0, tile=512, padding=64, feather=32, prefix="Expanse/poster_print")
    return g


def poster_print_demo(defs: Definitions) -> Graph:
    g = Graph("poster_print_demo", defs)
    g.note("""The poster print on the demo model: a 96x128 picture, upscaled 2x three times by Chess Tile Redraw from latent to latent (192x256, 384x512, 768x1024) with denoise falling 0.45 -> 0.4 -> 0.35, saved by Save Large Image as a tiled, pyramidal BigTIFF and a Deep Zoom picture, decoded tile by tile straight into the files.

""" + DEMO_ABOUT.format(other=f"{TITLES['poster_print_large_tiff']!r}", model="SD1.5"),
           title="About this workflow")
    _print(g, _demo_model(g), "a day sky with clouds over mountains and a forest", "", size=(96, 128), steps=12,
           cfg=5.0, redraw_steps=4, redraw_cfg=5.0, tile=256, padding=32, feather=16, prefix="Expanse/poster_print_demo")
    return g


# --- latent upscale ----------------------------------------------------------------------------------

UPSCALE_METHODS = ("lanczos", "bislerp", "bicubic", "nearest-exact")


def _upscale_grid(g: Graph, model: Node, sample: Node, tile: int) -> Node:
    """The latent upscaled 2x by each method, each decoded, stitched into a 2x2 grid."""
    decoded = []
    for method in UPSCALE_METHODS:
        up = g.add("ExpanseLatentUpscaleAdvanced", f"Upscale 2x ({method})", samples=sample["LATENT"],
                   upscale_method=method, scale_by=2.0, width=0, height=0, antialias=True)
        decoded.append(g.add("ExpanseTiledVAEDecode", f"Decode ({method})", samples=up["LATENT"], vae=model["VAE"],
                             tile_size=tile, mode="exact", padding=96))
        if method == "lanczos":
            g.note("""scale_by 2 doubles each side. Set scale_by to 0 to give a width/height in pixels instead (0 keeps the aspect ratio). antialias matters only when shrinking. Connect a VAE to resize in pixel space instead (decode, resize, encode).""",
                   title="Upscale settings", near=up)
    stitch = dict(direction="right", match_image_size=True, spacing_width=16, spacing_color="white")
    top = g.add("ImageStitch", "Top row", image1=decoded[0]["IMAGE"], image2=decoded[1]["IMAGE"], **stitch)
    bottom = g.add("ImageStitch", "Bottom row", image1=decoded[2]["IMAGE"], image2=decoded[3]["IMAGE"], **stitch)
    return g.add("ImageStitch", "Grid", image1=top["IMAGE"], image2=bottom["IMAGE"], **dict(stitch, direction="down"))


def latent_upscale_grid(defs: Definitions) -> Graph:
    g = Graph("latent_upscale_methods_grid", defs)
    g.note(f"""Compare Latent Upscale Advanced's methods on one latent: a 512x512 SD1.5 picture, its latent upscaled 2x with lanczos, bislerp, bicubic and nearest-exact, each decoded without any refine, stitched into a 2x2 grid (top: lanczos, bislerp; bottom: bicubic, nearest-exact).

Decoding an upscaled latent directly shows what each method does to the latent: lanczos stays sharp, bislerp keeps the latent's vector lengths, bicubic blurs, nearest-exact is blocky. Before a refine (img2img at 0.4-0.6) the differences shrink but do not vanish.

Needs {SD15} in models/checkpoints: the frontend offers its download when it is missing. The "(demo model)" template of this technique runs the same nodes with no download.""",
           title="About this workflow")
    ckpt = _checkpoint(g, SD15)
    pos, neg = _prompts(g, ckpt["CLIP"], "a red brick house with white windows in a garden of flowers, sunny day, "
                                         "detailed photograph", NEGATIVE_SD15)
    latent = g.add("EmptyLatentImage", width=512, height=512, batch_size=1)
    sample = g.add("KSampler", model=ckpt["MODEL"], seed=5, steps=25, cfg=7.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    grid = _upscale_grid(g, ckpt, sample, 512)
    g.add("SaveImage", images=grid["IMAGE"], filename_prefix="expanse/latent_upscale_grid")
    return g


def latent_upscale_demo(defs: Definitions) -> Graph:
    g = Graph("latent_upscale_demo", defs)
    g.note("""Compare Latent Upscale Advanced's methods on the demo model: a 256x256 picture of checks, its latent upscaled 2x with lanczos, bislerp, bicubic and nearest-exact, each decoded without any refine, stitched into a 2x2 grid (top: lanczos, bislerp; bottom: bicubic, nearest-exact). Sharp edges show the differences best.

""" + DEMO_ABOUT.format(other=f"{TITLES['latent_upscale_methods_grid']!r}", model="SD1.5"),
           title="About this workflow")
    model = _demo_model(g)
    pos, neg = _prompts(g, model["CLIP"], "red and white checks", "")
    latent = g.add("EmptyLatentImage", width=256, height=256, batch_size=1)
    sample = g.add("KSampler", model=model["MODEL"], seed=5, steps=20, cfg=5.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    grid = _upscale_grid(g, model, sample, 256)
    g.add("SaveImage", images=grid["IMAGE"], filename_prefix="expanse/latent_upscale_demo")
    return g


# --- tiled VAE -------------------------------------------------------------------------------------

TILED_VAE_NOTE = """tile_size {tile}: the tile in input pixels; 0 picks one from free memory. mode fast estimates the statistics from a shrunken copy and decodes padded tiles independently: it bounds host memory too, and is approximate (padding is the context each tile sees)."""


def tiled_vae_roundtrip(defs: Definitions) -> Graph:
    g = Graph("tiled_vae_roundtrip", defs)
    g.note(f"""Encode a picture to SDXL's latent and back with the tiled VAE, and compare: the original (left) and the round trip (right), stitched side by side.

Exact mode shares the GroupNorm statistics of all tiles, so the result equals a whole-image encode/decode whatever the tile size, with GPU memory bounded by the tile: a 4K or 8K picture goes through a GPU that cannot hold it whole. What differs from the original is only the VAE's own loss.

Needs {SDXL} (its VAE is used) in models/checkpoints: the frontend offers its download when it is missing. Load any picture. The "(demo model)" template of this technique runs the same nodes with no download.""",
           title="About this workflow")
    ckpt = _checkpoint(g, SDXL)
    picture = g.add("LoadImage", "Picture", image=EXAMPLE_IMAGE)
    encode = g.add("ExpanseTiledVAEEncode", pixels=picture["IMAGE"], vae=ckpt["VAE"], tile_size=512, mode="exact",
                   padding=64)
    g.note(TILED_VAE_NOTE.format(tile=512), title="Tiled VAE settings", near=encode)
    decode = g.add("ExpanseTiledVAEDecode", samples=encode["LATENT"], vae=ckpt["VAE"], tile_size=512, mode="exact",
                   padding=96)
    compare = g.add("ImageStitch", "Original | round trip", image1=picture["IMAGE"], image2=decode["IMAGE"],
                    direction="right", match_image_size=True, spacing_width=16, spacing_color="white")
    g.add("SaveImage", images=compare["IMAGE"], filename_prefix="expanse/vae_roundtrip")
    return g


def tiled_vae_demo(defs: Definitions) -> Graph:
    g = Graph("tiled_vae_demo", defs)
    g.note("""A picture through the tiled VAE and back on the demo model: the demo model draws a 384x384 picture, Tiled VAE Encode and Tiled VAE Decode take it to the latent and back in 128 px tiles (exact mode), and the original (left) and the round trip (right) are stitched side by side. Exact mode gives the whole-image result whatever the tile size: no seams at the tile borders.

To try a picture of your own, put a Load Image in place of the drawn picture.

""" + DEMO_ABOUT.format(other=f"{TITLES['tiled_vae_roundtrip']!r}", model="SDXL's VAE"),
           title="About this workflow")
    model = _demo_model(g)
    picture = _demo_picture(g, model, "a night sky with a moon over mountains and a forest", 384, 384, seed=12,
                            title="Original")
    encode = g.add("ExpanseTiledVAEEncode", pixels=picture["IMAGE"], vae=model["VAE"], tile_size=128, mode="exact",
                   padding=64)
    g.note(TILED_VAE_NOTE.format(tile=128), title="Tiled VAE settings", near=encode)
    decode = g.add("ExpanseTiledVAEDecode", samples=encode["LATENT"], vae=model["VAE"], tile_size=128, mode="exact",
                   padding=96)
    compare = g.add("ImageStitch", "Original | round trip", image1=picture["IMAGE"], image2=decode["IMAGE"],
                    direction="right", match_image_size=True, spacing_width=16, spacing_color="white")
    g.add("SaveImage", images=compare["IMAGE"], filename_prefix="expanse/vae_roundtrip_demo")
    return g


# --- the templates -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """One template: `id` names it on the command line and in DEMO_RUNS (and seeds its workflow's
    id); `title` is its file name and its title in the template browser; `technique` says how its
    thumbnail is drawn (thumbnails.py); `demo`: it runs as it is on the demo model."""
    id: str
    title: str
    build: Callable[[Definitions], Graph]
    technique: str
    demo: bool = False

    @property
    def path(self) -> pathlib.Path:
        return EXAMPLE_DIR / f"{self.title}.json"

    @property
    def thumbnail_path(self) -> pathlib.Path:
        return EXAMPLE_DIR / f"{self.title}.jpg"


TEMPLATES = {t.id: t for t in [
    Template("progressive_grow_portrait_2048", "Progressive Grow (SDXL) - portrait 1536x2048", progressive_portrait,
             "progressive"),
    Template("progressive_grow_demo", "Progressive Grow (demo model) - portrait", progressive_demo, "progressive",
             demo=True),
    Template("tiled_diffusion_panorama", "Tiled Diffusion (SD1.5) - panorama 3072x1024", tiled_panorama,
             "tiled_diffusion"),
    Template("tiled_diffusion_demo", "Tiled Diffusion (demo model) - panorama", tiled_demo, "tiled_diffusion",
             demo=True),
    Template("region_prompt_composition", "Region Prompts (SDXL) - sofa and two people", region_composition,
             "regions"),
    Template("region_prompt_demo", "Region Prompts (demo model) - three regions", region_demo, "regions", demo=True),
    Template("chess_redraw_upscale_2x_4x", "Chess Tile Redraw (SD1.5) - upscale 4x in two passes", chess_upscale,
             "upscale"),
    Template("chess_redraw_demo", "Chess Tile Redraw (demo model) - upscale 2x", chess_demo, "upscale", demo=True),
    Template("chess_redraw_noise_inversion", "Chess Tile Redraw (SD1.5) - strong 2x redraw with noise inversion",
             chess_inversion, "upscale"),
    Template("chess_redraw_noise_inversion_demo", "Chess Tile Redraw (demo model) - strong 2x redraw with noise "
             "inversion", chess_inversion_demo, "upscale", demo=True),
    Template("chess_redraw_masked", "Chess Tile Redraw (SD1.5) - 2x, redraw only the masked part", chess_masked,
             "upscale"),
    Template("chess_redraw_masked_demo", "Chess Tile Redraw (demo model) - 2x, redraw only the masked part",
             chess_masked_demo, "upscale", demo=True),
    Template("poster_progressive_chess_redraw", "Poster (SD1.5) - 2048x3072, progressive grow + chess redraw", poster,
             "poster"),
    Template("poster_demo", "Poster (demo model) - progressive grow + chess redraw", poster_demo, "poster",
             demo=True),
    Template("poster_print_large_tiff", "Poster Print (SD1.5) - 4096x6144 in three 2x passes, saved as a large TIFF",
             poster_print, "print"),
    Template("poster_print_demo", "Poster Print (demo model) - three 2x passes, saved as a large TIFF",
             poster_print_demo, "print", demo=True),
    Template("latent_upscale_methods_grid", "Latent Upscale (SD1.5) - four methods compared", latent_upscale_grid,
             "upscale_methods"),
    Template("latent_upscale_demo", "Latent Upscale (demo model) - four methods compared", latent_upscale_demo,
             "upscale_methods", demo=True),
    Template("tiled_vae_roundtrip", "Tiled VAE (SDXL) - encode and decode round trip", tiled_vae_roundtrip,
             "tiled_vae"),
    Template("tiled_vae_demo", "Tiled VAE (demo model) - encode and decode round trip", tiled_vae_demo, "tiled_vae",
             demo=True),
]}
TITLES = {t.id: t.title for t in TEMPLATES.values()}
WORKFLOWS = {t.id: t.build for t in TEMPLATES.values()}  # id -> builder (defs -> Graph)
DEMO_TEMPLATES = [t.id for t in TEMPLATES.values() if t.demo]


def template_for(path_or_title) -> Template:
    """The template of a file in example_workflows/ (a path, or its name without .json)."""
    title = pathlib.Path(path_or_title).stem if isinstance(path_or_title, pathlib.Path) else str(path_or_title)
    for template in TEMPLATES.values():
        if template.title == title:
            return template
    raise KeyError(f"no template is titled {title!r}")


# What the thumbnail (and the end-to-end test) changes to run each template with the demo model:
#   prompts: CLIPTextEncode title -> text the demo model knows (other prompts become ""); without
#     it (the demo templates) every prompt is kept;
#   scale: sizes, tiles and canvases are divided by it (the demo model was trained at 256 px:
#     4 for SDXL's 1024 px, 2-4 for SD1.5's 512 px; 1 for the demo templates, drawn at their own size);
#   steps: the most sampling steps any sampler runs;
#   images: LoadImage file -> (width, height, demo prompt) of the picture to draw for it, at full size.
DEMO_RUNS = {
    "progressive_grow_portrait_2048": {
        "prompts": {"Positive prompt": "a sunset sky with a sun and clouds over mountains and a lake"},
        "scale": 4, "steps": 20},
    "tiled_diffusion_panorama": {
        "prompts": {"Positive prompt": "a sunset sky with clouds over mountains and a lake"},
        "scale": 3, "steps": 20},
    "region_prompt_composition": {
        "prompts": {"Positive prompt": "a day sky with clouds over mountains and a lake",
                    "Sofa prompt": "a day sky over a golden field",
                    "First character prompt": "red and white checks",
                    "Second character prompt": "yellow circles on a blue background"},
        "scale": 4, "steps": 20},
    "chess_redraw_upscale_2x_4x": {
        "prompts": {"Positive prompt": "a day sky with clouds over mountains and a forest"},
        "scale": 4, "steps": 12,
        "images": {EXAMPLE_IMAGE: (512, 384, "a day sky with clouds over mountains and a forest")}},
    "chess_redraw_noise_inversion": {
        "prompts": {"Positive prompt": "red and white vertical stripes"},
        "scale": 4, "steps": 8,
        "images": {EXAMPLE_IMAGE: (512, 384, "red and white vertical stripes")}},
    "chess_redraw_masked": {
        "prompts": {"Positive prompt": "a sunset sky with clouds"},
        "scale": 4, "steps": 10,
        "images": {EXAMPLE_IMAGE: (512, 384, "a day sky with clouds over mountains and a forest")}},
    "poster_progressive_chess_redraw": {
        "prompts": {"Positive prompt": "a sunset sky with a sun and clouds over mountains and a lake"},
        "scale": 4, "steps": 12},
    "poster_print_large_tiff": {  # 1/6: the final picture (704x1024) is its own overview
        "prompts": {"Positive prompt": "a day sky with clouds over mountains and a forest"},
        "scale": 6, "steps": 12},
    "latent_upscale_methods_grid": {
        "prompts": {"Positive prompt": "red and white checks"}, "scale": 4, "steps": 20},
    "tiled_vae_roundtrip": {
        "scale": 4, "steps": 20,
        "images": {EXAMPLE_IMAGE: (1024, 1024, "a night sky with a moon over mountains and a forest")}},
}
DEMO_RUNS.update({name: {"scale": 1} for name in DEMO_TEMPLATES})


def demo_settings(name: str, defs: Definitions) -> dict:
    """The demo-run settings of a template by id: its DEMO_RUNS entry, and the pixel and step
    inputs of its node types as these node definitions declare them (demo_scale.scaled_inputs)."""
    node_types = {node.type for node in WORKFLOWS[name](defs).nodes}
    return dict(copy.deepcopy(DEMO_RUNS[name]), **scaled_inputs(defs, node_types))
