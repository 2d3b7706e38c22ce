"""End to end: `streamlit run app.py` on the tiny models, driven by headless Chromium.

Draws a two-stroke "4" with the mouse and checks that both strokes reach the model (the
canvas once lost the first stroke of a fresh page), that a prediction and every attention map
are shown, and saves screenshots to tests/artifacts/.
"""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT_S = 90
UI_TIMEOUT_MS = 45_000
# the "4", in canvas pixels: the diagonal with the bar, then the upright; the app's stroke is 28 px
FIRST_STROKE = [(90, 40), (60, 160), (190, 160)]
SECOND_STROKE = [(160, 70), (160, 250)]
HALF_STROKE = 14
CANVAS = "canvas.upper-canvas"  # Fabric.js's event layer, on top of the drawing
SCRIPT_DONE = "[data-testid=stApp][data-test-script-state=notRunning]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"streamlit did not listen on port {port} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def app_url(tiny_models_dir, tmp_path_factory):
    """A `streamlit run app.py` server on a free port, serving the tiny models; always stopped."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    env = {**os.environ, "VIT_DIGITS_MODELS_DIR": str(tiny_models_dir)}
    command = [sys.executable, "-m", "streamlit", "run", "app.py"]
    command += ["--server.headless", "true", "--server.port", str(port)]
    command += ["--server.fileWatcherType", "none"]
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh page (a new Streamlit session) with the canvas ready."""
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(app_url)
    page.locator(CANVAS).wait_for()
    yield page
    page.close()


def draw_stroke(page, points: list[tuple[int, int]]) -> None:
    """Press, drag through `points` (canvas pixels) and release, like a hand would."""
    canvas = page.locator(CANVAS)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"], box["y"]
    page.mouse.move(x + points[0][0], y + points[0][1])
    page.mouse.down()
    for px, py in points[1:]:
        page.mouse.move(x + px, y + py, steps=10)
    page.mouse.up()


def received(page, strokes: int) -> dict[str, int]:
    """Wait for the canvas caption of `strokes` strokes; return the ink box the server saw."""
    caption = page.get_by_text(re.compile(rf"^{strokes} strokes? received"))
    caption.wait_for()
    page.locator(SCRIPT_DONE).wait_for(state="attached")  # the rest of that run is on the page
    match = re.search(r"ink x (\d+)–(\d+), y (\d+)–(\d+)", caption.inner_text())
    left, right, top, bottom = map(int, match.groups())
    return {"left": left, "right": right, "top": top, "bottom": bottom}


def assert_box_holds_both_strokes(box: dict[str, int]) -> None:
    points = FIRST_STROKE + SECOND_STROKE
    assert box["left"] <= min(x for x, _ in points) - HALF_STROKE + 3  # from the first stroke
    assert box["right"] >= max(x for x, _ in points) + HALF_STROKE - 3
    assert box["top"] <= min(y for _, y in points) - HALF_STROKE + 3
    assert box["bottom"] >= max(y for _, y in points) + HALF_STROKE - 3  # from the second stroke


def assert_prediction_shown(page) -> None:
    metric = page.get_by_test_id("stMetricValue")
    metric.wait_for()
    assert re.fullmatch(r"\d", metric.inner_text().strip())
    page.get_by_text("What the ViT sees").wait_for()
    page.get_by_text("attention rollout, all blocks").wait_for()
    for block in range(2):
        for head in range(2):
            assert page.get_by_text(f"block {block}, head {head}", exact=True).count() == 1
    # the canvas' own images aside: the model input, 2 x 2 heads and the rollout
    assert page.locator("[data-testid=stImage] img").count() == 1 + 4 + 1


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_two_quick_strokes_on_a_fresh_page_both_reach_the_model(page):
    """The timing that lost a stroke: both strokes at once, while the first rerun is running."""
    draw_stroke(page, FIRST_STROKE)
    draw_stroke(page, SECOND_STROKE)
    assert_box_holds_both_strokes(received(page, 2))
    assert_prediction_shown(page)


def test_strokes_after_a_prediction_and_a_new_pen_width_add_to_the_drawing(page):
    """A slow hand: each stroke lands after a full rerun, the second with a thicker pen."""
    draw_stroke(page, FIRST_STROKE)
    first = received(page, 1)
    assert first["bottom"] < SECOND_STROKE[-1][1] - HALF_STROKE
    assert_prediction_shown(page)
    page.get_by_role("slider").press("ArrowRight")
    page.get_by_text("29", exact=True).wait_for()
    page.locator(SCRIPT_DONE).wait_for(state="attached")
    draw_stroke(page, SECOND_STROKE)
    assert_box_holds_both_strokes(received(page, 2))
    assert_prediction_shown(page)
    screenshot(page, "browser.png")

    page.get_by_role("button", name="Clear").click()
    page.get_by_text("Draw a digit (or upload one)").wait_for()
    expect(page.get_by_test_id("stMetricValue")).to_have_count(0)
    expect(page.get_by_text(re.compile("strokes? received"))).to_have_count(0)


def test_grid_search_tab(page):
    page.get_by_role("tab", name="Grid search").click()
    page.get_by_text("3 configurations from grid_results.csv").wait_for()
    page.locator("[data-testid=stVegaLiteChart]").first.wait_for()
    screenshot(page, "browser-grid.png")


def test_several_tabs_at_once(browser, app_url):
    pages = [browser.new_page(viewport={"width": 1400, "height": 1200}) for _ in range(3)]
    try:
        for page in pages:
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(app_url)
        for page in pages:
            page.locator(CANVAS).wait_for()
            draw_stroke(page, FIRST_STROKE)
            draw_stroke(page, SECOND_STROKE)
        for page in pages:
            assert_box_holds_both_strokes(received(page, 2))
            assert_prediction_shown(page)
    finally:
        for page in pages:
            page.close()
