"""The seven example workflows in example_workflows/: each described compactly as a Graph (nodes,
their wiring, the values that differ from the defaults, and the notes), and, as data, what it takes
to run it with the demo model (DEMO_RUNS). scripts/workflows.py writes them; the end-to-end tests
check the files against what these builders give and run each one.
"""
from __future__ import annotations

import copy

from ..host import ROOT
from .demo_scale import scaled_inputs
from .save_format import Definitions, Graph, Node, Out

EXAMPLE_DIR = ROOT / "example_workflows"
SD15 = "v1-5-pruned-emaonly.safetensors"
SDXL = "sd_xl_base_1.0.safetensors"
EXAMPLE_IMAGE = "example.png"  # ComfyUI ships input/example.png; users pick their own picture

# --- the example workflows -----------------------------------------------------------------------

NEGATIVE_SD15 = "blurry, lowres, jpeg artifacts, watermark, text, deformed"
NEGATIVE_SDXL = "blurry, lowres, oversaturated, watermark, text, deformed, extra fingers"


def _prompts(g: Graph, clip: Out, positive: str, negative: str) -> tuple[Node, Node]:
    pos = g.add("CLIPTextEncode", "Positive prompt", text=positive, clip=clip)
    neg = g.add("CLIPTextEncode", "Negative prompt", text=negative, clip=clip)
    return pos, neg


def progressive_portrait(defs: Definitions) -> Graph:
    g = Graph("progressive_grow_portrait_2048", defs)
    g.note("""Progressive growing, 1536x2048 portrait with SDXL.

SDXL composes well near 1024x1024 and repeats subjects when asked for 2048 px at once. Progressive Grow Sampler draws the picture at half size first (768x1024, min_scale 0.5: SDXL's own size), then grows the latent in 3 stages to the Empty Latent Image's size, refining each stage with img2img. Composition comes from the small pass, detail from the large ones.

Put sd_xl_base_1.0.safetensors (or any SDXL checkpoint) in models/checkpoints. For SD1.5 use min_scale 0.25 (512 px first stage).""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SDXL)", ckpt_name=SDXL)
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
    decode = g.add("ExpanseTiledVAEDecode", samples=grow[0], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.note("""Tiled VAE Decode in exact mode gives the same picture as a whole-image decode, with GPU memory bounded by the 1024 px tile. tile_size 0 picks the largest tile that fits the free memory.""",
           title="Decode", near=decode)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/progressive_portrait")
    return g


def tiled_panorama(defs: Definitions) -> Graph:
    g = Graph("tiled_diffusion_panorama", defs)
    g.note("""A 3072x1024 panorama with SD1.5 and Tiled Diffusion.

SD1.5 was trained at 512 px: asked for 3072x1024 in one go it repeats the scene and loses the horizon. Tiled Diffusion patches the model so the sampler denoises the canvas in 768x768 tiles (128 px overlap) whose predictions are fused at every step: each tile sees a size the model knows, and the overlaps tie them into one picture.

Put v1-5-pruned-emaonly.safetensors (or any SD1.5 checkpoint) in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", ckpt_name=SD15)
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


def region_composition(defs: Definitions) -> Graph:
    g = Graph("region_prompt_composition", defs)
    g.note("""Regional prompts with SDXL, 1536x1024: a living room (main prompt), a sofa across the lower half (background region) and two people on it (foreground regions).

Region Prompt nodes are chained: each takes the chain so far and adds one region. x / y / width / height are fractions of the canvas (drag the box in the node's editor, or type them), so the layout survives a size change. Set canvas_width / canvas_height to the Empty Latent Image's size so the feather is measured on the right canvas.

Put sd_xl_base_1.0.safetensors in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SDXL)", ckpt_name=SDXL)
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


def chess_upscale(defs: Definitions) -> Graph:
    g = Graph("chess_redraw_upscale_2x_4x", defs)
    g.note("""Upscale a picture 2x, then 2x again (4x in all), redrawing it tile by tile with SD1.5 (Ultimate SD Upscale's technique).

Each Chess Tile Redraw resizes the picture (float lanczos, or an upscale model on its optional input), encodes it once with the tiled VAE, redraws 512 px tiles at low denoise in chess order and in batches, fixes the seams, and decodes once. Two 2x steps keep more detail than one 4x step: the second pass redraws what the first one added.

Load your picture in Load Image; the prompt should describe it. Put v1-5-pruned-emaonly.safetensors in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", ckpt_name=SD15)
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
    g.add("PreviewImage", "2x result", images=first["IMAGE"])
    second = g.add("ExpanseChessTileRedraw", "Chess Tile Redraw 4x", image=first["IMAGE"], upscale_by=2.0, seed=202,
                   steps=20, denoise=0.3, padding=96, mask_feather=48, seam_fix="half_tile", seam_fix_denoise=0.25,
                   seam_fix_width=64, seam_fix_feather=32, **sampling)
    g.note("""4x: a lower denoise (0.3) at the larger size, where each tile covers less of the picture; seam_fix half_tile redraws tiles centred on the borders. tile_batch_size only changes speed, never the picture.""",
           title="Second pass", near=second)
    g.add("SaveImage", images=second["IMAGE"], filename_prefix="expanse/chess_upscale_4x")
    return g


def poster(defs: Definitions) -> Graph:
    g = Graph("poster_progressive_chess_redraw", defs)
    g.note("""A 2048x3072 poster with SD1.5: Progressive Grow Sampler composes it (512x768 first, grown to 1024x1536), Chess Tile Redraw upscales the latent 2x and redraws it tile by tile for detail, Tiled VAE Decode turns it into the picture.

The latent goes from node to node without a decode/encode round trip. Put v1-5-pruned-emaonly.safetensors in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", ckpt_name=SD15)
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
                   positive=pos["CONDITIONING"], negative=neg["CONDITIONING"], vae=ckpt["VAE"], latent=grow[0],
                   upscale_by=2.0, seed=77, steps=20, cfg=6.0, sampler_name="dpmpp_2m", scheduler="karras",
                   denoise=0.3, tile_width=512, tile_height=512, padding=64, mask_feather=32, tile_batch_size=4,
                   redraw_order="chess", seam_fix="band", seam_fix_denoise=0.25, seam_fix_width=64,
                   seam_fix_feather=16)
    g.note("""With a latent connected, Chess Tile Redraw resizes it with float lanczos and redraws 512 px tiles at denoise 0.3: 24 tiles at 2048x3072, in chess order, 4 at a time. Its LATENT output goes on to the decode; its IMAGE output is the same picture, decoded.""",
           title="Detail pass", near=redraw)
    decode = g.add("ExpanseTiledVAEDecode", samples=redraw["LATENT"], vae=ckpt["VAE"], tile_size=1024, mode="exact",
                   padding=96)
    g.add("SaveImage", images=decode["IMAGE"], filename_prefix="expanse/poster")
    return g


def latent_upscale_grid(defs: Definitions) -> Graph:
    g = Graph("latent_upscale_methods_grid", defs)
    g.note("""Compare Latent Upscale Advanced's methods on one latent: a 512x512 SD1.5 picture, its latent upscaled 2x with lanczos, bislerp, bicubic and nearest-exact, each decoded without any refine, stitched into a 2x2 grid (top: lanczos, bislerp; bottom: bicubic, nearest-exact).

Decoding an upscaled latent directly shows what each method does to the latent: lanczos stays sharp, bislerp keeps the latent's vector lengths, bicubic blurs, nearest-exact is blocky. Before a refine (img2img at 0.4-0.6) the differences shrink but do not vanish.

Put v1-5-pruned-emaonly.safetensors in models/checkpoints.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SD1.5)", ckpt_name=SD15)
    pos, neg = _prompts(g, ckpt["CLIP"], "a red brick house with white windows in a garden of flowers, sunny day, "
                                         "detailed photograph", NEGATIVE_SD15)
    latent = g.add("EmptyLatentImage", width=512, height=512, batch_size=1)
    sample = g.add("KSampler", model=ckpt["MODEL"], seed=5, steps=25, cfg=7.0, sampler_name="dpmpp_2m",
                   scheduler="karras", positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                   latent_image=latent["LATENT"], denoise=1.0)
    decoded = []
    for method in ("lanczos", "bislerp", "bicubic", "nearest-exact"):
        up = g.add("ExpanseLatentUpscaleAdvanced", f"Upscale 2x ({method})", samples=sample["LATENT"], upscale_method=method,
                   scale_by=2.0, width=0, height=0, antialias=True)
        decoded.append(g.add("ExpanseTiledVAEDecode", f"Decode ({method})", samples=up["LATENT"], vae=ckpt["VAE"],
                             tile_size=512, mode="exact", padding=96))
        if method == "lanczos":
            g.note("""scale_by 2: 512 -> 1024 px. Set scale_by to 0 to give a width/height in pixels instead (0 keeps the aspect ratio). antialias matters only when shrinking. Connect a VAE to resize in pixel space instead (decode, resize, encode).""",
                   title="Upscale settings", near=up)
    stitch = dict(direction="right", match_image_size=True, spacing_width=16, spacing_color="white")
    top = g.add("ImageStitch", "Top row", image1=decoded[0]["IMAGE"], image2=decoded[1]["IMAGE"], **stitch)
    bottom = g.add("ImageStitch", "Bottom row", image1=decoded[2]["IMAGE"], image2=decoded[3]["IMAGE"], **stitch)
    grid = g.add("ImageStitch", "Grid", image1=top["IMAGE"], image2=bottom["IMAGE"],
                 **dict(stitch, direction="down"))
    g.add("SaveImage", images=grid["IMAGE"], filename_prefix="expanse/latent_upscale_grid")
    return g


def tiled_vae_roundtrip(defs: Definitions) -> Graph:
    g = Graph("tiled_vae_roundtrip", defs)
    g.note("""Encode a picture to SDXL's latent and back with the tiled VAE, and compare: the original (left) and the round trip (right), stitched side by side.

Exact mode shares the GroupNorm statistics of all tiles, so the result equals a whole-image encode/decode whatever the tile size, with GPU memory bounded by the tile: a 4K or 8K picture goes through a GPU that cannot hold it whole. What differs from the original is only the VAE's own loss.

Put sd_xl_base_1.0.safetensors (its VAE is used) in models/checkpoints and load any picture.""", title="About this workflow")
    ckpt = g.add("CheckpointLoaderSimple", "Load Checkpoint (SDXL)", ckpt_name=SDXL)
    picture = g.add("LoadImage", "Picture", image=EXAMPLE_IMAGE)
    encode = g.add("ExpanseTiledVAEEncode", pixels=picture["IMAGE"], vae=ckpt["VAE"], tile_size=512, mode="exact",
                   padding=64)
    g.note("""tile_size 512: the tile in input pixels; 0 picks one from free memory. mode fast estimates the statistics from a shrunken copy and decodes padded tiles independently: it bounds host memory too, and is approximate (padding is the context each tile sees).""",
           title="Tiled VAE settings", near=encode)
    decode = g.add("ExpanseTiledVAEDecode", samples=encode["LATENT"], vae=ckpt["VAE"], tile_size=512, mode="exact",
                   padding=96)
    compare = g.add("ImageStitch", "Original | round trip", image1=picture["IMAGE"], image2=decode["IMAGE"],
                    direction="right", match_image_size=True, spacing_width=16, spacing_color="white")
    g.add("SaveImage", images=compare["IMAGE"], filename_prefix="expanse/vae_roundtrip")
    return g


WORKFLOWS = {
    "progressive_grow_portrait_2048": progressive_portrait,
    "tiled_diffusion_panorama": tiled_panorama,
    "region_prompt_composition": region_composition,
    "chess_redraw_upscale_2x_4x": chess_upscale,
    "poster_progressive_chess_redraw": poster,
    "latent_upscale_methods_grid": latent_upscale_grid,
    "tiled_vae_roundtrip": tiled_vae_roundtrip,
}


# What the thumbnail (and the end-to-end test) changes to run each example with the demo model:
#   prompts: CLIPTextEncode title -> text the demo model knows (other prompts become "");
#   scale: sizes, tiles and canvases are divided by it (the demo model was trained at 256 px:
#     4 for SDXL's 1024 px, 2-4 for SD1.5's 512 px);
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
        "prompts": {"Positive prompt": "a day sky with clouds over a green field",
                    "Sofa prompt": "a day sky over a golden field",
                    "First character prompt": "a night sky with a moon over a forest",
                    "Second character prompt": "a sunset sky with a sun over a lake"},
        "scale": 4, "steps": 20},
    "chess_redraw_upscale_2x_4x": {
        "prompts": {"Positive prompt": "a sunset sky with a sun and clouds over mountains and a lake"},
        "scale": 4, "steps": 12,
        "images": {EXAMPLE_IMAGE: (512, 384, "a sunset sky with a sun and clouds over mountains and a lake")}},
    "poster_progressive_chess_redraw": {
        "prompts": {"Positive prompt": "a sunset sky with a sun and clouds over mountains and a lake"},
        "scale": 4, "steps": 12},
    "latent_upscale_methods_grid": {
        "prompts": {"Positive prompt": "red and white checks"}, "scale": 4, "steps": 20},
    "tiled_vae_roundtrip": {
        "scale": 4, "steps": 20,
        "images": {EXAMPLE_IMAGE: (1024, 1024, "a night sky with a moon over mountains and a forest")}},
}


def demo_settings(name: str, defs: Definitions) -> dict:
    """The demo-run settings of a workflow by name: its DEMO_RUNS entry, and the pixel and step
    inputs of its node types as these node definitions declare them (demo_scale.scaled_inputs)."""
    node_types = {node.type for node in WORKFLOWS[name](defs).nodes}
    return dict(copy.deepcopy(DEMO_RUNS[name]), **scaled_inputs(defs, node_types))
