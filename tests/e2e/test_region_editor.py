"""The RegionPrompt region editor (web/region_editor.js) in the real ComfyUI frontend, driven with
the mouse and keyboard in headless Chromium (Debian's /usr/bin/chromium through Playwright; set up
by scripts/setup.sh). EXPANSE_SKIP_BROWSER=1 skips it on a machine without them."""
import json
import os
import shutil

import pytest

from frontend import frontend_page, skip_browser

pytestmark = skip_browser

ARTIFACTS = os.path.join(os.path.dirname(__file__), "artifacts")
BOX = ("x", "y", "width", "height")
# The editor snaps to the widgets' rounding grid (0.01 for this node, see quantumOf in the
# extension); a drag lands within one grid step of the exact fraction.
TOL = 0.011

JS_HELPERS = """
window.__expanse = {
  node: (id) => app.graph.getNodeById(id),
  widget: (id, name) => app.graph.getNodeById(id).widgets.find((w) => w.name === name),
  canvas: (id) => app.graph.getNodeById(id)?.widgets.find((w) => w.name === "region_editor")?.element
    .querySelector("canvas.expanse-region-editor"),
  box: (id) => Object.fromEntries(["x", "y", "width", "height"].map(
    (k) => [k, app.graph.getNodeById(id).widgets.find((w) => w.name === k).value])),
  setBox: (id, box) => {
    const node = app.graph.getNodeById(id);
    for (const [k, v] of Object.entries(box)) node.widgets.find((w) => w.name === k).value = v;
    node.setDirtyCanvas(true, true);
  },
};
"""


@pytest.fixture(scope="module")
def page(server):
    with frontend_page(server, 1280, 900, JS_HELPERS) as pg:  # pg.problems is checked by the last test
        yield pg


@pytest.fixture(scope="module")
def chain(page):
    """Two RegionPrompts chained A -> B (B's `conditioning` fed by A), on a cleared graph at zoom 1."""
    ids = page.evaluate("""() => {
        app.graph.clear();
        app.canvas.ds.scale = 1;
        app.canvas.ds.offset = [0, 0];
        const a = LiteGraph.createNode("RegionPrompt");
        const b = LiteGraph.createNode("RegionPrompt");
        a.pos = [80, 150];
        b.pos = [480, 150];
        app.graph.add(a);
        app.graph.add(b);
        a.connect(0, b, b.findInputSlot("conditioning"));
        __expanse.setBox(a.id, {x: 0.05, y: 0.6, width: 0.3, height: 0.3});
        app.canvas.setDirty(true, true);
        return [a.id, b.id];
    }""")
    wait_painted(page, ids[1])
    wait_painted(page, ids[0])
    return ids


def wait_painted(page, node_id, box=None):
    """Waits until the node's editor has drawn (box, when given: that box)."""
    page.wait_for_function("""([id, box]) => {
        const c = __expanse.canvas(id);
        if (!c?.dataset.box) return false;
        if (!box) return true;
        const drawn = JSON.parse(c.dataset.box);
        return Object.keys(box).every((k) => Math.abs(drawn[k] - box[k]) < 1e-9);
    }""", arg=[node_id, box], timeout=10_000)


def picture(page, node_id):
    """Where the editor draws the canvas, in page (screen) px."""
    return page.evaluate("""(id) => {
        const c = __expanse.canvas(id);
        const r = c.getBoundingClientRect();
        const s = r.width / c.clientWidth;  // the DOM widget is CSS-scaled with the graph zoom
        const p = JSON.parse(c.dataset.page);
        return {left: r.left + p.left * s, top: r.top + p.top * s, width: p.width * s, height: p.height * s};
    }""", node_id)


def screen(pic, fx, fy):
    return pic["left"] + fx * pic["width"], pic["top"] + fy * pic["height"]


def drag(page, start, delta, pic):
    """Presses at start (screen px), moves by delta (canvas fractions) in steps, releases."""
    x0, y0 = start
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + delta[0] * pic["width"], y0 + delta[1] * pic["height"], steps=6)
    page.mouse.up()


def set_box(page, node_id, box):
    page.evaluate("([id, box]) => __expanse.setBox(id, box)", [node_id, box])
    wait_painted(page, node_id, box)


def assert_box(page, node_id, expected):
    got = page.evaluate("(id) => __expanse.box(id)", node_id)
    for k in BOX:
        assert abs(got[k] - expected[k]) <= TOL, f"{k}: got {got[k]}, expected {expected[k]} (all: {got})"
        assert abs(got[k] * 1000 - round(got[k] * 1000)) < 1e-6, f"{k} = {got[k]} is not rounded to 3 decimals"
    assert got["x"] + got["width"] <= 1 + 1e-9 and got["y"] + got["height"] <= 1 + 1e-9, got
    wait_painted(page, node_id, got)  # the editor shows what the widgets hold
    return got


def test_editor_is_on_every_region_node_and_shows_the_chain(page, chain):
    a, b = chain
    info = page.evaluate("""([a, b]) => [a, b].map((id) => ({
        names: __expanse.node(id).widgets.map((w) => w.name),
        others: __expanse.canvas(id).dataset.others,
        width: __expanse.canvas(id).clientWidth,
        height: __expanse.canvas(id).clientHeight,
    }))""", [a, b])
    for node in info:
        # The editor comes after the node's own widgets (serialisation relies on it).
        assert node["names"] == ["x", "y", "width", "height", "type", "feather", "strength", "canvas_width",
                                 "canvas_height", "region_editor"]
        assert node["width"] > 100 and node["height"] > 100
    assert info[0]["others"] == "0"  # A has nothing upstream
    assert info[1]["others"] == "1"  # B shows A faded


def test_dragging_moves_and_resizes_the_box_within_the_canvas(page, chain):
    b = chain[1]
    set_box(page, b, {"x": 0.25, "y": 0.25, "width": 0.5, "height": 0.5})
    pic = picture(page, b)

    drag(page, screen(pic, 0.5, 0.5), (0.1, 0.05), pic)  # the middle: move
    box = assert_box(page, b, {"x": 0.35, "y": 0.3, "width": 0.5, "height": 0.5})

    corner = screen(pic, box["x"] + box["width"], box["y"] + box["height"])
    drag(page, corner, (-0.2, 0.1), pic)  # bottom-right corner: resize, top-left stays
    box = assert_box(page, b, {"x": 0.35, "y": 0.3, "width": 0.3, "height": 0.6})

    # Top-left corner dragged far outside the picture (and the editor): stops at the canvas edge,
    # the bottom-right corner stays where it was.
    drag(page, screen(pic, box["x"], box["y"]), (-0.6, -0.6), pic)
    box = assert_box(page, b, {"x": 0.0, "y": 0.0, "width": 0.65, "height": 0.9})

    drag(page, screen(pic, 0.3, 0.4), (0.8, 0.8), pic)  # moved past the bottom-right: clamped
    box = assert_box(page, b, {"x": 0.35, "y": 0.1, "width": 0.65, "height": 0.9})

    right_edge = screen(pic, 1.0, 0.5)
    drag(page, right_edge, (-0.9, 0.0), pic)  # the right edge past the left one: minimum width
    box = assert_box(page, b, {"x": 0.35, "y": 0.1, "width": 0.02, "height": 0.9})
    assert box["width"] >= 0.02


def test_dragging_works_at_another_zoom(page, chain):
    """The DOM widget is CSS-scaled with the graph; pointer px must still map to the same fractions."""
    b = chain[1]
    set_box(page, b, {"x": 0.25, "y": 0.25, "width": 0.5, "height": 0.5})
    page.evaluate("() => { app.canvas.ds.scale = 1.25; app.canvas.ds.offset = [-400, -60]; app.canvas.setDirty(true, true); }")
    try:
        page.wait_for_function("(id) => __expanse.canvas(id).getBoundingClientRect().width > "
                               "1.2 * __expanse.canvas(id).clientWidth", arg=b, timeout=10_000)
        pic = picture(page, b)
        drag(page, screen(pic, 0.5, 0.5), (-0.2, 0.15), pic)
        assert_box(page, b, {"x": 0.05, "y": 0.4, "width": 0.5, "height": 0.5})
    finally:
        page.evaluate("() => { app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true); }")
    page.wait_for_function("(id) => Math.abs(__expanse.canvas(id).getBoundingClientRect().width - "
                           "__expanse.canvas(id).clientWidth) < 1", arg=b, timeout=10_000)


def test_a_drag_is_one_undo_step(page, chain):
    b = chain[1]
    set_box(page, b, {"x": 0.2, "y": 0.2, "width": 0.4, "height": 0.4})
    page.mouse.click(1000, 400)  # empty graph: ComfyUI's change tracker takes this state as current
    pic = picture(page, b)
    drag(page, screen(pic, 0.4, 0.4), (0.2, 0.3), pic)
    assert_box(page, b, {"x": 0.4, "y": 0.5, "width": 0.4, "height": 0.4})
    page.keyboard.press("Control+z")  # undo reloads the graph: a new node object, a new editor
    wait_painted(page, b, {"x": 0.2, "y": 0.2, "width": 0.4, "height": 0.4})
    assert_box(page, b, {"x": 0.2, "y": 0.2, "width": 0.4, "height": 0.4})


def test_a_value_typed_into_a_widget_redraws_the_editor(page, chain):
    b = chain[1]
    set_box(page, b, {"x": 0.3, "y": 0.2, "width": 0.4, "height": 0.5})
    before = page.evaluate("(id) => __expanse.canvas(id).toDataURL()", b)

    type_into_widget(page, b, "x", "0.1")
    assert page.evaluate("(id) => __expanse.widget(id, 'x').value", b) == pytest.approx(0.1)
    wait_painted(page, b, {"x": 0.1, "y": 0.2, "width": 0.4, "height": 0.5})
    assert page.evaluate("(id) => __expanse.canvas(id).toDataURL()", b) != before

    # canvas_width sets the picture's aspect ratio.
    type_into_widget(page, b, "canvas_width", "2048")
    page.wait_for_function("""(id) => {
        const p = JSON.parse(__expanse.canvas(id).dataset.page);
        return Math.abs(p.width / p.height - 2) < 0.02;
    }""", arg=b, timeout=10_000)


def type_into_widget(page, node_id, name, text):
    """Edits a number widget the way a user does: double-click it on the graph canvas, type into the
    frontend's value prompt, Enter."""
    x, y = page.evaluate("""([id, name]) => {
        const node = __expanse.node(id);
        const w = __expanse.widget(id, name);
        const [cx, cy] = app.canvas.ds.convertOffsetToCanvas(
            [node.pos[0] + node.size[0] / 2, node.pos[1] + w.y + LiteGraph.NODE_WIDGET_HEIGHT / 2]);
        const r = app.canvas.canvas.getBoundingClientRect();
        return [r.left + cx, r.top + cy];
    }""", [node_id, name])
    page.mouse.dblclick(x, y)
    field = page.locator(".graphdialog input.value")
    field.wait_for(state="visible", timeout=5_000)
    field.fill(text)
    field.press("Enter")
    field.wait_for(state="hidden", timeout=5_000)


def test_the_workflow_keeps_the_box_through_save_queue_and_load(page, chain, tmp_path):
    a, b = chain
    set_box(page, b, {"x": 0.12, "y": 0.34, "width": 0.56, "height": 0.6})
    wanted = page.evaluate("(id) => __expanse.node(id).widgets.filter((w) => w.serialize !== false)"
                           ".map((w) => w.value)", b)
    assert wanted[:4] == [0.12, 0.34, 0.56, 0.6] and len(wanted) == 9

    # As JSON text made in the page, as a saved file is (through Python, undefined would become null).
    text = page.evaluate("() => JSON.stringify(app.graph.serialize())")
    saved = {n["id"]: n for n in json.loads(text)["nodes"]}
    # widgets_values in the node's input order, the editor not among them.
    assert saved[b]["widgets_values"] == wanted

    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    inputs = prompt[str(b)]["inputs"]
    assert {k: inputs[k] for k in BOX} == {"x": 0.12, "y": 0.34, "width": 0.56, "height": 0.6}
    assert "region_editor" not in inputs
    assert inputs["conditioning"] == [str(a), 0]

    # Reload from the JSON text (as a saved file would be), into a changed graph.
    page.evaluate("() => app.graph.clear()")
    page.evaluate("async (text) => { await app.loadGraphData(JSON.parse(text)); }", text)
    wait_painted(page, b, {"x": 0.12, "y": 0.34, "width": 0.56, "height": 0.6})
    loaded = page.evaluate("""(id) => ({
        values: __expanse.node(id).widgets.filter((w) => w.serialize !== false).map((w) => w.value),
        editors: __expanse.node(id).widgets.filter((w) => w.name === "region_editor").length,
        others: __expanse.canvas(id).dataset.others,
    })""", b)
    assert loaded == {"values": wanted, "editors": 1, "others": "1"}

    # The reloaded editor is live.
    pic = picture(page, b)
    drag(page, screen(pic, 0.4, 0.6), (0.1, -0.1), pic)
    assert_box(page, b, {"x": 0.22, "y": 0.24, "width": 0.56, "height": 0.6})

    shot = tmp_path / "region_editor.png"
    page.screenshot(path=str(shot))
    os.makedirs(ARTIFACTS, exist_ok=True)
    shutil.copy(shot, os.path.join(ARTIFACTS, "region_editor.png"))


def test_the_extension_raised_no_errors(page, chain):
    ours = [p for p in page.problems if "expanse" in p.lower() or "region_editor" in p]
    assert not ours, "\n".join(ours)
