"""The one check every node's values pass at entry, whether they came from a widget or a link.

ComfyUI range-checks a widget's value when a prompt is queued, but not a value that arrives
through a link (a primitive node, a math node), and not NaN (every comparison with NaN is false,
so NaN passes any range). Such values used to reach torch and Python builtins and fail there
("range() arg 3 must not be zero", "cannot convert float NaN to integer"), or hang a loop. The
schema already states each input's type and range; `checked_entry` holds every value to it before
the node runs, and says which node, which input, what came and what to do.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

import torch
from comfy_api.latest import io

LINK_NOTE = "a value that comes through a link skips the widget's range check, so the node checks it"


class EntryError(ValueError):
    """A value a node refuses at entry; the message names the node, the input, the value and the fix."""


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(node: str, name: str, value: Any, low, high, whole: bool):
    kind = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EntryError(f"{node}: {name} is {_shown(value)}; it must be {kind}")
    if not math.isfinite(value):
        raise EntryError(f"{node}: {name} is {value}; it must be a finite number ({LINK_NOTE})")
    if whole:
        if value != int(value):
            raise EntryError(f"{node}: {name} is {value}; it must be a whole number")
        value = int(value)
    else:
        value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"from {low} to {high}" if low is not None and high is not None else \
            f"at least {low}" if low is not None else f"at most {high}"
        raise EntryError(f"{node}: {name} is {value}; it must be {span} ({LINK_NOTE})")
    return value


def _tensor(node: str, name: str, value: Any, what: str, ranks: tuple[int, ...]) -> None:
    if not isinstance(value, torch.Tensor):
        raise EntryError(f"{node}: {name} is {_shown(value)}; connect {what}")
    if value.ndim not in ranks:
        raise EntryError(f"{node}: {name} has shape {tuple(value.shape)}; {what} has "
                         f"{' or '.join(map(str, ranks))} dimensions")
    if value.numel() == 0:
        raise EntryError(f"{node}: {name} is empty (shape {tuple(value.shape)}); connect {what} with something in it")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise EntryError(f"{node}: {name} holds NaN or infinite values; the node that made it failed "
                         "(check its settings), so there is nothing to draw from")


def check_value(node: str, spec: io.Input, value: Any) -> Any:
    """The value, normalised (whole numbers as int, numbers as float), or EntryError."""
    name = spec.id
    if isinstance(spec, io.Int.Input):
        return _number(node, name, value, spec.min, spec.max, whole=True)
    if isinstance(spec, io.Float.Input):
        return _number(node, name, value, spec.min, spec.max, whole=False)
    if isinstance(spec, io.Boolean.Input):
        if not isinstance(value, bool):
            raise EntryError(f"{node}: {name} is {_shown(value)}; it must be true or false")
    elif isinstance(spec, io.Combo.Input):
        if value not in spec.options:
            shown = ", ".join(map(str, spec.options[:12])) + (", ..." if len(spec.options) > 12 else "")
            raise EntryError(f"{node}: {name} is {_shown(value)}; it must be one of {shown}")
    elif isinstance(spec, io.Latent.Input):
        if not isinstance(value, dict) or "samples" not in value:
            raise EntryError(f"{node}: {name} is {_shown(value)}; connect a LATENT (a dict with samples)")
        _tensor(node, name, value["samples"], "a latent", (4, 5))
    elif isinstance(spec, io.Image.Input):
        _tensor(node, name, value, "an IMAGE (batch, height, width, channels)", (4,))
    elif isinstance(spec, io.Mask.Input):
        _tensor(node, name, value, "a MASK (batch, height, width)", (2, 3))
    elif value is None:
        raise EntryError(f"{node}: {name} is not connected")
    return value


def check_entry(node: str, schema: io.Schema, values: dict[str, Any]) -> dict[str, Any]:
    """Every input of the schema that has a value, checked; returns the values normalised.
    Optional inputs may be absent or None; required ones may not."""
    checked = dict(values)
    for spec in schema.inputs:
        if spec.id not in values or (values[spec.id] is None and spec.optional):
            continue
        checked[spec.id] = check_value(node, spec, values[spec.id])
    return checked


def checked_entry(execute: Callable) -> Callable:
    """Wraps a node's execute (under @classmethod) so its values pass check_entry first. The node
    is named in messages by its id without the pack's prefix (the technique's name)."""
    signature = inspect.signature(execute)

    @functools.wraps(execute)
    def run(cls, *args, **kwargs):
        schema = cls.define_schema()
        bound = signature.bind(cls, *args, **kwargs)
        node = schema.node_id.removeprefix("Expanse")
        values = check_entry(node, schema, {k: v for k, v in bound.arguments.items() if k != "cls"})
        return execute(cls, **values)

    return run
