"""The app in headless Chromium on the shipped models: the README's screenshot, and a soak.

- The README's screenshot (`docs/images/app.png`) is taken here, after drawing a 4, so that it
  always shows the app as it is.
- Soak: one browser session makes 300 predictions, one per stroke (ten strokes a drawing, then
  Clear); the server's resident memory (VmRSS of the `streamlit run` process) may grow by at
  most 50 MB from its level after a warm-up. The figure is printed under "measured in the
  browser".

Drawing and seeing the prediction use the instruments of `benchmarks/browser_latency.py`.
"""

import contextlib
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS_DIR = ROOT / "models"
SCREENSHOT = ROOT / "docs" / "images" / "app.png"
SCREENSHOT_VIEWPORT = {"width": 1280, "height": 860}
SOAK_PREDICTIONS = 300
SOAK_WARM_UP = 10
STROKES_PER_DRAWING = 10  # then Clear: each stroke is one prediction of the drawing so far
MAX_GROWTH_MB = 50
SCRIPT_DONE = "[data-testid=stApp][data-test-script-state=notRunning]"
FOUR = [[(150, 40), (70, 170), (210, 170)], [(165, 95), (165, 250)]]  # two strokes


def load_benchmark():
    """benchmarks/browser_latency.py as a module (benchmarks/ is a folder of scripts)."""
    path = ROOT / "benchmarks" / "browser_latency.py"
    if str(path.parent) not in sys.path:  # its sibling modules, as when it runs as a script
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("browser_latency", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_benchmark()


def rss_mb(pid: int) -> float:
    """A process's resident memory (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@pytest.fixture(scope="module")
def server():
    """`streamlit run app.py` on the shipped models: (url, the server's pid); always stopped."""
    if not Path(bench.CHROMIUM).exists():
        pytest.skip(f"{bench.CHROMIUM} not found: apt-get install -y chromium")
    if not (SHIPPED_MODELS_DIR / "manifest.json").exists():
        pytest.skip(f"{SHIPPED_MODELS_DIR}/manifest.json is not shipped yet")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        port = bench.free_port(8600)
        log = Path(tmp) / "streamlit.log"
        process = bench.serve(ROOT, port, log)  # serves ROOT/models, whatever the environment
        try:
            bench.wait_for_port(port, process, log)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            bench.stop(process)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=bench.CHROMIUM, args=bench.CHROMIUM_ARGS
        )
        yield browser
        with contextlib.suppress(Exception):
            browser.close()


NEW_SURFACE = ("iframe[title*=stroke_canvas]", "#surface")  # components/stroke_canvas
OLD_SURFACE = (None, "canvas.upper-canvas")  # streamlit-drawable-canvas, until it is replaced


def open_app(browser, url: str, viewport: dict):
    """A new session on the app, its canvas ready and its prediction watched."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(bench.TIMEOUT_MS)
    page.goto(url)
    either = f"{NEW_SURFACE[0]}, {OLD_SURFACE[1]}"
    page.locator(either).first.wait_for()
    if page.locator(NEW_SURFACE[0]).count():
        app = bench.App("app", *NEW_SURFACE, bench.clear_new)
    else:
        app = bench.App("app", *OLD_SURFACE, bench.clear_old)
    app.page = page
    app.scope().locator(app.surface).wait_for()
    page.evaluate(bench.WATCH_PREDICTION, bench.PREDICTION)
    bench.wait_idle(page)
    return app


def predict(app, strokes: list[list[tuple[int, int]]]) -> None:
    """Clear, draw `strokes`, and wait for the prediction to be painted."""
    page = app.page
    app.clear(page, app)
    page.evaluate(bench.ARM)
    for stroke in strokes:
        bench.draw(page, app, stroke)
    page.wait_for_function("() => window.__bench.painted !== null", timeout=bench.TIMEOUT_MS)


def test_the_readme_screenshot(browser, server) -> None:
    url, _ = server
    app = open_app(browser, url, SCREENSHOT_VIEWPORT)
    try:
        predict(app, FOUR)
        app.page.locator(SCRIPT_DONE).wait_for(state="attached")
        app.page.get_by_test_id("stMetricValue").filter(has_text="4").first.wait_for()
        app.page.wait_for_timeout(500)  # the images' and chart's last paint
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        app.page.screenshot(path=str(SCREENSHOT))
        print(f"screenshot: {SCREENSHOT}")
    finally:
        app.page.context.close()


class Soak:
    """One session drawing stroke after stroke; each stroke is a rerun with a prediction."""

    def __init__(self, app) -> None:
        self.app, self.strokes, self.drawn = app, list(bench.DIGITS.values()), 0

    def predictions(self, n: int) -> None:
        page = self.app.page
        for _ in range(n):
            if self.drawn % STROKES_PER_DRAWING == 0 and self.drawn:
                self.app.clear(page, self.app)
            bench.draw(page, self.app, self.strokes[self.drawn % len(self.strokes)])
            self.drawn += 1
            strokes = (self.drawn - 1) % STROKES_PER_DRAWING + 1
            page.get_by_text(re.compile(rf"^{strokes} strokes? received")).wait_for()
            page.locator(SCRIPT_DONE).wait_for(state="attached")  # that run's answer is shown


def test_a_session_of_300_predictions_leaks_no_memory(browser, server, record_property) -> None:
    url, pid = server
    app = open_app(browser, url, bench.VIEWPORT)
    soak = Soak(app)
    try:
        soak.predictions(SOAK_WARM_UP)
        before = rss_mb(pid)
        soak.predictions(SOAK_PREDICTIONS)
        after = rss_mb(pid)
    finally:
        app.page.context.close()
    growth = after - before
    record_property(
        "measured",
        f"soak: {SOAK_PREDICTIONS} predictions in one session; server VmRSS {before:.0f} -> "
        f"{after:.0f} MB ({growth:+.1f} MB; at most {MAX_GROWTH_MB} MB)",
    )
    assert growth <= MAX_GROWTH_MB, f"the server grew by {growth:.1f} MB"
