"""Everything that drives a ComfyUI host for the tests, the benchmarks, the demo model's scripts
and scripts/: not part of the pack (ComfyUI never loads it).

    host         which ComfyUI this Python runs; the pack importable as `expanse`; ComfyUI in this
                 process with the pack loaded once
    server       a real ComfyUI server in its own process: start, upload, queue, wait, fetch
    tiny_models  small models built from ComfyUI's own classes (and full-size ones, random weights)
    workflows    the example workflows: save format, UI-to-API conversion, demo-model runs

Imported as `import expanse_harness`: scripts/setup.sh writes a .pth file that puts harness/ on
the venv's sys.path (.venv-latest reads it through its layer on .venv). host.import_host() is the
one other place that touches sys.path: it adds the ComfyUI folder.
"""
