"""Help pages, tooltips and node search, as a user meets them in the real frontend.

The frontend asks for a custom node's help at /extensions/<pack>/docs/<node id>/<locale>.md, then
at /extensions/<pack>/docs/<node id>.md (NodeHelpService in frontends 1.32.9 and 1.49.6); the pack
serves both from web/docs/. A node's help opens from the selection toolbox's info button: in the
node library's help page on 1.32.9, in the right side panel's Info tab on 1.49.6.

Node search (double-click on the canvas) looks at names, display names and, on frontend 1.49.6
with ComfyUI 0.33.0 (whose node schema carries it), the search aliases; 1.32.9 searches names and
display names only. Screenshots for the README come from the newest frontend: docs/screenshots/
node_help.png and node_search.png."""
import os
import re

import pytest

from frontend import PlaywrightTimeout, frontend_page, skip_browser

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCS = os.path.join(ROOT, "web", "docs")
SCREENSHOTS = os.path.join(ROOT, "docs", "screenshots")
WAIT_MS = 30_000  # generous: the machine's cores may be busy; every wait ends once its state is there

NODES = ["ExpanseTiledVAEDecode", "ExpanseTiledVAEEncode", "ExpanseTiledDiffusion", "ExpanseLatentUpscaleAdvanced",
         "ExpanseProgressiveGrowSampler", "ExpanseChessTileRedraw", "ExpanseRegionPrompt", "ExpanseDemoModelLoader",
         "ExpanseSaveLargeImage", "ExpanseNoiseInversion"]
# What users type for the technique (the peers' names), and the node it must find.
ALIASES = {"ultimate sd upscale": "ExpanseChessTileRedraw", "tile upscale": "ExpanseChessTileRedraw",
           "multidiffusion": "ExpanseTiledDiffusion", "mixture of diffusers": "ExpanseTiledDiffusion",
           "hires fix": "ExpanseProgressiveGrowSampler", "regional prompt": "ExpanseRegionPrompt",
           "tiled vae": "ExpanseTiledVAEDecode", "unsampler": "ExpanseNoiseInversion"}
NAMES = {"Chess Tile Redraw": "ExpanseChessTileRedraw", "Tiled Diffusion": "ExpanseTiledDiffusion"}
MARKUP = ("`", "**", "](")  # what the frontend would show literally in a tooltip or description
OUR_DOCS = "/docs/Expanse"  # in every URL the frontend asks for one of our pages (the ids' prefix)


def page_text(node_id: str) -> str:
    with open(os.path.join(DOCS, f"{node_id}.md"), encoding="utf-8") as f:
        return f.read()


def first_heading(node_id: str) -> str:
    return next(line[2:].strip() for line in page_text(node_id).splitlines() if line.startswith("# "))


def inputs_of(info: dict) -> dict:
    """Input name -> options dict of a node's /object_info entry (required and optional)."""
    found = {}
    for group in ("required", "optional"):
        for name, spec in (info["input"].get(group) or {}).items():
            found[name] = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return found


# --- tooltips, descriptions and the pages' content (from the real /object_info, no browser) -------

def test_every_expanse_node_is_covered(object_info):
    assert sorted(k for k in object_info if k.startswith("Expanse")) == sorted(NODES)


@pytest.mark.parametrize("node_id", NODES)
def test_description_and_tooltips_are_plain_words(object_info, node_id):
    """The frontend shows descriptions and tooltips as they are: no backticks, no markdown."""
    info = object_info[node_id]
    texts = {"description": info["description"]}
    texts |= {f"input {name}": opts.get("tooltip", "") for name, opts in inputs_of(info).items()}
    texts |= {f"output {name}": tip for name, tip in zip(info["output_name"], info.get("output_tooltips") or [])}
    assert texts["description"] and all(texts[f"input {name}"] for name in inputs_of(info)), \
        "every input has a tooltip"
    marked = {where: text for where, text in texts.items() if any(m in (text or "") for m in MARKUP)}
    assert not marked, f"{node_id}: markup the frontend shows literally: {marked}"


def default_forms(value) -> set[str]:
    """How a default is written in a help page."""
    if isinstance(value, bool):
        return {"on" if value else "off"}
    if isinstance(value, float):
        return {repr(value), f"{value:g}"}
    return {str(value)}


@pytest.mark.parametrize("node_id", NODES)
def test_help_page_documents_every_input_with_its_default_and_every_output(object_info, node_id):
    text = page_text(node_id)
    info = object_info[node_id]
    for name, opts in inputs_of(info).items():
        bullets = [b for b in re.split(r"\n(?=- )", text) if f"**{name}**" in b.split(" — ")[0]]
        assert bullets, f"{node_id}: input {name} is not documented as a '- **{name}** — ...' item"
        if "default" in opts:
            forms = default_forms(opts["default"])
            assert any(re.search(rf"\bdefault\b.*?(?<!\w)(?<!\d\.){re.escape(f)}(?!\w|\.\d)", bullets[0], re.S)
                       for f in forms), \
                f"{node_id}: {name}'s item does not give its default {opts['default']!r}: {bullets[0]!r}"
    for name in info["output_name"]:
        assert f"**{name}**" in text, f"{node_id}: output {name} is not documented"


# --- the frontend ---------------------------------------------------------------------------------

# Empties the graph node by node: app.graph.clear() would restart the node ids, and frontend 1.49.6
# hands a new node the widget values it remembers for a removed node of the same id.
JS_QUIET = """() => {
    window.__expanseEmpty = () => {
        for (const node of [...(app.graph.nodes ?? app.graph._nodes)]) app.graph.remove(node);
    };
}"""


@pytest.fixture(scope="module")
def page(server):
    """The real frontend (classic canvas, English); page.docs records every response to a request for
    one of our help pages (url, status), page.problems the console errors and failed requests."""
    status, _ = server.post_json("/settings", {"Comfy.Locale": "en"})
    assert status == 200
    with frontend_page(server, 1400, 1000, JS_QUIET) as pg:
        pg.docs = []
        pg.on("response", lambda r: OUR_DOCS in r.url and pg.docs.append((r.url, r.status)))
        yield pg


def frontend_version(page) -> tuple[int, ...]:
    return tuple(int(v) for v in page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? '0.0.0'").split("."))


def newest_frontend(page) -> bool:
    """Whether screenshots for the README come from this frontend (1.49 and newer)."""
    return frontend_version(page) >= (1, 49)


def save_screenshot(page, name: str, clip=None) -> None:
    """docs/screenshots/<name>, as a palette PNG to keep the repository small."""
    from PIL import Image

    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, name)
    page.screenshot(path=path, clip=clip)
    Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


# An empty graph at zoom 1 with the one node at (x, y); its title bar's centre in page pixels.
JS_PLACE_NODE = """([type, x, y]) => {
    __expanseEmpty();
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    const node = LiteGraph.createNode(type);
    node.pos = [x, y];
    app.graph.add(node);
    app.canvas.deselectAll?.();
    app.canvas.setDirty(true, true);
    const r = app.canvas.canvas.getBoundingClientRect();
    return [r.left + x + Math.min(node.size[0] / 2, 120), r.top + y - LiteGraph.NODE_TITLE_HEIGHT / 2];
}"""

JS_HELP_HEADING = """(heading) => [...document.querySelectorAll(".node-help-content h1")]
    .some((h) => h.textContent.trim() === heading && h.offsetParent !== null)"""


def select_with_the_mouse(page, point) -> None:
    """Clicks the node's title until the canvas has it selected (a page's first click on the canvas
    can go to focusing it). On a loaded machine a frontend can drop every click for a while (seen in
    CI on 1.49.6, never here): after three tries the node is selected through the canvas's own API,
    which fires the same selection events the toolbox listens to, and the test goes on to what it
    is about, the help panel."""
    selected = "() => Object.keys(app.canvas.selected_nodes ?? {}).length === 1"
    for attempt in range(3):
        if attempt:
            page.wait_for_timeout(500)
        page.mouse.move(point[0] - 5, point[1])
        page.mouse.click(*point)
        try:
            page.wait_for_function(selected, timeout=3000)
            return
        except Exception:
            continue
    under = page.evaluate("""([x, y]) => { const e = document.elementFromPoint(x, y);
        return e ? `${e.tagName}.${e.className}` : null; }""", point)
    print(f"clicks at {point} did not select the node (the element there: {under}); selecting it through the canvas")
    page.evaluate("() => app.canvas.selectNode((app.graph.nodes ?? app.graph._nodes)[0])")
    page.wait_for_function(selected, timeout=WAIT_MS)


@skip_browser
@pytest.mark.parametrize("node_id", NODES)
def test_help_panel_shows_the_nodes_page_without_a_404(page, node_id):
    """Select the node with the mouse, press the selection toolbox's info button: the help panel
    shows the page's first heading, fetched with no failed request."""
    heading = first_heading(node_id)
    seen = len(page.docs)
    select_with_the_mouse(page, page.evaluate(JS_PLACE_NODE, [node_id, 420, 320]))
    info = page.locator('[data-testid="info-button"]')
    info.wait_for(state="visible", timeout=WAIT_MS)
    info.click()
    try:
        page.wait_for_function(JS_HELP_HEADING, arg=heading, timeout=WAIT_MS)
    except Exception:
        shown = page.evaluate("() => [...document.querySelectorAll('.node-help-content')].map((e) => e.innerText)")
        pytest.fail(f"{node_id}: the help panel did not show '# {heading}'; it showed {shown!r}; "
                    f"docs requests {page.docs[seen:]}")
    fetched = page.docs[seen:]
    assert fetched and all(status == 200 for _, status in fetched), f"{node_id}: {fetched}"
    assert any(url.endswith(f"/docs/{node_id}/en.md") for url, _ in fetched), fetched
    if node_id == "ExpanseChessTileRedraw" and newest_frontend(page):
        save_screenshot(page, "node_help.png")


# The display names the search box lists: 1.49.6 puts each in its result's first span.truncate,
# 1.32.9 in the option's aria-label.
JS_RESULT_NAMES = """() => [...document.querySelectorAll(
    "#results-list [role=option], .p-autocomplete-list [role=option]")]
    .map((o) => o.getAttribute("aria-label") || o.querySelector("span.truncate")?.innerText || o.innerText)"""


def search(page, text: str, wanted: str) -> list[str]:
    """_search_once, tried again when the list comes back without `wanted` (on a busy machine the
    box can lose the typing, and the list stays empty)."""
    results = _search_once(page, text, wanted)
    if wanted not in results:
        results = _search_once(page, text, wanted)
    return results


def _search_once(page, text: str, wanted: str) -> list[str]:
    """Double-click the empty canvas, type text into the node search box; the results' texts once
    they list `wanted` or have settled (the box debounces typing; for some words 1.49.6 keeps
    re-rendering its list, which never settles)."""
    page.keyboard.press("Escape")
    # A help test leaves 1.49.6's right side panel open, and its own search field could take the
    # focus and the typing: close it first (1.32.9 has no such panel).
    page.evaluate("async () => { try { await app.extensionManager?.setting?.set?.("
                  "'Comfy.RightSidePanel.IsOpen', false); } catch (e) {} }")
    page.evaluate("() => __expanseEmpty()")
    box = page.evaluate("() => { const r = app.canvas.canvas.getBoundingClientRect(); "
                        "return [r.left + r.width * 0.45, r.top + r.height * 0.5]; }")
    field = page.locator("input[role=combobox]:focus")
    for _ in range(3):  # as for a click, the canvas's first double-click can go to focusing it
        page.mouse.move(box[0] - 5, box[1])
        page.mouse.dblclick(*box)
        try:
            field.wait_for(timeout=5000)
            break
        except Exception:
            continue
    else:
        pytest.fail("double-clicking the empty canvas opened no node search box")
    page.evaluate("() => { window.__expanseResults = {list: null, same: 0}; }")
    page.keyboard.type(text)
    try:
        page.wait_for_function("""([text, wanted]) => {
            const input = document.activeElement;
            if (!input || input.value !== text) return false;
            const names = (""" + JS_RESULT_NAMES + """)();
            if (names.includes(wanted)) return true;
            const now = JSON.stringify(names);
            const seen = window.__expanseResults;
            seen.same = seen.list === now ? seen.same + 1 : 0;
            seen.list = now;
            return seen.same >= 2;  // unchanged for a second
        }""", arg=[text, wanted], timeout=WAIT_MS, polling=500)
    except PlaywrightTimeout:
        pass  # what is listed now goes to the caller's assertion, which names it
    return page.evaluate(JS_RESULT_NAMES)


def display_name(object_info, node_id) -> str:
    return object_info[node_id]["display_name"]


@skip_browser
@pytest.mark.parametrize("text", NAMES)
def test_node_search_finds_the_node_by_its_name(page, object_info, text):
    wanted = display_name(object_info, NAMES[text])
    results = search(page, text, wanted)
    assert wanted in results, f"searching {text!r} lists {results}, not {wanted}"


@skip_browser
@pytest.mark.parametrize("text", ALIASES)
def test_node_search_finds_the_node_by_what_users_call_it(page, object_info, text):
    node_id = ALIASES[text]
    if "search_aliases" not in object_info[node_id]:
        pytest.skip("this host's node schema has no search_aliases (ComfyUI 0.3.75), and its frontend "
                    "(1.32.9) searches only names and display names")
    assert text in object_info[node_id]["search_aliases"]
    wanted = display_name(object_info, node_id)
    results = search(page, text, wanted)
    assert wanted in results, f"searching {text!r} lists {results}, not {wanted}"
    if text == "ultimate sd upscale" and newest_frontend(page):
        save_screenshot(page, "node_search.png")
    page.keyboard.press("Escape")


@skip_browser
def test_no_help_page_request_failed(page):
    """Over the whole session: no docs request answered with an error, none logged in the console."""
    failed = [(url, status) for url, status in page.docs if status >= 400]
    logged = [p for p in page.problems if OUR_DOCS in p]
    assert not failed and not logged, (failed, logged)
