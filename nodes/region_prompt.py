"""RegionPrompt: a prompt for one part of the canvas (runtime.regions), as ComfyUI conditioning."""
from __future__ import annotations

from comfy_api.latest import io

from ..core import regions as rg
from ..runtime.checks import checked_entry
from ..runtime.compat import node_schema
from ..runtime.host import CATEGORY
from ..runtime.regions import region_conds


# The region's box as fractions of the canvas, so a workflow survives a size change: (name, default,
# tooltip). The region editor (web/region_editor.js) reads and writes these four widgets.
BOX_INPUTS = (
    ("x", 0.25, "Left edge of the region, as a fraction of the canvas width (0 = left)."),
    ("y", 0.25, "Top edge of the region, as a fraction of the canvas height (0 = top)."),
    ("width", 0.5, "Region width as a fraction of the canvas width; x + width at most 1."),
    ("height", 0.5, "Region height as a fraction of the canvas height; y + height at most 1."),
)


class RegionPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="ExpanseRegionPrompt",
            search_aliases=["regional prompt", "area prompt", "area composition", "attention couple",
                            "conditioning area", "regional conditioning"],
            display_name="Region Prompt (Expanse)",
            category=f"{CATEGORY}/conditioning",
            description="Puts a prompt in one part of the canvas. Chain several (conditioning out into the next "
                        "node's conditioning in) or join them with Conditioning Combine; a chain on the "
                        "negative side gives a region its own negative prompt. Works with a plain "
                        "KSampler; through a TiledDiffusion model, foregrounds are composited exactly and each "
                        "tile evaluates only the regions it meets.",
            inputs=[
                io.Conditioning.Input("conditioning",
                                      tooltip="The main prompt (or the chain so far). It draws the canvas wherever "
                                              "no region is, so uncovered parts are not left blank. On the "
                                              "negative side: the main negative prompt."),
                io.Conditioning.Input("region_conditioning",
                                      tooltip="The region's own prompt, from a CLIP Text Encode."),
                *[io.Float.Input(name, default=default, min=0.0, max=1.0, step=0.01, tooltip=tooltip)
                  for name, default, tooltip in BOX_INPUTS],
                io.Combo.Input("type", options=list(rg.KINDS), default=rg.FOREGROUND,
                               tooltip="foreground: replaces what is under it inside its feathered edge (a "
                                       "subject). background: blends with what is under it (a setting, a mood)."),
                io.Float.Input("feather", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Soft edge width as a fraction of the region's smaller side (0 hard, 1 "
                                       "fades all the way to the centre). Edges on the canvas border stay hard."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="How strongly the region's prompt counts: for a background its weight "
                                       "against the prompts under it, for a foreground its opacity (capped at 1)."),
                io.Int.Input("canvas_width", default=1024, min=64, max=65536, step=8,
                             tooltip="The canvas size the feather is measured on; set it to the size you sample "
                                     "at. The region editor shows the sampler's latent size where the graph "
                                     "has one and warns if this differs. The region itself is stored as "
                                     "fractions and follows a size change."),
                io.Int.Input("canvas_height", default=1024, min=64, max=65536, step=8,
                             tooltip="The canvas height the feather is measured on; see canvas_width."),
                io.Mask.Input("mask", optional=True,
                              tooltip="A shape for a non-rectangular region, stretched over the box "
                                      "(white = inside)."),
            ],
            outputs=[io.Conditioning.Output(tooltip="The chain with this region added.")],
        )

    @classmethod
    def validate_inputs(cls, x=0.25, y=0.25, width=0.5, height=0.5, feather=0.2):
        # No **kwargs: ComfyUI skips its own min/max check for every input this signature takes.
        # Region.check covers the ranges of the five it names.
        numbers = (x, y, width, height, feather)
        if all(isinstance(v, (int, float)) for v in numbers):
            try:
                rg.Region(x, y, width, height, rg.FOREGROUND, feather).check()
            except ValueError as e:
                return str(e)
        return True

    @classmethod
    @checked_entry
    def execute(cls, conditioning, region_conditioning, x, y, width, height, type, feather, strength,
                canvas_width, canvas_height, mask=None) -> io.NodeOutput:
        region = rg.Region(x, y, width, height, type, feather, strength)
        return io.NodeOutput(list(conditioning) + region_conds(region_conditioning, region, canvas_width,
                                                                canvas_height, mask))
