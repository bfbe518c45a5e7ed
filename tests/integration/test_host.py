"""The in-process host (expanse_harness.host): ComfyUI's own loader registers the pack that is
imported as `expanse`, so the process holds one copy of it and a test patches that copy."""
import logging
import pathlib
import sys

from expanse_harness.host import ROOT


def test_comfyui_registers_the_classes_of_the_expanse_package(comfy_nodes, pack_node_ids):
    ours = {name: cls for name, cls in comfy_nodes.NODE_CLASS_MAPPINGS.items()
            if getattr(cls, "RELATIVE_PYTHON_MODULE", None) == "custom_nodes.expanse"}
    assert pack_node_ids and sorted(ours) == pack_node_ids and all(n.startswith("Expanse") for n in ours), sorted(ours)
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


def test_a_node_id_taken_by_another_pack_is_said_in_the_log(comfy_nodes, caplog):
    """Before us (seen at load) and after us (seen by the prompt hook): the warning names the id
    and the other pack; our own registration alone says nothing."""
    from expanse.runtime.host import watch_node_ids

    ours = comfy_nodes.NODE_CLASS_MAPPINGS["ExpanseChessTileRedraw"]
    rival = type("RivalRedraw", (), {"RELATIVE_PYTHON_MODULE": "custom_nodes.rival-pack"})
    with caplog.at_level(logging.WARNING, logger="expanse"):
        check = watch_node_ids([ours])
        check({"prompt": {}})
        assert not caplog.records
        comfy_nodes.NODE_CLASS_MAPPINGS["ExpanseChessTileRedraw"] = rival
        try:
            check({"prompt": {}})
            check({"prompt": {}})  # said once
            watch_node_ids([ours])
        finally:
            comfy_nodes.NODE_CLASS_MAPPINGS["ExpanseChessTileRedraw"] = ours
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert all("'ExpanseChessTileRedraw'" in line and "custom_nodes.rival-pack" in line for line in said)
    assert "taken over" in said[0] and "already registered" in said[1]
