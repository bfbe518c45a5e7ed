"""The ComfyUI-facing machinery between the nodes and the engine.

nodes/ declares what the user sees (schemas) and calls in here; core/ is plain torch. This layer
speaks ComfyUI: conditioning cut per tile, the TiledDiffusion model wrappers, the tiled-VAE runner
and its one policy for tile, mode and parking, model geometry, sampling helpers, the demo model.
It never imports nodes/. What differs between ComfyUI versions lives in compat.py.
"""
