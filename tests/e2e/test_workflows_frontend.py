"""The example workflows through the real ComfyUI frontend (headless Chromium, Debian's
/usr/bin/chromium through Playwright): each one loads with every node type known and no warning
dialog, the frontend's own conversion (app.graphToPrompt) gives exactly the API prompt that
scripts/workflows.py's ui_to_api gives, and that frontend-made prompt runs with the demo model.
EXPANSE_SKIP_BROWSER=1 skips it on a machine without a browser."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

import workflows as wf
from frontend import frontend_page, skip_browser
from test_workflows import TEST_STEPS, WORKFLOW_FILES, pack_folder, run_scale

pytestmark = skip_browser

ARTIFACTS = os.path.join(os.path.dirname(__file__), "artifacts")

# Registered once in the page: the frontend hands afterConfigureGraph the node types it found
# missing while loading a workflow (the same list its missing-nodes dialog shows).
JS_SETUP = """
window.__expanseMissing = null;
app.registerExtension({
  name: "expanse.e2e.missingNodes",
  afterConfigureGraph(missing) {
    window.__expanseMissing = (missing || []).map((m) => (typeof m === "string" ? m : m.type));
  },
});
"""

# Loads a workflow from its JSON text (made into an object in the page: through Python, undefined
# would become null) and reports what the frontend made of it.
JS_LOAD = """async (text) => {
  window.__expanseMissing = null;
  await app.loadGraphData(JSON.parse(text));
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const visible = (el) => !!el && el.getClientRects().length > 0;
  return {
    missing: window.__expanseMissing,
    nodes: app.graph.nodes.map((n) => ({
      id: n.id, type: n.type, registered: n.type in LiteGraph.registered_node_types, errors: !!n.has_errors,
    })),
    missingDialog: visible(document.querySelector('[aria-labelledby="global-missing-nodes"]')),
    dialogs: [...document.querySelectorAll(".global-dialog")].filter(visible)
      .map((d) => d.getAttribute("aria-labelledby") + ": " + d.innerText.slice(0, 300)),
  };
}"""

# The whole graph in view for the screenshot, below the tab bar, with text however small (no
# low-detail drawing when zoomed out).
JS_FIT = """() => {
  const nodes = app.graph.nodes;
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - title));
  const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
  const ds = app.canvas.ds;
  ds.fitToBounds([x0, y0, x1 - x0, y1 - y0], {zoom: 0.9});
  ds.offset[0] += 30 / ds.scale;
  ds.offset[1] += 50 / ds.scale;
  app.canvas.min_font_size_for_lod = 0;
  app.canvas.setDirty(true, true);
}"""


# A node at the view's top left at zoom 1 (the region editor hides when zoomed out, and a DOM
# widget is drawn only in view).
JS_SHOW = """(id) => {
  const node = app.graph.getNodeById(id);
  app.canvas.ds.scale = 1;
  app.canvas.ds.offset = [40 - node.pos[0], 40 + LiteGraph.NODE_TITLE_HEIGHT - node.pos[1]];
  app.canvas.setDirty(true, true);
}"""

# The region editor of the node has drawn this box.
JS_PAINTED = """([id, box]) => {
  const c = app.graph.getNodeById(id)?.widgets.find((w) => w.name === "region_editor")?.element
    .querySelector("canvas.expanse-region-editor");
  if (!c?.dataset.box) return false;
  const drawn = JSON.parse(c.dataset.box);
  return Object.keys(box).every((k) => Math.abs(drawn[k] - box[k]) < 1e-9);
}"""


def region_box(ui: dict, node_id: int) -> dict:
    """A RegionPrompt's box from the workflow file: its first four widgets are x, y, width, height."""
    node = next(n for n in ui["nodes"] if n["id"] == node_id)
    return dict(zip(("x", "y", "width", "height"), node["widgets_values"][:4]))


@pytest.fixture(scope="module")
def server(one_thread_server):
    return one_thread_server  # as test_workflows.py: one CPU thread (conftest.one_thread_server)


@pytest.fixture(scope="module")
def our_words(object_info) -> list[str]:
    """What marks a console message as ours: the pack's name and folder, its extension's file,
    its node types."""
    folder = pack_folder()
    nodes = [name for name, info in object_info.items() if info["python_module"] == f"custom_nodes.{folder}"]
    assert "RegionPrompt" in nodes and "TiledDiffusion" in nodes, nodes
    return ["expanse", folder.lower(), "region_editor.js"] + [n.lower() for n in nodes]


@pytest.fixture(scope="module")
def page(server):
    with frontend_page(server, 1920, 1080, JS_SETUP) as pg:
        yield pg


def ours(problems: list[str], words: list[str], local: str) -> list[str]:
    """The problems that mention the pack, less requests the frontend makes to other sites: it asks
    the Comfy registry (api.comfy.org) about every custom node type it shows, which fails offline
    (ERR_NAME_NOT_RESOLVED) or answers 404 for a pack it does not list."""
    def offsite(problem: str) -> bool:
        urls = re.findall(r"https?://[^\s'\"]+", problem)
        return bool(urls) and not any(u.startswith(local) for u in urls)

    return [p for p in problems if any(w in p.lower() for w in words) and not offsite(p)]


def differences(got: dict, expected: dict) -> list[str]:
    """How the frontend's prompt differs from ui_to_api's: node by node, input by input (_meta
    left out)."""
    out = []
    for node_id in sorted(set(got) | set(expected), key=lambda k: int(k) if k.isdigit() else 0):
        if node_id not in got or node_id not in expected:
            where = "the frontend" if node_id in got else "ui_to_api"
            node = got.get(node_id) or expected[node_id]
            out.append(f"node {node_id} ({node['class_type']}) only in {where}'s prompt")
            continue
        a, b = got[node_id], expected[node_id]
        if a["class_type"] != b["class_type"]:
            out.append(f"node {node_id}: class_type {a['class_type']!r} (frontend) != {b['class_type']!r}")
        for name in sorted(set(a["inputs"]) | set(b["inputs"])):
            va, vb = a["inputs"].get(name, "<absent>"), b["inputs"].get(name, "<absent>")
            if va != vb or type(va) is not type(vb) and not {type(va), type(vb)} <= {int, float}:
                out.append(f"node {node_id} ({b['class_type']}).{name}: frontend {va!r}, ui_to_api {vb!r}")
    return out


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_workflow_loads_converts_and_runs_in_the_frontend(path, page, server, object_info, defs, our_words,
                                                          tmp_path):
    text = path.read_text()
    ui = json.loads(text)

    # 1. Loaded in the frontend: every node type known, no warning or error dialog.
    loaded = page.evaluate(JS_LOAD, text)
    assert loaded["missing"] is not None, "the frontend never called afterConfigureGraph"
    assert loaded["missing"] == [], f"the frontend found these node types missing: {loaded['missing']}"
    assert sorted((n["id"], n["type"]) for n in loaded["nodes"]) == sorted((n["id"], n["type"]) for n in ui["nodes"])
    unknown = [n for n in loaded["nodes"] if not n["registered"] or n["errors"]]
    assert not unknown, f"nodes the frontend does not know: {unknown}"
    assert not loaded["missingDialog"] and not loaded["dialogs"], loaded["dialogs"]
    for node in loaded["nodes"]:  # the region editor draws each loaded region (in view, at zoom 1)
        if node["type"] == "RegionPrompt":
            page.evaluate(JS_SHOW, node["id"])
            page.wait_for_function(JS_PAINTED, arg=[node["id"], region_box(ui, node["id"])], timeout=10_000)

    page.evaluate(JS_FIT)
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    shot = tmp_path / f"workflow_{path.stem}.png"
    page.screenshot(path=str(shot))
    os.makedirs(ARTIFACTS, exist_ok=True)
    shutil.copy(shot, os.path.join(ARTIFACTS, shot.name))

    # 2. The frontend's conversion is ui_to_api's.
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    expected = wf.ui_to_api(ui, defs)
    diff = differences(prompt, expected)
    assert not diff, "the frontend's graphToPrompt differs from ui_to_api:\n" + "\n".join(diff)
    # _meta.title, the one difference: for a node without a title of its own the frontend writes its
    # display name ("Save Image"), ui_to_api its type ("SaveImage"). for_demo reads it only on
    # CLIPTextEncode nodes, which carry their own titles ("Positive prompt") in every example.
    titles = {str(n["id"]): n.get("title") or object_info[n["type"]]["display_name"]
              for n in ui["nodes"] if str(n["id"]) in expected}
    assert {k: n["_meta"]["title"] for k, n in prompt.items()} == titles
    assert all(n.get("title") for n in ui["nodes"] if n["type"] == "CLIPTextEncode")

    # 3. The frontend's prompt runs with the demo model, scaled down (canvases <= TEST_SIDE px).
    demo = wf.demo_settings(path.stem, defs)
    scale = run_scale(ui, demo)
    wf.upload_demo_images(server, demo, scale=scale, steps=TEST_STEPS)
    run = wf.for_demo(prompt, demo, scale=scale, steps=TEST_STEPS, prefix=f"e2e_frontend_{path.stem}")
    status, answer = server.queue(run)
    assert status == 200, answer
    entry = server.wait(answer["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    assert server.images(entry), "the prompt saved no picture"

    mine = ours(page.problems, our_words, server.url)
    assert not mine, "\n".join(mine)
