"""End to end: `streamlit run app.py` on the tiny models, driven by headless Chromium.

Draws a two-stroke "4" with the mouse and checks that both strokes reach the model (the
canvas once lost the first stroke of a fresh page), that a prediction and every attention map
are shown; draws four digits in four tabs at once, each of which must show its own drawing's
prediction; uploads files through the real uploader; starts strokes in every corner of the
drawing surface by mouse, pen and touch (a stroke there was once lost under an invisible
toolbar); shows the prediction in view on a phone-sized screen. Screenshots go to
tests/artifacts/.
"""

import base64
import contextlib
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from custom_modules.serving.model import OnnxViT
from custom_modules.serving.overlay import as_uint8, upscale_nearest
from custom_modules.serving.preprocess import preprocess_image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
SHIPPED_MODELS_DIR = Path(os.environ.get("VIT_DIGITS_MODELS_DIR", ROOT / "models"))
START_TIMEOUT_S = 90
UI_TIMEOUT_MS = 45_000
# the "4", in canvas pixels: the diagonal with the bar, then the upright; the app's stroke is 28 px
FIRST_STROKE = [(90, 40), (60, 160), (190, 160)]
SECOND_STROKE = [(160, 70), (160, 250)]
HALF_STROKE = 14
CANVAS_FRAME = "iframe[title*=stroke_canvas]"  # components/stroke_canvas, in its own frame
SURFACE = "#surface"  # its <canvas>: the drawing, and where the pen lands
CANVAS_SIZE = 280
PREDICTION = ".st-key-prediction"  # the answer, right under the drawing
PROBABILITY = re.compile(r"^([\d.]+)% probability$")
PHONE = {"width": 390, "height": 844}
CIRCLE = [
    (round(140 + 60 * math.sin(step * math.pi / 8)), round(140 - 95 * math.cos(step * math.pi / 8)))
    for step in range(17)
]
# one digit per tab, each a list of strokes in canvas pixels: 1, 2, 2 and 3 strokes
DIGITS = {
    "0": [CIRCLE],
    "1": [[(105, 85), (150, 45)], [(150, 45), (150, 240)]],
    "4": [FIRST_STROKE, SECOND_STROKE],
    "7": [[(70, 50), (210, 50)], [(210, 50), (120, 245)], [(115, 150), (200, 150)]],
}
MOUSE_STEP = 12  # px between the mouse events of a drag, like a quick hand
BOX_TOLERANCE = 4  # px: the pen's round end caps reach HALF_STROKE past the points, within this
SCRIPT_DONE = "[data-testid=stApp][data-test-script-state=notRunning]"
PREDICTION_TIME = re.compile(r"Preprocessing \+ inference took ([\d.]+) ms")


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
    with serve_app(tiny_models_dir, tmp_path_factory.mktemp("streamlit")) as url:
        yield url


@pytest.fixture(scope="module")
def shipped_app_url(tmp_path_factory):
    """The same server on the shipped models in models/."""
    if not (SHIPPED_MODELS_DIR / "manifest.json").exists():
        pytest.skip(f"{SHIPPED_MODELS_DIR}/manifest.json is not shipped yet")
    with serve_app(SHIPPED_MODELS_DIR, tmp_path_factory.mktemp("streamlit")) as url:
        yield url


@contextlib.contextmanager
def serve_app(models_dir: Path, log_dir: Path) -> Iterator[str]:
    """`streamlit run app.py` on a free port serving `models_dir`; stopped on the way out."""
    port = free_port()
    log = log_dir / "streamlit.log"
    env = {**os.environ, "VIT_DIGITS_MODELS_DIR": str(models_dir)}
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


@pytest.fixture
def page(browser, app_url):
    """A fresh page (a new Streamlit session) with the canvas ready."""
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(app_url)
    surface(page).wait_for()
    yield page
    page.close()


def surface(page):
    """The drawing surface, inside the component's frame."""
    return page.frame_locator(CANVAS_FRAME).locator(SURFACE)


def canvas_button(page, name: str):
    """Undo or Clear: the surface's own buttons, below it."""
    return page.frame_locator(CANVAS_FRAME).get_by_role("button", name=name, exact=True)


def path_on_page(page, points) -> list[tuple[float, float]]:
    """`points` in canvas pixels as page coordinates (the surface may be shown smaller)."""
    canvas = surface(page)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    scale = box["width"] / CANVAS_SIZE
    path = [(box["x"] + px * scale, box["y"] + py * scale) for px, py in points[:1]]
    for previous, point in zip(points, points[1:], strict=False):
        steps = max(2, round(math.dist(previous, point) / MOUSE_STEP))
        path += [
            (
                box["x"] + (previous[0] + (point[0] - previous[0]) * i / steps) * scale,
                box["y"] + (previous[1] + (point[1] - previous[1]) * i / steps) * scale,
            )
            for i in range(1, steps + 1)
        ]
    return path


def draw_stroke(page, points: list[tuple[float, float]]) -> None:
    """Press, drag through `points` (canvas pixels) and release, like a hand would."""
    (x, y), *rest = path_on_page(page, points)
    page.mouse.move(x, y)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(x, y)
    page.mouse.up()


def received(page, strokes: int) -> dict[str, int]:
    """Wait for the canvas caption of `strokes` strokes; return the ink box the server saw."""
    caption = page.get_by_text(re.compile(rf"^{strokes} strokes? received"))
    caption.wait_for()
    page.locator(SCRIPT_DONE).wait_for(state="attached")  # the rest of that run is on the page
    match = re.search(r"ink x (\d+)–(\d+), y (\d+)–(\d+)", caption.inner_text())
    left, right, top, bottom = map(int, match.groups())
    return {"left": left, "right": right, "top": top, "bottom": bottom}


def expected_box(strokes: list[list[tuple[int, int]]]) -> dict[str, int]:
    """The ink box of `strokes` drawn with the app's default pen (HALF_STROKE round caps)."""
    xs, ys = (
        [x for stroke in strokes for x, _ in stroke],
        [y for stroke in strokes for _, y in stroke],
    )
    return {
        "left": min(xs) - HALF_STROKE,
        "right": max(xs) + HALF_STROKE,
        "top": min(ys) - HALF_STROKE,
        "bottom": max(ys) + HALF_STROKE,
    }


def assert_box_holds_both_strokes(box: dict[str, int]) -> None:
    points = FIRST_STROKE + SECOND_STROKE
    assert box["left"] <= min(x for x, _ in points) - HALF_STROKE + 3  # from the first stroke
    assert box["right"] >= max(x for x, _ in points) + HALF_STROKE - 3
    assert box["top"] <= min(y for _, y in points) - HALF_STROKE + 3
    assert box["bottom"] >= max(y for _, y in points) + HALF_STROKE - 3  # from the second stroke


def predicted_digit(page):
    return page.locator(PREDICTION).get_by_test_id("stMetricValue")


def shown_prediction(page) -> tuple[str, str]:
    """The digit and its probability (in %, as shown) under the drawing."""
    predicted_digit(page).wait_for()
    probability = page.locator(PREDICTION).get_by_text(PROBABILITY).inner_text().strip()
    return predicted_digit(page).inner_text().strip(), PROBABILITY.search(probability).group(1)


def assert_prediction_shown(page, uploaded_images: int = 0) -> None:
    assert re.fullmatch(r"\d", shown_prediction(page)[0])
    page.get_by_text("What the ViT sees").wait_for()
    page.get_by_text("attention rollout, all blocks").wait_for()
    for block in range(2):
        for head in range(2):
            assert page.get_by_text(f"block {block}, head {head}", exact=True).count() == 1
    page.get_by_text(re.compile(r"^occlusion, p\(\d\): largest drop")).wait_for()
    # the model input, the rollout, the occlusion map (and perhaps a contrast map), 2 x 2 heads;
    # the ten per-digit maps wait in a closed expander. Each one shown has loaded.
    shown = page.locator("[data-testid=stImage] img:visible")
    expected = (uploaded_images + 7, uploaded_images + 8)
    loaded = "images => images.every(i => i.complete && i.naturalWidth > 0)"
    # the maps arrive after their captions' first one, and a rerun may still be replacing one:
    # wait until the page settles, then check; a broken image never counts as loaded
    for _ in range(UI_TIMEOUT_MS // 100):
        if shown.count() in expected and shown.evaluate_all(loaded):
            break
        page.wait_for_timeout(100)
    assert shown.count() in expected
    assert shown.evaluate_all(loaded)


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

    canvas_button(page, "Undo").click()
    first_again = received(page, 1)
    assert first_again == first  # the second stroke, and only it, is gone
    canvas_button(page, "Clear").click()
    page.get_by_text("Draw a digit (or upload one)").wait_for()
    expect(predicted_digit(page)).to_have_count(0)
    expect(page.get_by_text(re.compile("strokes? received"))).to_have_count(0)
    expect(canvas_button(page, "Undo")).to_be_disabled()


def upload_file(page, name: str, data: bytes) -> None:
    """Choose a file in the uploader, as the file dialog would, and wait for the rerun."""
    files = [{"name": name, "mimeType": "application/octet-stream", "buffer": data}]
    page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(files=files)
    page.get_by_text(name, exact=True).first.wait_for()
    page.locator(SCRIPT_DONE).wait_for(state="attached")


def test_uploads_through_the_browser_state_the_limit_and_keep_the_app_working(page, uploads):
    page.get_by_text("Upload an image").click()
    uploader = page.get_by_test_id("stFileUploader")
    expect(uploader).to_contain_text("A PNG, JPEG or GIF of one digit, at most 5 MB")
    expect(uploader).to_contain_text("5MB per file")  # Streamlit's own note, from config.toml

    upload_file(page, "over-the-limit.png", uploads["over-the-limit.png"])
    expect(uploader).to_contain_text("File must be 5.0MB or smaller.")  # refused by Streamlit
    upload_file(page, "truncated.png", uploads["truncated.png"])
    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_have_text(re.compile(r"^Cannot read truncated\.png: the file is damaged"))
    upload_file(page, "animated.gif", uploads["animated.gif"])
    expect(error).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentWarning")).to_have_text(
        "animated.gif: an animation of 3 frames; only the first frame is classified."
    )
    assert_prediction_shown(page, uploaded_images=1)
    screenshot(page, "browser-upload.png")


def test_grid_search_tab(page):
    page.get_by_role("tab", name="Grid search").click()
    page.get_by_text("3 configurations from grid_results.csv").wait_for()
    page.locator("[data-testid=stVegaLiteChart]").first.wait_for()
    screenshot(page, "browser-grid.png")


def decode_data_url(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,"), data_url[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def canvas_pixels(page) -> np.ndarray:
    """What this tab's canvas holds (RGBA), read from the browser itself."""
    return decode_data_url(surface(page).evaluate("canvas => canvas.toDataURL('image/png')"))


def shown_model_input(page) -> np.ndarray:
    """The "What the ViT sees" image as this tab shows it (a PNG data URL: exact pixels)."""
    image = page.get_by_test_id("stImage").filter(has_text="the 28×28 model input")
    return decode_data_url(image.locator("img").get_attribute("src"))


def assert_tab_shows_its_own_prediction(page, model: OnnxViT) -> np.ndarray:
    """The tab's model input and prediction are those of its own canvas; returns the input."""
    x = preprocess_image(canvas_pixels(page))
    np.testing.assert_array_equal(shown_model_input(page), upscale_nearest(as_uint8(x), 8))
    probabilities = model.predict(x)[0][0]
    digit = int(np.argmax(probabilities))
    assert shown_prediction(page) == (str(digit), f"{probabilities[digit] * 100:.1f}")
    return x


def load_app_at_once(pages: list, app_url: str) -> None:
    """Start loading the app in every page, then wait for every canvas."""
    for page in pages:
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(app_url, wait_until="commit")
    for page in pages:
        surface(page).wait_for()


def test_four_tabs_drawing_at_once_each_show_their_own_digit(browser, app_url, tiny_model_path):
    """Stroke 1 in every tab, then stroke 2 in every tab...: the sessions' reruns overlap."""
    # each page in its own browser context: its own Streamlit session
    pages = [browser.new_page(viewport={"width": 1400, "height": 1200}) for _ in DIGITS]
    try:
        load_app_at_once(pages, app_url)
        for stroke in range(max(len(strokes) for strokes in DIGITS.values())):
            for page, strokes in zip(pages, DIGITS.values(), strict=True):
                if stroke < len(strokes):
                    draw_stroke(page, strokes[stroke])
        model = OnnxViT(tiny_model_path)
        inputs = []
        for page, (digit, strokes) in zip(pages, DIGITS.items(), strict=True):
            box = received(page, len(strokes))
            for side, expected in expected_box(strokes).items():
                assert abs(box[side] - expected) <= BOX_TOLERANCE, (digit, side, box)
            assert_prediction_shown(page)
            inputs.append(assert_tab_shows_its_own_prediction(page, model).tobytes())
            expect(page.get_by_test_id("stException")).to_have_count(0)
            screenshot(page, f"browser-tab-{digit}.png")
        assert len(set(inputs)) == len(DIGITS)  # four different drawings reached the model
    finally:
        for page in pages:
            page.close()


@pytest.mark.parametrize(
    ("model", "digits"),
    [("Fast", "0147"), ("Large", "0147")],
)
def test_the_shipped_models_read_digits_drawn_in_several_strokes(
    browser, shipped_app_url, model, digits, record_property
):
    """The real models, chosen above the tabs, read a 0, 1, 4 and 7 drawn with the mouse."""
    manifest = json.loads((SHIPPED_MODELS_DIR / "manifest.json").read_text())
    emb_dim = manifest["models"][model]["config"]["emb_dim"]
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(shipped_app_url)
        surface(page).wait_for()
        page.get_by_role("radio", name=model, exact=True).click()
        page.get_by_text(re.compile(f"embedding {emb_dim}, 4×4 patches")).wait_for()
        page.locator(SCRIPT_DONE).wait_for(state="attached")
        milliseconds = []
        for i, digit in enumerate(digits):
            strokes = DIGITS[digit]
            if i:
                canvas_button(page, "Clear").click()
                expect(predicted_digit(page)).to_have_count(0)
                page.locator(SCRIPT_DONE).wait_for(state="attached")
            for stroke in strokes:
                draw_stroke(page, stroke)
            received(page, len(strokes))
            expect(predicted_digit(page)).to_have_text(digit)
            expect(page.get_by_test_id("stException")).to_have_count(0)
            took = page.get_by_text(PREDICTION_TIME).inner_text()
            milliseconds.append(float(PREDICTION_TIME.search(took).group(1)))
        screenshot(page, f"browser-shipped-{model.lower()}-{digits}.png")
        shown = ", ".join(f"{ms:.1f}" for ms in milliseconds)
        record_property("measured", f"{model}: prediction time shown per digit (ms): {shown}")
    finally:
        page.close()


# ----------------------------------------------- the surface's edges, touch and pen; phones

# Each stroke starts on the surface's outermost pixels, in a corner or in the strip where the
# old canvas' invisible toolbar took the pointer (x 134-280, y 0-30), and heads inwards.
EDGE, LAST = 0.5, CANVAS_SIZE - 0.5  # the middle of the first and the last pixel
EDGE_STROKES = {
    "top-left corner": [(EDGE, EDGE), (70, 70)],
    "top-right corner": [(LAST, EDGE), (210, 70)],
    "bottom-left corner": [(EDGE, LAST), (70, 210)],
    "bottom-right corner": [(LAST, LAST), (210, 210)],
    "top-right strip": [(150, 4), (250, 26)],
}
WATCH_POINTERS = """() => {
    window.pointerKinds = [];  // of the pointers pressed on the drawing (not on its buttons)
    document.getElementById("zone").addEventListener(
        "pointerdown", (event) => pointerKinds.push(event.pointerType), true
    );
}"""


def press_drag_release(page, kind: str, points: list[tuple[float, float]]) -> None:
    """One stroke by mouse, pen or finger, as Chromium's own input events.

    The mouse comes from outside the surface and presses the moment it arrives: the old
    canvas lost such strokes. Pen and touch go through the DevTools protocol, which gives the
    page real pointer events of that pointerType.
    """
    start, *rest = path_on_page(page, points)
    if kind == "mouse":
        away = math.atan2(points[0][1] - points[1][1], points[0][0] - points[1][0])
        page.mouse.move(start[0] + 30 * math.cos(away), start[1] + 30 * math.sin(away))
        page.mouse.move(*start)
        page.mouse.down()
        for point in rest:
            page.mouse.move(*point)
        page.mouse.up()
        return
    cdp = page.context.new_cdp_session(page)
    try:
        if kind == "pen":
            events = [("mouseMoved", start, 0), ("mousePressed", start, 1)]
            events += [("mouseMoved", point, 1) for point in rest]
            for event, (x, y), buttons in [*events, ("mouseReleased", rest[-1], 0)]:
                cdp.send(
                    "Input.dispatchMouseEvent",
                    {"type": event, "x": x, "y": y, "button": "left", "buttons": buttons}
                    | {"clickCount": 1, "pointerType": "pen"},
                )
        else:
            for event, (x, y) in [("touchStart", start), *[("touchMove", p) for p in rest]]:
                touch = {"x": x, "y": y, "radiusX": 10, "radiusY": 10, "force": 1}
                cdp.send("Input.dispatchTouchEvent", {"type": event, "touchPoints": [touch]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    finally:
        cdp.detach()


def canvas_frame(page):
    return page.locator(CANVAS_FRAME).element_handle().content_frame()


def clamped(box: dict[str, int]) -> dict[str, int]:
    return {side: min(max(value, 0), CANVAS_SIZE - 1) for side, value in box.items()}


@pytest.mark.parametrize("kind", ["mouse", "pen", "touch"])
def test_a_stroke_starting_at_any_edge_of_the_surface_reaches_the_model(browser, app_url, kind):
    context = browser.new_context(viewport={"width": 1400, "height": 1200}, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(app_url)
        surface(page).wait_for()
        canvas_frame(page).evaluate(WATCH_POINTERS)
        for name, points in EDGE_STROKES.items():
            press_drag_release(page, kind, points)
            box = received(page, 1)  # counted by the app from the strokes it was sent
            for side, expected in clamped(expected_box([points])).items():
                assert abs(box[side] - expected) <= BOX_TOLERANCE, (kind, name, side, box)
            shown_prediction(page)
            assert canvas_frame(page).evaluate("() => pointerKinds.splice(0)") == [kind], name
            if name == "top-right strip":
                screenshot(page, f"browser-edge-{kind}.png")
            canvas_button(page, "Clear").click()
            expect(page.get_by_text(re.compile("strokes? received"))).to_have_count(0)
        expect(page.get_by_test_id("stException")).to_have_count(0)
    finally:
        context.close()


def test_on_a_phone_the_model_switch_and_the_prediction_are_in_view(browser, app_url):
    """390 x 844: no sidebar to open, no scrolling between drawing and reading the answer."""
    context = browser.new_context(
        viewport=PHONE, has_touch=True, is_mobile=True, device_scale_factor=2
    )
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(app_url)
        surface(page).wait_for()
        expect(page.get_by_role("slider")).not_to_be_in_viewport()  # the sidebar stays closed
        switch = page.get_by_role("radio", name="Large", exact=True)
        expect(switch).to_be_in_viewport()
        switch.click()
        page.get_by_text(re.compile(r"^16,546 params · ")).wait_for()  # the tiny Large
        box = surface(page).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        for stroke in (FIRST_STROKE, SECOND_STROKE):
            press_drag_release(page, "touch", stroke)
        received(page, 2)
        shown_prediction(page)
        assert page.evaluate("() => window.scrollY") == 0
        expect(predicted_digit(page)).to_be_in_viewport(ratio=1)
        expect(page.locator(PREDICTION).get_by_text(PROBABILITY)).to_be_in_viewport(ratio=1)
        expect(canvas_button(page, "Clear")).to_be_in_viewport(ratio=1)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-phone.png"))  # what the phone shows
        print(f"screenshot: {ARTIFACTS / 'browser-phone.png'}")
    finally:
        context.close()
