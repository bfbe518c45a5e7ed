"""Expanse: ComfyUI nodes for drawing very large images on limited GPU memory.

ComfyUI's entry point. It registers the nodes and the web extension and does nothing else; the
node modules (and with them ComfyUI's API) are imported only when ComfyUI asks for the nodes,
so the engine in core/ stays importable on its own.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import ExpanseExtension

    return ExpanseExtension()
