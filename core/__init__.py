"""Expanse's engine: plain torch, no ComfyUI imports.

Everything here takes tensors and modules or callables and returns tensors, so it can be
tested in milliseconds and survives changes in ComfyUI's API. The ComfyUI adapters live in
``nodes/``.
"""
