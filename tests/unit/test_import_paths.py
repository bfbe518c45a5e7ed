"""How tests, bench, demo and scripts find their code: `import expanse_harness` through the .pth
file scripts/setup.sh writes, and nothing else. sys.path changes in one place only (the ComfyUI
folder, expanse_harness.host.import_host), and no module outside tests/ imports a conftest."""
import ast
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SKIPPED = {".venv", ".venv-latest", ".comfyui", ".comfyui-latest", ".cache", "output"}
SYS_PATH_OWNER = pathlib.Path("harness/expanse_harness/host.py")


def python_files() -> list[pathlib.Path]:
    """The repository's Python files, relative to it (the hosts and venvs set-up builds left out)."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        if pathlib.Path(folder) == ROOT:
            dirs[:] = [d for d in dirs if d not in SKIPPED and not d.startswith(".git")]
        found += [(pathlib.Path(folder) / f).relative_to(ROOT) for f in files if f.endswith(".py")]
    return sorted(found)


def sys_path_changes(tree: ast.AST) -> list[int]:
    """Lines that call a method of sys.path (insert, append, extend) or assign to it."""
    lines = []
    for node in ast.walk(tree):
        target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if isinstance(t, ast.Attribute)), None)
        if isinstance(target, ast.Attribute) and target.attr == "path" and \
                isinstance(target.value, ast.Name) and target.value.id == "sys":
            lines.append(node.lineno)
    return lines


def test_sys_path_changes_only_in_the_harness_host():
    found = {}
    for path in python_files():
        lines = sys_path_changes(ast.parse((ROOT / path).read_text(), str(path)))
        if lines and path != SYS_PATH_OWNER:
            found[str(path)] = lines
    assert not found, f"sys.path changed outside {SYS_PATH_OWNER}: {found}"


def test_no_conftest_is_imported_outside_the_tests():
    found = []
    for path in python_files():
        if path.parts[0] == "tests":
            continue
        for node in ast.walk(ast.parse((ROOT / path).read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path}:{node.lineno}" for name in names if name.split(".")[-1] == "conftest"]
    assert not found
