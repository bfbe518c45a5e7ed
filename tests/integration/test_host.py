"""The in-process host (expanse_harness.host): ComfyUI's own loader registers the pack that is
imported as `expanse`, so the process holds one copy of it and a test patches that copy."""
import pathlib
import sys

from expanse_harness.host import ROOT


def test_comfyui_registers_the_classes_of_the_expanse_package(comfy_nodes):
    ours = {name: cls for name, cls in comfy_nodes.NODE_CLASS_MAPPINGS.items()
            if getattr(cls, "RELATIVE_PYTHON_MODULE", None) == "custom_nodes.expanse"}
    assert {"ExpanseTiledVAEDecode", "ExpanseTiledDiffusion", "ExpanseChessTileRedraw", "ExpanseDemoModelLoader"} <= set(ours)
    for name, cls in ours.items():
        assert cls.__module__.startswith("expanse."), name
        assert getattr(sys.modules[cls.__module__], cls.__name__) is cls, name
    assert comfy_nodes.EXTENSION_WEB_DIRS["expanse"] == str(ROOT / "web")


def test_no_second_copy_of_the_pack_is_loaded(comfy_nodes):
    """Every module of the pack's subpackages (nodes/, core/, ...) is in sys.modules once, as
    `expanse.<name>`, and not again under the name of a path, as ComfyUI's loader names a folder."""
    subpackages = {d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file() and d.name != "tests"}
    seen = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and pathlib.Path(path).is_absolute() and pathlib.Path(path).resolve().is_relative_to(ROOT):
            relative = pathlib.Path(path).resolve().relative_to(ROOT)
            if relative.parts[0] in subpackages:
                seen.setdefault(relative, []).append(name)
    assert any(path.parts[0] == "nodes" for path in seen), seen
    assert all(len(names) == 1 and names[0].startswith("expanse.") for names in seen.values()), seen
