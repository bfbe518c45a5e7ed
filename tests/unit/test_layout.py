"""The layers keep to their places (README, Development): core/ imports no ComfyUI and nothing of
the pack above it; runtime/ never imports nodes/; no node module imports another."""
import ast
import pathlib

import pytest

PACK = pathlib.Path(__file__).resolve().parents[2]
COMFY_MODULES = ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "nodes", "folder_paths",
                 "latent_preview", "server", "node_helpers")


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(level, module) of every import: level 0 is absolute, 1 is `from .x`, 2 is `from ..x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def modules(folder: str) -> list[pathlib.Path]:
    return sorted((PACK / folder).glob("*.py"))


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_imports_no_comfyui_and_nothing_above_it(path):
    for level, name in imports(path):
        assert not (level == 0 and name.split(".")[0] in COMFY_MODULES), f"{path.name} imports {name}"
        assert level <= 1, f"{path.name} imports {'.' * level}{name}, outside core/"


@pytest.mark.parametrize("path", modules("runtime"), ids=lambda p: p.name)
def test_runtime_never_imports_nodes(path):
    for level, name in imports(path):
        assert not (level == 2 and name.split(".")[0] == "nodes"), f"{path.name} imports ..{name}"
        assert level <= 2


@pytest.mark.parametrize("path", [p for p in modules("nodes") if p.name != "__init__.py"], ids=lambda p: p.name)
def test_no_node_module_imports_another(path):
    for level, name in imports(path):
        assert level != 1, f"{path.name} imports .{name}: nodes call runtime/ and core/, not each other"
        if level == 2:
            assert name.split(".")[0] in ("core", "runtime"), f"{path.name} imports ..{name}"
