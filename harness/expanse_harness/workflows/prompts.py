"""API prompts written directly rather than converted from a saved workflow: the plain
text-to-image graph (the end-to-end tests) and the pictures drawn with the demo model for the
LoadImage nodes of an example."""
from __future__ import annotations

DEMO_WEIGHTS = "expanse-demo.safetensors"


def text_to_image_prompt(loader: dict, text: str, width: int, height: int, steps: int, seed: int,
                         tile: int = 512, diffusion_tile: int = 0, prefix: str = "expanse_main") -> dict:
    """The API-format graph: loader -> text -> sampler -> tiled VAE decode -> save; with
    diffusion_tile, the model goes through TiledDiffusion first."""
    graph = {
        "model": loader,
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["model", 1], "text": text}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["model", 1], "text": ""}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "sample": {"class_type": "KSampler",
                   "inputs": {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                              "latent_image": ["latent", 0], "seed": seed, "steps": steps, "cfg": 5.0,
                              "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "ExpanseTiledVAEDecode",
                   "inputs": {"samples": ["sample", 0], "vae": ["model", 2], "tile_size": tile, "mode": "exact",
                              "padding": 96}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }
    if diffusion_tile:
        graph["tiled"] = {"class_type": "ExpanseTiledDiffusion",
                          "inputs": {"model": ["model", 0], "method": "mixture_of_diffusers",
                                     "tile_width": diffusion_tile, "tile_height": diffusion_tile,
                                     "overlap": diffusion_tile // 4, "tile_batch_size": 4, "seed": seed}}
        graph["sample"]["inputs"]["model"] = ["tiled", 0]
    return graph


def picture_prompt(width: int, height: int, text: str, steps: int = 20, seed: int = 11,
                   prefix: str = "expanse_input") -> dict:
    """A plain txt2img API prompt with the demo model: the picture a LoadImage of a workflow gets."""
    loader = {"class_type": "ExpanseDemoModelLoader", "inputs": {"weights": DEMO_WEIGHTS}}
    return text_to_image_prompt(loader, text, width, height, steps, seed, tile=min(512, width, height),
                                prefix=prefix)
