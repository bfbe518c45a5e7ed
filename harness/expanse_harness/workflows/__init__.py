"""The example workflows and the tools that make and run them, one module per job:

    save_format  node definitions from /object_info; Graph, a workflow described compactly and
                 written in the frontend's save format
    ui_to_api    a saved workflow to the API prompt the frontend queues
    demo_scale   a prompt made to run with the demo model on a CPU; its input pictures uploaded
    prompts      API prompts written directly (text to image; a demo-model picture)
    examples     the templates: each technique for SD1.5/SDXL and as a demo on the demo model
                 (builders, titles, and their demo-run settings as data)
    thumbnails   a template run with the demo model, drawn as a picture of what its technique does

scripts/workflows.py is their command line; the end-to-end tests and the main job use them too.
"""
from .demo_scale import demo_images, for_demo, scaled_inputs, scaled_px, upload_demo_images
from .examples import (DEMO_RUNS, DEMO_TEMPLATES, EXAMPLE_DIR, EXAMPLE_IMAGE, MODEL_URLS, SD15, SDXL, TEMPLATES,
                       WORKFLOWS, Template, demo_settings, template_for)
from .prompts import DEMO_WEIGHTS, picture_prompt, text_to_image_prompt
from .save_format import Definitions, Graph, NodeDef, write_json
from .thumbnails import thumbnail
from .ui_to_api import ui_to_api

__all__ = ["DEMO_RUNS", "DEMO_TEMPLATES", "DEMO_WEIGHTS", "EXAMPLE_DIR", "EXAMPLE_IMAGE", "MODEL_URLS", "SD15", "SDXL",
           "TEMPLATES", "WORKFLOWS", "Definitions", "Graph", "NodeDef", "Template", "demo_images", "demo_settings",
           "for_demo", "picture_prompt", "scaled_inputs", "scaled_px", "template_for", "text_to_image_prompt",
           "thumbnail", "ui_to_api", "upload_demo_images", "write_json"]
