"""The pack's templates as a user meets them: ComfyUI's template browser in the real frontend
(headless Chromium), on a server of this module's own whose models folder holds no checkpoint.

- The browser lists every template under the category "Expanse" (the pack's folder name,
  translated by locales/en/main.json), each card titled with the template's title (its file name),
  its description (frontend 1.32.9 shows one: the name with - and _ as spaces; 1.49.6 shows none)
  and its thumbnail, which the frontend fetched (HTTP 200, a JPEG) and drew.
- Each demo template, opened by clicking its card and queued with the Run button, runs to a saved
  picture (/history) on the demo model, with nothing flagged missing.
- Each checkpoint template, opened the same way, makes the frontend offer the checkpoint's
  download: 1.32.9 shows its missing-models dialog with an enabled Download button for the file's
  URL; 1.49.6 flags the loader's model as missing with the URL and folder from the node's
  properties.models (what its missing-models panel downloads from).
- The poster decodes once: Chess Tile Redraw's latent goes to Tiled VAE Decode, its image nowhere.

On 1.49.6 it saves a screenshot of the browser showing the templates to
docs/screenshots/template_browser.png. EXPANSE_SKIP_BROWSER=1 skips it on a machine without a browser.
"""
from __future__ import annotations

import importlib.metadata
import io
import json
import re
import time
import urllib.parse

import pytest
from PIL import Image

from expanse_harness import workflows as wf
from expanse_harness.host import ROOT
from frontend import frontend_page, skip_browser
from test_workflows import pack_folder

pytestmark = skip_browser

CATEGORY = "Expanse"
FRONTEND = importlib.metadata.version("comfyui-frontend-package")
NEW_FRONTEND = tuple(int(p) for p in FRONTEND.split(".")[:2]) >= (1, 49)  # what the screenshot is taken on
SCREENSHOT = ROOT / "docs" / "screenshots" / "template_browser.png"
TEMPLATES = list(wf.TEMPLATES.values())
DEMOS = [t for t in TEMPLATES if t.demo]
CHECKPOINTED = [t for t in TEMPLATES if not t.demo]
DIALOG = '[aria-labelledby="global-workflow-template-selector"]'
CARD = '[data-testid^="template-workflow-"]'

# The frontend's own rule for a download it offers (MissingModelsWarning in 1.32.9,
# isModelDownloadable in 1.49.6): a URL from these sites, a file name with one of these endings.
DOWNLOAD_SITES = ("https://civitai.com/", "https://huggingface.co/")
DOWNLOAD_SUFFIXES = (".safetensors", ".sft")

# What the frontend flagged as missing after loading a workflow: 1.49.6 keeps model candidates in a
# Pinia store (with the url and directory it read from the node's properties.models); 1.32.9 shows
# the missing-models dialog, whose rows are "directory / name" with a Download button titled with
# the URL (disabled when the frontend refuses the download).
JS_MISSING = """() => {
  const pinia = document.querySelector("[data-v-app]")?.__vue_app__?.config.globalProperties.$pinia;
  const store = pinia?._s.get("missingModel");
  const visible = (el) => !!el && el.getClientRects().length > 0;
  const dialog = [...document.querySelectorAll('[aria-labelledby="global-missing-models-warning"]')].find(visible);
  return {
    tracked: !!store,
    candidates: (store?.missingModelCandidates ?? []).map((c) => ({node: String(c.nodeId), widget: c.widgetName,
      name: c.name, url: c.url ?? null, directory: c.directory ?? null, missing: c.isMissing})),
    dialog: dialog ? [...dialog.querySelectorAll(".comfy-missing-models li, .comfy-missing-models [role=option]")]
      .map((row) => ({text: row.innerText, buttons: [...row.querySelectorAll("button")]
        .map((b) => ({label: b.innerText.trim(), title: b.getAttribute("title"), disabled: b.disabled}))})) : null,
    missingNodes: visible(document.querySelector('[aria-labelledby="global-missing-nodes"]')),
  };
}"""


@pytest.fixture(scope="module")
def server(one_thread_server):
    """A server of this module's own (conftest.one_thread_server: fresh folders, one CPU thread)."""
    return one_thread_server


@pytest.fixture(scope="module")
def folder() -> str:
    return pack_folder()


@pytest.fixture(scope="module")
def no_checkpoints(object_info) -> None:
    """The server has none of the checkpoints the templates name: what a new user has."""
    offered = object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    options = offered[0] if isinstance(offered[0], list) else offered[1].get("options", [])
    present = sorted({wf.SD15, wf.SDXL} & set(options))
    assert not present, f"this test needs a host without {present} in its models/checkpoints"


@pytest.fixture(scope="module")
def page(server, no_checkpoints):
    with frontend_page(server, 1600, 1000, "0") as pg:
        pg.template_responses = []  # the frontend's requests for templates and their thumbnails
        pg.on("response", lambda r: "/workflow_templates/" in r.url and pg.template_responses.append(
            (urllib.parse.unquote(r.url), r.status, r.headers.get("content-type", ""))))
        yield pg


def close_dialogs(page) -> None:
    for _ in range(3):
        if not page.locator(".p-dialog-mask, [role=dialog]").count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def open_category(page) -> None:
    """Workflow > Browse Templates, then the "Expanse" entry of its list of categories."""
    close_dialogs(page)
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator(DIALOG)
    dialog.wait_for(state="visible", timeout=30_000)
    entry = dialog.locator("nav [role=button]", has=page.get_by_text(CATEGORY, exact=True)).first
    entry.wait_for(state="visible", timeout=30_000)
    entry.click()
    page.wait_for_function("([d, c, n]) => document.querySelector(d)?.querySelectorAll(c).length === n",
                           arg=[DIALOG, CARD, len(TEMPLATES)], timeout=30_000)


def nav_labels(page) -> list[str]:
    """The text of every entry in the browser's list of categories (its left panel: a nav of
    role=button entries in both frontends)."""
    return page.evaluate("""(d) => [...document.querySelectorAll(d + " nav [role=button]")]
      .map((e) => e.innerText.trim())""", DIALOG)


def cards(page) -> list[dict]:
    return page.evaluate("""(c) => [...document.querySelectorAll(c)].map((card) => ({
      name: card.dataset.testid.replace("template-workflow-", ""),
      title: card.querySelector("h3")?.innerText.trim() ?? null,
      tooltip: card.querySelector("h3")?.getAttribute("title") ?? null,
      description: card.querySelector("p")?.innerText.trim() ?? null,
    }))""", CARD)


def open_template(page, title: str) -> None:
    """Clicks the template's card in the browser and waits for the workflow in the graph."""
    open_category(page)
    nodes = len(json.loads(wf.template_for(title).path.read_text())["nodes"])
    card = page.locator(f'{DIALOG} [data-testid="template-workflow-{title}"]')
    card.scroll_into_view_if_needed()
    card.click()
    page.locator(DIALOG).wait_for(state="hidden", timeout=30_000)
    page.wait_for_function("(n) => app.graph?.nodes?.length === n", arg=nodes, timeout=30_000)


def history_ids(server) -> set[str]:
    return set(server.get("/history"))


def test_the_template_files_are_every_template_with_a_thumbnail():
    found = {p.stem for p in wf.EXAMPLE_DIR.glob("*.json")}
    assert found == {t.title for t in TEMPLATES}, "run scripts/workflows.py on .venv-latest"
    for template in TEMPLATES:
        assert re.fullmatch(r"[A-Za-z0-9 ()+,.x-]+", template.title), f"{template.title!r}: a character some " \
                                                                       "file system or URL path changes"
        with Image.open(template.thumbnail_path) as im:
            assert im.format == "JPEG" and im.size == (512, 512), (template.title, im.format, im.size)


def test_the_browser_lists_every_template_under_expanse(page, server, folder):
    assert sorted(server.get("/workflow_templates").get(folder, [])) == sorted(t.title for t in TEMPLATES)
    i18n = server.get("/i18n")
    assert i18n.get("en", {}).get("templateWorkflows", {}).get("category", {}).get(folder) == CATEGORY, \
        f"locales/en/main.json does not name the folder {folder!r}"

    open_category(page)
    labels = nav_labels(page)
    assert CATEGORY in labels, labels
    if folder != CATEGORY:
        assert folder not in labels, f"the raw folder name {folder!r} is listed too: {labels}"
    headings = page.evaluate("""([d, c]) => [...document.querySelectorAll(d + " *")]
      .filter((e) => !e.closest("nav") && e.children.length === 0 && e.textContent.trim() === c)
      .map((e) => e.tagName)""", [DIALOG, CATEGORY])
    assert headings, "the browser's heading over the cards does not name the category"

    shown = cards(page)
    assert sorted(c["name"] for c in shown) == sorted(t.title for t in TEMPLATES)
    for card in shown:
        assert card["title"] == card["name"], card
        assert card["tooltip"] == card["name"], card
        if card["description"] is not None:  # 1.32.9: the name with - and _ as spaces
            assert " ".join(card["description"].split()) == " ".join(re.sub(r"[-_]", " ", card["name"]).split())
        elif not NEW_FRONTEND:
            pytest.fail(f"frontend {FRONTEND} shows no description under {card['name']!r}")

    # Every thumbnail drawn (each card scrolled into view: the frontend loads them lazily), fetched by
    # the frontend from the pack's folder with HTTP 200 as a JPEG.
    for template in TEMPLATES:
        card = page.locator(f'{DIALOG} [data-testid="template-workflow-{template.title}"]')
        card.scroll_into_view_if_needed()
        card.locator("img").first.wait_for(state="attached", timeout=30_000)
        page.wait_for_function("(el) => el.complete && el.naturalWidth > 0",
                               arg=card.locator("img").first.element_handle(), timeout=30_000)
    for template in TEMPLATES:
        path = f"/api/workflow_templates/{folder}/{template.title}.jpg"
        answers = [(status, kind) for url, status, kind in page.template_responses if url.endswith(path)]
        assert answers and all(status == 200 and kind.startswith("image/jpeg") for status, kind in answers), \
            (template.title, answers)
        status, body = server.request("GET", urllib.parse.quote(path))
        assert status == 200 and body[:3] == b"\xff\xd8\xff"
        assert Image.open(io.BytesIO(body)).size == (512, 512)

    if NEW_FRONTEND:
        page.locator(f'{DIALOG} [data-testid="template-workflow-{TEMPLATES[0].title}"]').scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
    close_dialogs(page)


@pytest.mark.parametrize("template", DEMOS, ids=lambda t: t.id)
def test_demo_template_runs_from_the_browser(template, page, server):
    open_template(page, template.title)
    missing = page.evaluate(JS_MISSING)
    assert not missing["missingNodes"] and missing["dialog"] is None and not missing["candidates"], missing
    types = {n.type for n in template.build(wf.Definitions(server.get("/object_info"))).nodes}
    assert "ExpanseDemoModelLoader" in types and "CheckpointLoaderSimple" not in types

    before = history_ids(server)
    log_start = len(server.log_text())
    started = time.monotonic()
    run = page.locator('[data-testid="queue-button"]').first  # the Run button (1.32.9: a split button)
    if run.evaluate("(el) => el.tagName") != "BUTTON":
        run = run.locator("button").first
    run.click()
    deadline = started + 300
    entry = None
    while time.monotonic() < deadline:
        new = [entry for key, entry in server.get("/history").items() if key not in before]
        if new and new[0].get("status", {}).get("completed") is not None:
            entry = new[0]
            break
        time.sleep(0.5)
    assert entry is not None, f"{template.title}: no run finished within 300 s of pressing Run"
    took = time.monotonic() - started
    print(f"{template.title}: ran in {took:.0f} s")
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    queued = {n["class_type"] for n in entry["prompt"][2].values()}
    assert "ExpanseDemoModelLoader" in queued and "CheckpointLoaderSimple" not in queued, queued
    # Pictures saved to the output folder; Save Large Image saves a TIFF there and shows its overview
    # as a preview (a temp image).
    prompt = entry["prompt"][2]
    saved = [image for node, output in entry["outputs"].items() for image in output.get("images", [])
             if image.get("type") == "output" or prompt[node]["class_type"] == "ExpanseSaveLargeImage"]
    assert saved, f"{template.title}: the run saved no picture: {entry['outputs']}"
    query = urllib.parse.urlencode({k: saved[0][k] for k in ("filename", "subfolder", "type")})
    picture = Image.open(io.BytesIO(server.get(f"/view?{query}")))
    assert min(picture.size) >= 64
    if "ExpanseChessTileRedraw" in queued and "ExpanseProgressiveGrowSampler" in queued:  # the poster
        decodes = [line for line in server.log_text()[log_start:].splitlines() if ": decoding " in line]
        assert len(decodes) == 1 and "TiledVAEDecode" in decodes[0], decodes  # the redraw skipped its own


@pytest.mark.parametrize("template", CHECKPOINTED, ids=lambda t: t.id)
def test_checkpoint_template_offers_its_model_download(template, page, server):
    ui = json.loads(template.path.read_text())
    loaders = [n for n in ui["nodes"] if n["type"] == "CheckpointLoaderSimple"]
    assert loaders, f"{template.title} loads no checkpoint"
    for node in loaders:
        name = node["widgets_values"][0]
        assert node["properties"].get("models") == [{"name": name, "url": wf.MODEL_URLS[name],
                                                     "directory": "checkpoints"}], node["properties"]
        url = node["properties"]["models"][0]["url"]
        assert url.startswith(DOWNLOAD_SITES) and name.endswith(DOWNLOAD_SUFFIXES), (name, url)

    open_template(page, template.title)
    expected = {(str(n["id"]), n["widgets_values"][0], wf.MODEL_URLS[n["widgets_values"][0]]) for n in loaders}
    page.wait_for_function("() => { const s = (" + JS_MISSING + ")(); return s.dialog !== null || "
                           "s.candidates.length > 0; }", timeout=30_000)
    state = page.evaluate(JS_MISSING)
    assert not state["missingNodes"], state
    if state["tracked"]:  # 1.49.6: the loader's model flagged missing, with the download it offers
        flagged = {(c["node"], c["name"], c["url"]) for c in state["candidates"]
                   if c["widget"] == "ckpt_name" and c["directory"] == "checkpoints" and c["missing"] is not False}
        assert expected <= flagged, state["candidates"]
    else:  # 1.32.9: the missing-models dialog, a Download button per checkpoint
        assert state["dialog"] is not None, "no missing-models dialog"
        rows = {row["text"].split("\n")[0].strip(): row for row in state["dialog"]}
        for _, name, url in expected:
            row = rows.get(f"checkpoints / {name}")
            assert row is not None, (name, list(rows))
            download = [b for b in row["buttons"] if b["title"] == url]
            assert download and not download[0]["disabled"], row
    close_dialogs(page)


def test_the_poster_decodes_once():
    """Chess Tile Redraw's latent goes to Tiled VAE Decode and its image output is unconnected, so
    the redraw skips its own decode (it decodes only when its image is read)."""
    for template in (wf.TEMPLATES["poster_progressive_chess_redraw"], wf.TEMPLATES["poster_demo"]):
        ui = json.loads(template.path.read_text())
        nodes = {n["id"]: n for n in ui["nodes"]}
        redraw = next(n for n in ui["nodes"] if n["type"] == "ExpanseChessTileRedraw")
        image, latent = redraw["outputs"]
        assert image["type"] == "IMAGE" and not image.get("links"), template.title
        targets = [nodes[link[3]]["type"] for link in ui["links"] if link[0] in (latent.get("links") or [])]
        assert targets == ["ExpanseTiledVAEDecode"], (template.title, targets)
        decodes = [n for n in ui["nodes"] if n["type"] in ("VAEDecode", "VAEDecodeTiled", "ExpanseTiledVAEDecode")]
        assert len(decodes) == 1, (template.title, [n["type"] for n in decodes])
