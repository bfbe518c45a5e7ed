"""The example workflows through the real ComfyUI frontend (headless Chromium, Debian's
/usr/bin/chromium through Playwright): each one loads with every node type known and no warning
dialog, the frontend's own conversion (app.graphToPrompt) gives exactly the API prompt that
expanse_harness.workflows.ui_to_api gives, and that frontend-made prompt runs with the demo model.
EXPANSE_SKIP_BROWSER=1 skips it on a machine without a browser.

Node ids: the frontend's live ids are numbers in older frontends and strings in newer ones (the
workflow files' ids are numbers), so they are compared as str(id)."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from expanse_harness import workflows as wf
from frontend import PlaywrightTimeout, frontend_page, skip_browser
from test_workflows import TEST_STEPS, WORKFLOW_FILES, pack_folder, run_scale, template_id

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
      id: n.id, type: n.type, registered: n.type in LiteGraph.registered_node_types,
    })),
    missingDialog: visible(document.querySelector('[aria-labelledby="global-missing-nodes"]')),
    dialogs: [...document.querySelectorAll(".global-dialog")].filter(visible)
      .map((d) => d.getAttribute("aria-labelledby") + ": " + d.innerText.slice(0, 300)),
  };
}"""

# What the frontend flagged in the loaded graph as files this server does not have. Newer frontends
# check each loader's model and each LoadImage's picture against the server's lists, mark those
# nodes with errors (has_errors) and count them in an error overlay ("2 errors found"); the example
# workflows name models and pictures a user puts on their own server, which the test server lacks.
# Read from the frontend's own stores (Pinia, in the Vue app's root); `tracked`: this frontend has
# them (older ones check nothing and flag nothing).
JS_FILE_FLAGS = """() => {
  const pinia = document.querySelector("[data-v-app]")?.__vue_app__?.config.globalProperties.$pinia;
  const store = (id) => pinia?._s.get(id);
  const models = store("missingModel"), media = store("missingMedia"), errors = store("executionError");
  const flags = [
    ...(models?.missingModelCandidates ?? []).map((c) => ({kind: "model", directory: c.directory ?? null,
      node: String(c.nodeId), widget: c.widgetName, name: c.name, missing: c.isMissing})),
    ...(media?.missingMediaCandidates ?? []).map((c) => ({kind: "media", mediaType: c.mediaType ?? null,
      node: String(c.nodeId), widget: c.widgetName, name: c.name, missing: c.isMissing})),
  ];
  return {
    tracked: !!(models && media && errors),
    flags,
    errorCount: errors?.totalErrorCount ?? null,
    withErrors: app.graph.nodes.filter((n) => n.has_errors).map((n) => String(n.id)),
  };
}"""

# The frontend has flagged every file of `absent` ([node id, widget, file] each) and marked its
# node (it checks them asynchronously after loading); at once where it tracks no such thing.
JS_FLAGS_SETTLED = "(absent) => { const s = (" + JS_FILE_FLAGS + """)();
  if (!s.tracked) return true;
  const key = (node, widget, name) => JSON.stringify([String(node), widget, name]);
  const flagged = new Set(s.flags.map((f) => key(f.node, f.widget, f.name)));
  return absent.every(([node, widget, name]) => flagged.has(key(node, widget, name)))
    && s.flags.every((f) => s.withErrors.includes(f.node));
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


def region_box(ui: dict, node_id) -> dict:
    """A RegionPrompt's box from the workflow file: its first four widgets are x, y, width, height."""
    node = next(n for n in ui["nodes"] if str(n["id"]) == str(node_id))
    return dict(zip(("x", "y", "width", "height"), node["widgets_values"][:4]))


def combo_options(object_info: dict, node_type: str, input_name: str) -> list | None:
    """The values the server offers for a combo input (for a loader, the files it has), or None
    for an input that is no combo."""
    inputs = object_info[node_type]["input"]
    spec = inputs.get("required", {}).get(input_name) or inputs.get("optional", {}).get(input_name)
    if not spec:
        return None
    if isinstance(spec[0], list):  # ["a", "b"], {...}
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):  # "COMBO", {"options": [...]}
        return spec[1].get("options")
    return None


def absent_files(ui: dict, object_info: dict, defs) -> list[list]:
    """[node id, widget, value] for each combo widget of the workflow whose value the server does not
    offer: the models and pictures the workflow names that this server lacks."""
    absent = []
    for node in ui["nodes"]:
        if node["type"] not in object_info:
            continue  # the frontend's own nodes (Note)
        values = node.get("widgets_values") or []
        for widget, value in zip(defs[node["type"]].widgets, values):
            if not widget.serialized:
                continue
            options = combo_options(object_info, node["type"], widget.input_name)
            if options is not None and value not in options:
                absent.append([str(node["id"]), widget.input_name, value])
    return absent


def file_flag_problems(state: dict, absent: list[list]) -> list[str]:
    """What the frontend flagged beyond "a model or picture this server does not have" (see
    JS_FILE_FLAGS): each flag must be of a model or an image, named by the node's own widget, and
    absent from the server's list; no node may have errors but for such a flag; and the frontend's
    error count must be those flags and nothing else."""
    problems = []
    known = {tuple(a) for a in absent}
    flagged_nodes = set()
    for flag in state["flags"]:
        kind_ok = flag["kind"] == "model" or (flag["kind"] == "media" and flag.get("mediaType") == "image")
        if not kind_ok or flag["missing"] is not True or (flag["node"], flag["widget"], flag["name"]) not in known:
            problems.append(f"the frontend flags {flag}: not a model or picture that this server lacks")
        else:
            flagged_nodes.add(flag["node"])
    others = sorted(set(state["withErrors"]) - flagged_nodes, key=lambda i: int(i) if i.isdigit() else 0)
    if others:
        problems.append(f"nodes with errors other than a missing model or picture: {others}")
    if state["tracked"] and state["errorCount"] != len(state["flags"]):
        problems.append(f"the frontend counts {state['errorCount']} errors, of which only {len(state['flags'])} "
                        f"are missing models or pictures: {state}")
    return problems


@pytest.fixture(scope="module")
def server(one_thread_server):
    return one_thread_server  # as test_workflows.py: one CPU thread (conftest.one_thread_server)


@pytest.fixture(scope="module")
def our_words(object_info) -> list[str]:
    """What marks a console message as ours: the pack's name and folder, its extension's file,
    its node types."""
    folder = pack_folder()
    nodes = [name for name, info in object_info.items() if info["python_module"] == f"custom_nodes.{folder}"]
    assert "ExpanseRegionPrompt" in nodes and "ExpanseTiledDiffusion" in nodes, nodes
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


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=template_id)
def test_workflow_loads_converts_and_runs_in_the_frontend(path, page, server, object_info, defs, our_words,
                                                          tmp_path):
    text = path.read_text()
    ui = json.loads(text)

    # 1. Loaded in the frontend: every node type known, no warning or error dialog.
    loaded = page.evaluate(JS_LOAD, text)
    assert loaded["missing"] is not None, "the frontend never called afterConfigureGraph"
    assert loaded["missing"] == [], f"the frontend found these node types missing: {loaded['missing']}"
    assert (sorted((str(n["id"]), n["type"]) for n in loaded["nodes"])
            == sorted((str(n["id"]), n["type"]) for n in ui["nodes"]))
    unknown = [n for n in loaded["nodes"] if not n["registered"]]
    assert not unknown, f"nodes the frontend does not know: {unknown}"
    # No node in error, but for the models and pictures the workflow names that this server lacks
    # (a user brings their own), which newer frontends flag: those, and only those, are expected.
    # The frontend's lists of files are the server's when the page started (object_info, fetched as
    # it did); a picture uploaded for an earlier workflow's run may be on the server by now, and
    # whether the frontend has heard of it is its own business: its flag is waited for only while
    # the file is still absent.
    absent = absent_files(ui, object_info, defs)
    now = {t: server.get(f"/object_info/{t}")[t] for t in {n["type"] for n in ui["nodes"]} if t in object_info}
    still_absent = [a for a in absent if a in absent_files(ui, now, defs)]
    try:
        page.wait_for_function(JS_FLAGS_SETTLED, arg=still_absent, timeout=30_000)
    except PlaywrightTimeout:
        pass  # the frontend did not flag them all: what it did flag is checked all the same
    problems = file_flag_problems(page.evaluate(JS_FILE_FLAGS), absent)
    assert not problems, "\n".join(problems)
    # Older frontends (1.32.9) show their missing-models dialog instead, for the checkpoints whose
    # download a loader's properties.models offers: that dialog, naming each absent checkpoint, and
    # no other. (tests/e2e/test_templates.py checks its Download buttons.)
    dialogs = [d for d in loaded["dialogs"] if not d.startswith("global-missing-models-warning: ")]
    offered = [d for d in loaded["dialogs"] if d.startswith("global-missing-models-warning: ")]
    assert not loaded["missingDialog"] and not dialogs, dialogs
    if offered:
        checkpoints = [name for _, widget, name in absent if widget == "ckpt_name"]
        assert checkpoints and all(f"checkpoints / {name}" in offered[0] for name in checkpoints), offered
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.querySelector('[aria-labelledby=\"global-missing-models-warning\"]')",
                               timeout=10_000)
    for node in loaded["nodes"]:  # the region editor draws each loaded region (in view, at zoom 1)
        if node["type"] == "ExpanseRegionPrompt":
            page.evaluate(JS_SHOW, node["id"])
            page.wait_for_function(JS_PAINTED, arg=[node["id"], region_box(ui, node["id"])], timeout=30_000)

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
    demo = wf.demo_settings(template_id(path), defs)
    scale = run_scale(ui, demo)
    wf.upload_demo_images(server, demo, scale=scale, steps=TEST_STEPS)
    run = wf.for_demo(prompt, demo, scale=scale, steps=TEST_STEPS, prefix=f"e2e_frontend_{template_id(path)}")
    status, answer = server.queue(run)
    assert status == 200, answer
    entry = server.wait(answer["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    assert server.images(entry), "the prompt saved no picture"

    mine = ours(page.problems, our_words, server.url)
    assert not mine, "\n".join(mine)
