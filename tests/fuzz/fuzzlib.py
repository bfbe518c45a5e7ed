"""The fuzz tier's machinery: hostile values, the small prompts they go into, running a case
through the real server within a time limit, and judging its answer.

A case puts one hostile value into one input of one node, either as the widget value in the API
prompt or through a link from ComfyUI's core primitive node (PrimitiveInt, PrimitiveFloat,
PrimitiveString), whose value skips the receiving node's widget range check; tensor cases connect a
core node that makes an empty, wrongly shaped or non-finite latent, picture or mask. Each case
states what must happen:

- REFUSE (the value is out of range, not finite, or the tensor is wrong): refused when queued (HTTP
  400, node_errors on the node naming the input) or at run time (an execution_error whose message
  names the node, by its technique name or Expanse id, and the input). A value the primitive node
  itself cannot carry (infinity, or NaN into PrimitiveInt) is refused at the primitive.
- FINISH (an in-range edge value): the prompt succeeds, or fails with a clear error (a message
  that names the failing Expanse node or a refusal at queue), never from deep inside.

Every case must finish within its time limit (EXPANSE_FUZZ_LIMIT seconds, 60 by default; a hang is
interrupted through POST /interrupt and fails, and a server still busy after that is restarted), and
no message may come from inside torch or Python builtins (INTERNAL_MESSAGES).

Case ids read `<input>=<value>-<widget|link|graph>-<refuse|finish>`, e.g.
`tile_batch_size=0-link-refuse`; a failure says what came back and, for a run-time error, the
innermost frame in the pack and in all (`[raised at expanse/core/... -> torch/...]`).
"""
from __future__ import annotations

import copy
import dataclasses
import http.client
import io
import json
import math
import os
import re
import time
import urllib.error
from typing import Callable, Iterable

import numpy as np

from expanse_harness.workflows import DEMO_WEIGHTS

REFUSE, FINISH = "refuse", "finish"
LIMIT_S = float(os.environ.get("EXPANSE_FUZZ_LIMIT", "60"))  # a case running longer hangs
INTERRUPT_GRACE_S = 30.0  # after POST /interrupt; a server still busy then is restarted
PRIMITIVE_MAX = 2 ** 63 - 1  # PrimitiveInt/PrimitiveFloat range (sys.maxsize), both hosts

# Texts that only come from inside torch, Python builtins or an unchecked loop: a message holding
# one of these means a value reached code that could not say what was wrong with it.
INTERNAL_MESSAGES = [
    "range() arg", "reshape", "NaN to integer", "infinity to integer", "float NaN", "Kernel size",
    "Traceback", "must be a 4-D", "size mismatch", "The size of tensor", "Sizes of tensors must match",
    "out of bounds", "index out of range", "division by zero", "ZeroDivisionError", "has no attribute",
    "not subscriptable", "unsupported operand", "NoneType", "Given groups=", "Expected input batch_size",
    "expected scalar type", "Calculated padded input size", "negative dimension", "non-positive",
    "math domain error", "arg is an empty sequence", "can't multiply sequence", "positional argument",
    "invalid literal", "cannot convert", "int too large", "OverflowError", "could not convert",
    "only integer tensors", "must be positive integer", "step must not be zero", "Trying to create tensor",
    "allocate memory", "DefaultCPUAllocator", "out of memory", "overflowed", "Overflow when unpacking",
    "numel", "aten::", "torch.", "RuntimeError", "TypeError", "IndexError", "KeyError",
]
_TRACEBACK_LINE = re.compile(r'File "[^"]+", line \d+')

TEXT = "a day sky with clouds over a green field"
REGION_TEXT = "red and yellow checks"


def internal_message(text: str) -> str | None:
    """The first internal phrase in text, or None."""
    for phrase in INTERNAL_MESSAGES:
        if phrase in text:
            return phrase
    found = _TRACEBACK_LINE.search(text)
    return found.group(0) if found else None


def technique(class_type: str) -> str:
    """ExpanseChessTileRedraw -> ChessTileRedraw, the name the pack's messages start with."""
    return class_type[len("Expanse"):] if class_type.startswith("Expanse") else class_type


def names_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text) is not None


# --- the prompts ------------------------------------------------------------------------------------

def base_prompt(width: int = 64, height: int = 64, steps: int = 1) -> dict:
    """Demo model -> KSampler (1 step) -> TiledVAEDecode -> SaveImage, on a tiny canvas."""
    return {
        "model": {"class_type": "ExpanseDemoModelLoader", "inputs": {"weights": DEMO_WEIGHTS}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["model", 1], "text": TEXT}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["model", 1], "text": ""}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "sample": {"class_type": "KSampler",
                   "inputs": {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                              "latent_image": ["latent", 0], "seed": 5, "steps": steps, "cfg": 5.0,
                              "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "decode": {"class_type": "ExpanseTiledVAEDecode",
                   "inputs": {"samples": ["sample", 0], "vae": ["model", 2], "tile_size": 64, "mode": "exact",
                              "padding": 96}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "fuzz"}},
    }


def decode_prompt() -> dict:
    return base_prompt(128, 64)  # two 64 px tiles


def encode_prompt() -> dict:
    prompt = base_prompt()
    prompt["encode"] = {"class_type": "ExpanseTiledVAEEncode",
                        "inputs": {"pixels": ["decode", 0], "vae": ["model", 2], "tile_size": 64, "mode": "exact",
                                   "padding": 64}}
    prompt["redecode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["encode", 0], "vae": ["model", 2]}}
    prompt["save"]["inputs"]["images"] = ["redecode", 0]
    return prompt


def tiled_prompt(width: int = 128, height: int = 64) -> dict:
    """The model through TiledDiffusion (64 px tiles, 32 px overlap: three tiles on 128x64)."""
    prompt = base_prompt(width, height)
    prompt["tiled"] = {"class_type": "ExpanseTiledDiffusion",
                       "inputs": {"model": ["model", 0], "method": "multidiffusion", "tile_width": 64,
                                  "tile_height": 64, "overlap": 32, "tile_batch_size": 4, "seed": 0}}
    prompt["sample"]["inputs"]["model"] = ["tiled", 0]
    return prompt


def upscale_prompt() -> dict:
    prompt = base_prompt()
    prompt["upscale"] = {"class_type": "ExpanseLatentUpscaleAdvanced",
                         "inputs": {"samples": ["sample", 0], "upscale_method": "bislerp", "scale_by": 1.5,
                                    "width": 0, "height": 0, "antialias": True}}
    prompt["decode"]["inputs"]["samples"] = ["upscale", 0]
    return prompt


def grow_prompt() -> dict:
    prompt = base_prompt()
    prompt["sample"] = {"class_type": "ExpanseProgressiveGrowSampler",
                        "inputs": {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                                   "latent_image": ["latent", 0], "seed": 1, "steps": 1, "cfg": 5.0,
                                   "sampler_name": "euler", "scheduler": "normal", "min_scale": 0.5,
                                   "max_scale": 1.0, "stages": 2, "spacing": "geometric", "refine": True,
                                   "denoise_second": 0.5, "denoise_last": 0.35, "refine_steps": 1,
                                   "upscale_method": "bislerp", "stage_noise": 0.0}}
    return prompt


def chess_prompt() -> dict:
    """A 64 px picture's latent redrawn at 1.5x (96 px) in 64 px tiles, one step."""
    prompt = base_prompt()
    del prompt["decode"]
    prompt["chess"] = {"class_type": "ExpanseChessTileRedraw",
                       "inputs": {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                                  "vae": ["model", 2], "latent": ["sample", 0], "upscale_by": 1.5, "seed": 1,
                                  "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                                  "denoise": 0.3, "tile_width": 64, "tile_height": 64, "padding": 16,
                                  "mask_feather": 8, "tile_batch_size": 4, "redraw_order": "chess",
                                  "seam_fix": "none", "seam_fix_denoise": 0.3, "seam_fix_width": 16,
                                  "seam_fix_feather": 8, "vae_mode": "auto"}}
    prompt["save"]["inputs"]["images"] = ["chess", 0]
    return prompt


def save_large_prompt() -> dict:
    """The 128x64 picture's latent saved by SaveLargeImage (its overview saved by SaveImage)."""
    prompt = base_prompt(128, 64)
    del prompt["decode"]
    prompt["large"] = {"class_type": "ExpanseSaveLargeImage",
                       "inputs": {"samples": ["sample", 0], "vae": ["model", 2], "filename_prefix": "fuzz/large",
                                  "vae_mode": "auto", "compression": "deflate", "deep_zoom": False}}
    prompt["save"]["inputs"]["images"] = ["large", 0]
    return prompt


def inversion_prompt() -> dict:
    """The 64 px picture's latent inverted to denoise 0.6 in 2 steps and redrawn from the inverted
    noise by SamplerCustomAdvanced, as a user wires it."""
    prompt = base_prompt()
    prompt["invert"] = {"class_type": "ExpanseNoiseInversion",
                        "inputs": {"model": ["model", 0], "positive": ["positive", 0], "negative": ["negative", 0],
                                   "latent": ["sample", 0], "steps": 2, "scheduler": "normal", "denoise": 0.6}}
    prompt["guider"] = {"class_type": "CFGGuider", "inputs": {"model": ["model", 0], "positive": ["positive", 0],
                                                              "negative": ["negative", 0], "cfg": 5.0}}
    prompt["sampler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["redraw"] = {"class_type": "SamplerCustomAdvanced",
                        "inputs": {"noise": ["invert", 0], "guider": ["guider", 0], "sampler": ["sampler", 0],
                                   "sigmas": ["invert", 1], "latent_image": ["sample", 0]}}
    prompt["decode"]["inputs"]["samples"] = ["redraw", 0]
    return prompt


def region_prompt(tiled: bool = True) -> dict:
    """A foreground region on the right half of a 128x64 canvas, sampled through TiledDiffusion."""
    prompt = tiled_prompt() if tiled else base_prompt(128, 64)
    prompt["region_text"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["model", 1], "text": REGION_TEXT}}
    prompt["region"] = {"class_type": "ExpanseRegionPrompt",
                        "inputs": {"conditioning": ["positive", 0], "region_conditioning": ["region_text", 0],
                                   "x": 0.5, "y": 0.0, "width": 0.5, "height": 1.0, "type": "foreground",
                                   "feather": 0.1, "strength": 1.0, "canvas_width": 128, "canvas_height": 64}}
    prompt["sample"]["inputs"]["positive"] = ["region", 0]
    return prompt


def loader_prompt() -> dict:
    return base_prompt()


# Core nodes that make hostile tensors (present on both hosts).
def empty_latent(width=64, height=64, batch=1) -> dict:
    return {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}}


def primitive(kind: str, value) -> dict:
    return {"class_type": {"INT": "PrimitiveInt", "FLOAT": "PrimitiveFloat", "STRING": "PrimitiveString",
                           "BOOLEAN": "PrimitiveBoolean"}[kind], "inputs": {"value": value}}


def set_link(prompt: dict, target: str, name: str, kind: str, value) -> dict:
    """prompt with target's input `name` fed by a core primitive node holding value."""
    prompt["fuzz_value"] = primitive(kind, value)
    prompt[target]["inputs"][name] = ["fuzz_value", 0]
    return prompt


def hostile_tensors(kind: str) -> dict[str, tuple[Callable[[dict], list], str, str]]:
    """label -> (adds core nodes to a prompt and returns the link to connect, expectation, what it is)
    for a LATENT, IMAGE or MASK input. Nothing here needs a node of the base prompt."""
    def linked_zero(made: dict, name: str) -> Callable[[dict], list]:
        def add(prompt: dict) -> list:
            prompt["bad_zero"] = primitive("INT", 0)
            prompt["bad"] = copy.deepcopy(made)
            prompt["bad"]["inputs"][name] = ["bad_zero", 0]
            return ["bad", 0]
        return add

    def nodes(made: dict) -> Callable[[dict], list]:
        def add(prompt: dict) -> list:
            prompt.update(copy.deepcopy(made))
            return ["bad", 0]
        return add

    def changed(made: dict, **inputs) -> dict:
        return dict(made, inputs=dict(made["inputs"], **inputs))

    if kind == "LATENT":
        latent = empty_latent()
        return {
            "empty_batch": (linked_zero(latent, "batch_size"), REFUSE, "EmptyLatentImage batch_size 0 (link)"),
            "zero_width": (linked_zero(latent, "width"), REFUSE, "EmptyLatentImage width 0 (link)"),
            "video_5d": (nodes({"bad": {"class_type": "EmptyHunyuanLatentVideo",
                                        "inputs": {"width": 64, "height": 64, "length": 9, "batch_size": 1}}}),
                         REFUSE, "a 5-D video latent (EmptyHunyuanLatentVideo, 16 channels)"),
            "sd3_16ch": (nodes({"bad": {"class_type": "EmptySD3LatentImage",
                                        "inputs": {"width": 64, "height": 64, "batch_size": 1}}}),
                         REFUSE, "a 16-channel latent (EmptySD3LatentImage)"),
            "nan": (nodes({"bad_zeros": latent, "bad": {"class_type": "LatentMultiply",
                                                        "inputs": {"samples": ["bad_zeros", 0], "multiplier": NAN}}}),
                    REFUSE, "a latent of NaN (LatentMultiply by NaN: 0 x NaN)"),
            "off_grid_60px": (nodes({"bad": empty_latent(60, 60)}), FINISH, "EmptyLatentImage 60x60 (7x7 latent)"),
            "batch_2": (nodes({"bad": empty_latent(64, 64, 2)}), FINISH, "EmptyLatentImage batch 2"),
        }
    if kind == "IMAGE":
        picture = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0x4080c0}}
        return {
            "empty_batch": (linked_zero(picture, "batch_size"), REFUSE, "EmptyImage batch_size 0 (link)"),
            "zero_width": (linked_zero(picture, "width"), REFUSE, "EmptyImage width 0 (link)"),
            "nan": (nodes({"bad_picture": picture,
                           "bad": {"class_type": "ImageBlend", "inputs": {"image1": ["bad_picture", 0],
                                                                          "image2": ["bad_picture", 0],
                                                                          "blend_factor": NAN, "blend_mode": "normal"}}}),
                    REFUSE, "a picture of NaN (ImageBlend, blend_factor NaN)"),
            "one_pixel": (nodes({"bad": changed(picture, width=1, height=1)}), FINISH, "a 1x1 px picture"),
            "off_grid_60px": (nodes({"bad": changed(picture, width=60, height=60)}), FINISH, "a 60x60 px picture"),
            "rgba": (nodes({"bad_picture": picture,
                            "bad_alpha": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
                            "bad": {"class_type": "JoinImageWithAlpha",
                                    "inputs": {"image": ["bad_picture", 0], "alpha": ["bad_alpha", 0]}}}),
                     FINISH, "an RGBA picture (JoinImageWithAlpha)"),
        }
    if kind == "MASK":
        mask = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
        return {
            "nan": (nodes({"bad": changed(mask, value=NAN)}), REFUSE, "a mask of NaN (SolidMask value NaN)"),
            "zero_width": (linked_zero(mask, "width"), REFUSE, "SolidMask width 0 (link)"),
            "one_pixel": (nodes({"bad": changed(mask, width=1, height=1)}), FINISH, "a 1x1 mask"),
            "all_zero": (nodes({"bad": changed(mask, value=0.0)}), FINISH, "an all-zero mask"),
        }
    raise ValueError(kind)


# --- the tables ----------------------------------------------------------------------------------

HUGE_INT = 2 ** 40
HUGE_FLOAT = 1e18
NAN, INF = float("nan"), float("inf")


@dataclasses.dataclass(frozen=True)
class Case:
    node: str                    # class_type of the node under test
    target: str                  # its id in the prompt
    input: str                   # the input that gets the value (a tensor input for tensor cases)
    label: str                   # the value, as written in the id
    via: str                     # widget | link | graph
    expect: str                  # REFUSE | FINISH
    build: Callable[[], dict] = dataclasses.field(compare=False)
    names: tuple[str, ...] = ()  # a refusal must name one of these (the input by default)
    source_refuses: bool = False  # the primitive node cannot carry the value: refused there at queue
    limit: float = LIMIT_S
    why: str = ""

    @property
    def id(self) -> str:
        return f"{self.input}={self.label}-{self.via}-{self.expect}"


def _label(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) >= 1e6:
            return f"{value:.0e}"
        return repr(value)
    if isinstance(value, str):
        return value or "empty_string"
    return str(value)


def _carried(kind: str, value) -> bool:
    """Whether the core primitive node of the kind passes the value on (its own range is +-maxsize)."""
    if kind == "INT":
        return isinstance(value, int) and abs(value) <= PRIMITIVE_MAX
    if isinstance(value, float) and math.isnan(value):
        return True
    return math.isfinite(value) and abs(value) <= PRIMITIVE_MAX


@dataclasses.dataclass
class Num:
    """An INT or FLOAT input with its declared range (checked against /object_info). values(): 0, a
    negative value, just below min, just above max, a huge value, NaN (for floats also +-inf), then
    min and the `ok` values (in-range edges, sizes off the grid...). Out-of-range values go in by
    widget and through a link; in-range ones by widget (a link carries them the same way).
    `settings`: other inputs of the node set for these cases (e.g. seam_fix band, so that the
    seam-fix inputs are read at all)."""
    name: str
    kind: str
    low: float
    high: float
    step: float = 1
    ok: tuple = ()
    settings: dict = dataclasses.field(default_factory=dict)

    def values(self) -> list:
        if self.kind == "INT":
            step = int(self.step)
            candidates = [0, -step, int(self.low) - step, int(self.high) + step,
                          HUGE_INT if HUGE_INT > self.high else int(self.high) + 1, NAN, int(self.low)]
        else:
            candidates = [0.0, -1.0, round(self.low - 0.01, 6), round(self.high + 0.01, 6), HUGE_FLOAT, NAN, INF,
                          -INF, float(self.low)]
        out, seen = [], set()
        for v in [*candidates, *self.ok]:
            key = _label(v)
            if key not in seen:
                seen.add(key)
                out.append(v)
        return out

    def in_range(self, value) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value) and self.low <= value <= self.high


@dataclasses.dataclass
class Combo:
    """A combo input: wrong values (unknown text, empty text, a number) refused; `ok` run."""
    name: str
    ok: tuple = ()
    bad: tuple = ("not_an_option", "", 3)


@dataclasses.dataclass
class Tensor:
    """A LATENT/IMAGE/MASK input getting each tensor of hostile_tensors(kind); `drop`: inputs
    disconnected for these cases (e.g. the latent, when the picture input is tried)."""
    name: str
    kind: str
    expect: dict = dataclasses.field(default_factory=dict)  # label -> expectation, overriding the default
    drop: tuple = ()
    names: tuple = ()  # a refusal may name any of these (the input by default)


@dataclasses.dataclass
class Named:
    """A case of its own: prompt changes the base prompt."""
    name: str
    label: str
    change: Callable[[dict], dict]
    expect: str
    names: tuple[str, ...] = ()
    limit: float = LIMIT_S
    why: str = ""
    via: str = "graph"


@dataclasses.dataclass
class Table:
    """One node's hostile inputs. `unchecked` lists inputs deliberately left out (and why)."""
    node: str
    target: str
    build: Callable[[], dict]
    entries: list
    unchecked: dict = dataclasses.field(default_factory=dict)

    def cases(self) -> list[Case]:
        out = []
        for entry in self.entries:
            if isinstance(entry, Num):
                for value in entry.values():
                    expect = FINISH if entry.in_range(value) else REFUSE
                    for via in ("widget", "link") if expect == REFUSE else ("widget",):
                        out.append(self._value_case(entry.name, entry.kind, value, via, expect, entry.settings))
            elif isinstance(entry, Combo):
                for value in entry.ok:
                    out.append(self._value_case(entry.name, "COMBO", value, "widget", FINISH, {}))
                for index, value in enumerate(entry.bad):
                    # Through a link, a STRING or INT output never matches a COMBO input: ComfyUI refuses
                    # the type at queue, whatever the value; one such case per combo shows it.
                    for via in ("widget", "link") if index == 0 else ("widget",):
                        kind = "INT" if isinstance(value, int) else "STRING"
                        out.append(self._value_case(entry.name, kind, value, via, REFUSE, {}))
            elif isinstance(entry, Tensor):
                for label, (add, expect, why) in hostile_tensors(entry.kind).items():
                    expect = entry.expect.get(label, expect)
                    out.append(Case(self.node, self.target, entry.name, label, "graph", expect,
                                    build=self._tensor_builder(entry.name, add, entry.drop),
                                    names=entry.names or (entry.name,), why=why))
            elif isinstance(entry, Named):
                out.append(Case(self.node, self.target, entry.name, entry.label, entry.via, entry.expect,
                                build=self._named_builder(entry.change), names=entry.names or (entry.name,),
                                limit=entry.limit, why=entry.why))
            else:
                raise TypeError(entry)
        ids = [c.id for c in out]
        duplicates = {i for i in ids if ids.count(i) > 1}
        assert not duplicates, f"{self.node}: duplicate case ids {sorted(duplicates)}"
        return out

    def _value_case(self, name, kind, value, via, expect, settings) -> Case:
        def build() -> dict:
            prompt = self.build()
            prompt[self.target]["inputs"].update(settings)
            if via == "widget":
                prompt[self.target]["inputs"][name] = value
                return prompt
            return set_link(prompt, self.target, name, kind, value)
        carried = via == "widget" or kind not in ("INT", "FLOAT") or _carried(kind, value)
        return Case(self.node, self.target, name, _label(value), via, expect, build=build, names=(name,),
                    source_refuses=not carried)

    def _tensor_builder(self, name, add, drop) -> Callable[[], dict]:
        def build() -> dict:
            prompt = self.build()
            for dropped in drop:
                prompt[self.target]["inputs"].pop(dropped, None)
            prompt[self.target]["inputs"][name] = add(prompt)
            return prompt
        return build

    def _named_builder(self, change) -> Callable[[], dict]:
        return lambda: change(self.build())

    def declared(self, object_info: dict) -> dict:
        node = object_info[self.node]["input"]
        return {**node.get("required", {}), **node.get("optional", {})}

    def schema_problems(self, object_info: dict) -> list[str]:
        """Where the table and the node's declared inputs (/object_info) disagree: a range that
        changed, an option that is gone, a widget input with no entry and no reason."""
        declared = self.declared(object_info)
        problems, covered = [], set(self.unchecked)
        for entry in self.entries:
            if isinstance(entry, Named):
                continue  # a case of its own (it may set several inputs, or a node other than this one)
            covered.add(entry.name)
            spec = declared.get(entry.name)
            if spec is None:
                problems.append(f"{entry.name}: the node has no such input")
                continue
            kind, extra = (spec[0] if isinstance(spec[0], str) else "COMBO"), (spec[1] if len(spec) > 1 else {})
            if isinstance(entry, Num):
                if kind != entry.kind:
                    problems.append(f"{entry.name}: declared {kind}, the table says {entry.kind}")
                elif (extra.get("min"), extra.get("max")) != (entry.low, entry.high):
                    problems.append(f"{entry.name}: declared range {extra.get('min')}..{extra.get('max')}, "
                                    f"the table says {entry.low}..{entry.high}")
            elif isinstance(entry, Combo):
                options = extra.get("options") if kind == "COMBO" else spec[0]
                missing = [o for o in entry.ok if o not in (options or [])]
                if kind != "COMBO" or missing:
                    problems.append(f"{entry.name}: not a combo with options {missing or entry.ok}")
            elif isinstance(entry, Tensor) and kind != entry.kind:
                problems.append(f"{entry.name}: declared {kind}, the table says {entry.kind}")
        for name, spec in declared.items():
            kind = spec[0] if isinstance(spec[0], str) else "COMBO"
            if kind in ("INT", "FLOAT", "COMBO", "BOOLEAN", "STRING", "LATENT", "IMAGE", "MASK") and name not in covered:
                problems.append(f"{name}: a {kind} input with no table entry (add one, or list it in unchecked)")
        return problems


# --- running a case --------------------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    kind: str                 # refused | success | error | interrupted | hung | crashed
    seconds: float
    node_errors: dict = dataclasses.field(default_factory=dict)
    error: dict = dataclasses.field(default_factory=dict)  # the execution_error message's data
    entry: dict = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        if self.kind == "refused":
            return f"refused at queue ({self.seconds:.1f} s): {json.dumps(self.node_errors)[:1500]}"
        if self.error:
            where = raised_at(self.error.get("traceback") or [])
            return (f"{self.kind} at run time ({self.seconds:.1f} s) in {self.error.get('node_type')} "
                    f"({self.error.get('node_id')}): {self.error.get('exception_type')}: "
                    f"{self.error.get('exception_message', '').strip()[:1500]}" + (f" [raised at {where}]" if where else ""))
        return f"{self.kind} ({self.seconds:.1f} s)"


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def raised_at(traceback: list[str]) -> str:
    """Where an execution_error came from: the innermost frame in the pack (custom_nodes/<pack>/...),
    and the innermost frame of all if that is elsewhere (torch, ComfyUI)."""
    frames = [m.groups() for line in traceback for m in [_FRAME.search(line)] if m]
    if not frames:
        return ""

    def short(frame) -> str:
        path, line, func = frame
        for marker in ("/custom_nodes/", "/site-packages/", "/comfy/", "/comfy_extras/"):
            if marker in path:
                path = path.split(marker, 1)[1] if marker == "/custom_nodes/" or marker == "/site-packages/" \
                    else marker.strip("/") + "/" + path.split(marker, 1)[1]
                break
        return f"{path}:{line} {func}"

    ours = [f for f in frames if "/custom_nodes/" in f[0]]
    innermost = short(frames[-1])
    if ours and ours[-1] is not frames[-1]:
        return f"{short(ours[-1])} -> {innermost}"
    return innermost


class ServerGone(RuntimeError):
    """The server process died or stopped answering HTTP."""


class Runner:
    """Runs prompts on the server that `start()` gives, restarting it if a hang leaves it busy."""

    def __init__(self, start: Callable[[], object], stop: Callable[[object], None]):
        self._start, self._stop = start, stop
        self.server = start()
        self.restarts = 0

    def close(self) -> None:
        self._stop(self.server)

    def restart(self) -> None:
        self._stop(self.server)
        self.server = self._start()
        self.restarts += 1

    def outcome(self, prompt: dict, limit: float) -> Outcome:
        start = time.monotonic()
        try:
            status, answer = self.server.queue(prompt)
            if status != 200:
                return Outcome("refused", time.monotonic() - start, node_errors=answer.get("node_errors") or
                               {"(prompt)": answer.get("error", answer)})
            prompt_id = answer["prompt_id"]
            entry = self._poll(prompt_id, limit)
            if entry is None:
                self._request("POST", "/interrupt")
                entry = self._poll(prompt_id, INTERRUPT_GRACE_S)
                seconds = time.monotonic() - start
                if entry is None:
                    self.restart()  # the worker never came back: nothing else could run on it
                return Outcome("hung", seconds, entry=entry or {}, error=_execution_error(entry))
        except ServerGone as gone:
            self.restart()
            return Outcome("crashed", time.monotonic() - start, error={"exception_message": str(gone)})
        seconds = time.monotonic() - start
        if entry["status"]["status_str"] == "success":
            return Outcome("success", seconds, entry=entry)
        kinds = [m[0] for m in entry["status"]["messages"]]
        kind = "interrupted" if "execution_interrupted" in kinds else "error"
        return Outcome(kind, seconds, entry=entry, error=_execution_error(entry))

    def _request(self, method: str, path: str):
        """An HTTP request that tells a busy server (retried) from a dead one (ServerGone)."""
        for attempt in range(20):
            try:
                if method == "POST":
                    return self.server.post_json(path, {})
                return self.server.get(path)
            except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
                if self.server.proc is not None and self.server.proc.poll() is not None:
                    raise ServerGone(f"the server process exited ({self.server.proc.returncode}): "
                                     f"{self.server.log_text()[-1500:]}") from None
                if attempt == 19:
                    raise ServerGone(f"the server stopped answering: {e}") from None
                time.sleep(0.5)

    def _poll(self, prompt_id: str, limit: float) -> dict | None:
        deadline = time.monotonic() + limit
        pause = 0.02
        while time.monotonic() < deadline:
            entry = self._request("GET", f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(pause)
            pause = min(0.1, pause * 1.5)
        return None

    def picture(self, prompt: dict, limit: float = 300, fresh: bool = True) -> np.ndarray:
        """The first saved picture of a prompt that must succeed; fresh: ComfyUI's cache is
        emptied first (POST /free), so every node runs again."""
        from PIL import Image

        for attempt in range(3):
            if fresh:
                self.free()
            outcome = self.outcome(prompt, limit)
            assert outcome.kind == "success", f"the good prompt failed: {outcome.summary()}"
            cached = [n for m in outcome.entry["status"]["messages"] if m[0] == "execution_cached"
                      for n in m[1]["nodes"]]
            if not fresh or not cached:
                break
        else:
            raise AssertionError(f"nodes {cached} kept coming from ComfyUI's cache after POST /free")
        images = self.server.images(outcome.entry)
        assert images, "the good prompt saved no picture"
        return np.asarray(Image.open(io.BytesIO(images[0])).convert("RGB"))

    def free(self) -> None:
        """Empties ComfyUI's output cache (and unloads models): the worker applies the flag once idle."""
        status, _ = self.server.post_json("/free", {"unload_models": True, "free_memory": True})
        assert status == 200
        time.sleep(1.0)  # the worker picks the flag up when it wakes, before the next prompt


def _execution_error(entry: dict | None) -> dict:
    for name, data in (entry or {}).get("status", {}).get("messages", []):
        if name == "execution_error":
            return data
    return {}


# --- judging -------------------------------------------------------------------------------------

# ComfyUI's own checks at queue time, with structured errors: their texts (e.g. int("nan") failing in
# "invalid_input_type") are ComfyUI's, the input is named in extra_info. Errors of other types hold
# text from the node's own validate_inputs (or an exception in it) and are checked for internals.
COMFY_VALIDATION_TYPES = {"value_smaller_than_min", "value_bigger_than_max", "invalid_input_type",
                          "value_not_in_list", "return_type_mismatch", "required_input_missing",
                          "bad_linked_input"}


def _queue_errors(outcome: Outcome, node_id: str) -> list[dict]:
    return (outcome.node_errors.get(node_id) or {}).get("errors", [])


def _error_names(error: dict, names: Iterable[str]) -> bool:
    """Whether a queue-time error names one of the inputs. ComfyUI's own checks say which input in
    extra_info; a node's validate_inputs message is repeated once for every input the function
    takes ("<input> - <message>"), so there only the message itself counts."""
    if error.get("type") == "custom_validation_failed":
        message = str(error.get("details", "")).partition(" - ")[2]
        return any(names_word(message, n) for n in names)
    text = " ".join(str(error.get(k, "")) for k in ("message", "details"))
    input_name = (error.get("extra_info") or {}).get("input_name")
    return any(input_name == n or names_word(text, n) for n in names)


def _queue_internal(outcome: Outcome) -> str | None:
    for node_id, node in outcome.node_errors.items():
        for error in (node or {}).get("errors", []) if isinstance(node, dict) else []:
            if error.get("type") in COMFY_VALIDATION_TYPES:
                continue
            extra = error.get("extra_info") or {}
            text = " ".join(str(x) for x in (error.get("message"), error.get("details"),
                                             extra.get("exception_message")))
            found = internal_message(text)
            if found:
                return f"node {node_id}: {found!r} in {text[:300]!r}"
    return None


def verdict(case: Case, outcome: Outcome) -> str | None:
    """None if the case got what it expects, else what went wrong."""
    where = f"{case.node} {case.id}: "
    if outcome.kind == "hung":
        return where + f"no answer within {case.limit:.0f} s (a hang; POST /interrupt sent). {outcome.summary()}"
    if outcome.kind == "crashed":
        return where + f"the server crashed or stopped answering (restarted): {outcome.summary()}"
    if outcome.kind == "interrupted":
        return where + f"interrupted without being asked: {outcome.summary()}"
    if outcome.kind == "refused":
        found = _queue_internal(outcome)
        if found:
            return where + f"refused at queue with an internal message: {found}"
        errors = _queue_errors(outcome, case.target)
        if case.source_refuses and _queue_errors(outcome, "fuzz_value"):
            return None  # the primitive node cannot carry the value: it never reaches the node
        if case.expect == REFUSE:
            if any(_error_names(e, case.names) for e in errors):
                return None
            return where + f"refused at queue, but not naming {'/'.join(case.names)} on node " \
                           f"{case.target}: {outcome.summary()}"
        if errors:
            return None  # an in-range value refused at queue with the node's own reason: a clear error
        return where + f"refused at queue elsewhere: {outcome.summary()}"
    if outcome.kind == "success":
        if case.expect == FINISH:
            return None
        return where + f"ran to success; the value should have been refused ({outcome.summary()})"
    message = str(outcome.error.get("exception_message", ""))
    found = internal_message(message)
    if found:
        return where + f"run-time error from inside ({found!r}): {outcome.summary()}"
    node_type = str(outcome.error.get("node_type", ""))
    if case.expect == REFUSE:
        named_node = technique(case.node) in message
        named_input = any(names_word(message, n) for n in case.names)
        if named_node and named_input:
            return None
        missing = [w for w, ok in ((technique(case.node), named_node), ("/".join(case.names), named_input)) if not ok]
        return where + f"run-time error not naming {' and '.join(missing)}: {outcome.summary()}"
    # FINISH: a clear error names the Expanse node that failed (or the node under test).
    if technique(case.node) in message or (node_type.startswith("Expanse") and technique(node_type) in message):
        return None
    return where + f"run-time error that names no Expanse node: {outcome.summary()}"


RESULTS: list[dict] = []  # every case's outcome this session, for the report (conftest writes it)


def check(runner: Runner, case: Case) -> None:
    """Runs one case and asserts its expectation; records the outcome for the report."""
    outcome = runner.outcome(case.build(), case.limit)
    problem = verdict(case, outcome)
    RESULTS.append({"node": case.node, "case": case.id, "input": case.input, "via": case.via,
                    "expect": case.expect, "outcome": outcome.kind, "seconds": round(outcome.seconds, 2),
                    "passed": problem is None, "problem": problem, "answer": outcome.summary(), "why": case.why})
    assert problem is None, problem


def table_tests(table: "Table") -> tuple[Callable, Callable, Callable]:
    """The three tests every node's module runs on its table, to be bound to test_ names there:
    the table follows /object_info, each case behaves, and the good prompt still draws the same."""
    import pytest

    cases = table.cases()

    def test_the_table_follows_the_nodes_inputs(object_info):
        assert not table.schema_problems(object_info)

    @pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])
    def test_hostile_value(runner, case):
        check(runner, case)

    def test_the_server_still_draws_the_good_prompt(runner, good_picture):
        assert np.array_equal(runner.picture(table.build()), good_picture)

    return (test_the_table_follows_the_nodes_inputs, test_hostile_value,
            test_the_server_still_draws_the_good_prompt)
