"""The real ComfyUI frontend in headless Chromium, for the browser tests."""
import contextlib
import os

import pytest

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # no Playwright: the browser tests are skipped (EXPANSE_SKIP_BROWSER=1) or fail at their start
    PlaywrightTimeout = TimeoutError

# The browser tests drive Debian's Chromium through Playwright (both installed by scripts/setup.sh);
# EXPANSE_SKIP_BROWSER=1 skips them on a machine without them.
CHROMIUM = "/usr/bin/chromium"
skip_browser = pytest.mark.skipif(os.environ.get("EXPANSE_SKIP_BROWSER") == "1",
                                  reason="EXPANSE_SKIP_BROWSER=1: browser tests skipped on request")


# Nodes 2.0: the frontend draws nodes as Vue components in the DOM instead of on the LiteGraph
# canvas (a setting, experimental since frontend 1.27, promoted in later ones).
VUE_NODES = "Comfy.VueNodes.Enabled"

# Whether this frontend defines the setting (its definitions, not a stored value: frontend_page
# stores it on every server, whichever frontend that server has).
JS_HAS_SETTING = """(id) => {
  const defs = app.extensionManager?.setting?.settings ?? app.ui?.settings?.settingsLookup ?? {};
  return !!defs[id];
}"""


_driver = {"playwright": None, "pages": 0}  # one Playwright driver for the pages open at a time


@contextlib.contextmanager
def _playwright():
    """Playwright's sync driver, shared by nested pages (its sync API refuses to start a second one
    inside the first), stopped when the last page closes."""
    from playwright.sync_api import sync_playwright

    if _driver["playwright"] is None:
        _driver["playwright"] = sync_playwright().start()
    _driver["pages"] += 1
    try:
        yield _driver["playwright"]
    finally:
        _driver["pages"] -= 1
        if _driver["pages"] == 0:
            _driver["playwright"].stop()
            _driver["playwright"] = None


# The frontend is ready once it has registered the pack's nodes.
PACK_READY = "!!(window.app?.graph && window.LiteGraph?.registered_node_types?.ExpanseRegionPrompt)"


@contextlib.contextmanager
def frontend_page(server, width: int, height: int, setup_js: str, vue_nodes: bool = False):
    """The real frontend in headless Chromium, loaded with the pack's nodes, setup_js evaluated in
    it; page.problems collects console errors, page errors and failed requests. vue_nodes: with
    Nodes 2.0 on (else the classic canvas, whatever an earlier page of the session chose; the
    settings live on the server). Pages may be open side by side, each in a browser of its own."""
    # A fresh user directory would greet us with the template browser over the graph.
    # The right side panel (1.49.6) stays open across pages once a test opened it (a node's help),
    # and covers the canvas's right part: every page starts with it closed.
    status, _ = server.post_json("/settings", {"Comfy.TutorialCompleted": True, VUE_NODES: vue_nodes,
                                               "Comfy.RightSidePanel.IsOpen": False})
    assert status == 200
    problems = []
    with _playwright() as p:
        # Debian's Chromium, never `playwright install`. As root it needs --no-sandbox.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text} @ {m.location}"))
            page.on("pageerror", lambda e: problems.append(f"pageerror: {e} {e.stack or ''}"))
            page.on("response", lambda r: r.status >= 400 and problems.append(f"http {r.status}: {r.url}"))
            page.goto(server.url)
            # A machine whose cores are busy with other jobs can take a minute to start the frontend.
            page.wait_for_function(PACK_READY, timeout=120_000)
            page.evaluate(setup_js)
            page.problems = problems
            yield page
        finally:
            browser.close()

