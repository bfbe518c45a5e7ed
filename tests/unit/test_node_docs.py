"""Every node has its help page in web/docs/, at both paths the frontend asks for (frontends 1.32.9
and 1.49.6 fetch /extensions/<pack>/docs/<node id>/<locale>.md, then <node id>.md): <id>/en.md for
English, <id>.md for every other language, the same text. Read from the source, no ComfyUI needed;
tests/e2e/test_node_help.py checks the pages against the real /object_info and in the browser."""
import ast
import pathlib
import re

import pytest

PACK = pathlib.Path(__file__).resolve().parents[2]
DOCS = PACK / "web" / "docs"
SECTIONS = ("## When to use it", "## Inputs", "## Output", "## Example", "## Pitfalls")


def schemas() -> dict[str, dict]:
    """node_id -> the literal keywords (display_name, description) of every node_schema(...) in nodes/."""
    found = {}
    for path in sorted((PACK / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "node_schema":
                fields = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
                found[fields["node_id"]] = fields
    return found


def test_every_node_is_found():
    assert len(schemas()) == 10


def test_no_page_without_a_node():
    pages = {p.stem for p in DOCS.glob("*.md")} | {p.name for p in DOCS.iterdir() if p.is_dir()}
    assert pages == set(schemas()), pages ^ set(schemas())


@pytest.mark.parametrize("node_id", sorted(schemas()))
def test_node_has_its_page_at_both_paths(node_id):
    page, english = DOCS / f"{node_id}.md", DOCS / node_id / "en.md"
    assert page.is_file() and english.is_file()
    assert english.read_bytes() == page.read_bytes(), f"{english} differs from {page}: copy one over the other"


@pytest.mark.parametrize("node_id", sorted(schemas()))
def test_page_opens_with_the_display_name_and_has_every_section(node_id):
    text = (DOCS / f"{node_id}.md").read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"# {schemas()[node_id]['display_name']}"
    missing = [s for s in SECTIONS if not re.search(rf"^{re.escape(s)}", text, re.M)]
    assert not missing, f"{node_id}: no {missing}"


@pytest.mark.parametrize("node_id", sorted(schemas()))
def test_page_links_only_to_what_ships(node_id):
    """The frontend resolves relative links and images against /extensions/<pack>/docs/."""
    text = (DOCS / f"{node_id}.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)", text):
        if not re.match(r"[a-z]+://|#", target):
            assert (DOCS / target).is_file(), f"{node_id}: links to {target}, which web/docs/ lacks"
