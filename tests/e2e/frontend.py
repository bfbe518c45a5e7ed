"""The real ComfyUI frontend in headless Chromium, for the browser tests."""
import contextlib
import os

import pytest

# The browser tests drive Debian's Chromium through Playwright (both installed by scripts/setup.sh);
# EXPANSE_SKIP_BROWSER=1 skips them on a machine without them.
CHROMIUM = "/usr/bin/chromium"
skip_browser = pytest.mark.skipif(os.environ.get("EXPANSE_SKIP_BROWSER") == "1",
                                  reason="EXPANSE_SKIP_BROWSER=1: browser tests skipped on request")


@contextlib.contextmanager
def frontend_page(server, width: int, height: int, setup_js: str):
    """The real frontend in headless Chromium, loaded with the pack's nodes, setup_js evaluated in
    it; page.problems collects console errors, page errors and failed requests."""
    from playwright.sync_api import sync_playwright

    # A fresh user directory would greet us with the template browser over the graph.
    status, _ = server.post_json("/settings", {"Comfy.TutorialCompleted": True})
    assert status == 200
    problems = []
    with sync_playwright() as p:
        # Debian's Chromium, never `playwright install`. As root it needs --no-sandbox.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text} @ {m.location}"))
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e} {e.stack or ''}"))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"http {r.status}: {r.url}"))
        page.goto(server.url)
        page.wait_for_function("!!(window.app?.graph && window.LiteGraph?.registered_node_types?.RegionPrompt)",
                               timeout=60_000)
        page.evaluate(setup_js)
        page.problems = problems
        try:
            yield page
        finally:
            browser.close()
