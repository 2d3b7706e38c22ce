"""End to end, on the shipped models in headless Chromium: a digit drawn with the mouse gets its
digit and the maps that explain it; a smiley and a letter "A" are not digits, and the app says so.

Writes the README's screenshots: docs/images/explanations.png (a drawn 4 and its maps) and
docs/images/declined.png (a drawing the model declines).
"""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.test_browser import SCRIPT_DONE, UI_TIMEOUT_MS, draw_stroke, serve_app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
SHIPPED = Path(os.environ.get("VIT_DIGITS_MODELS_DIR", ROOT / "models"))
NOT_A_DIGIT = "This does not look like a digit"
# strokes in canvas pixels (280 x 280)
FOUR = [[(90, 40), (60, 160), (190, 160)], [(160, 70), (160, 250)]]
SMILEY = [
    [(60, 120), (90, 200), (140, 230), (190, 200), (220, 120)],
    [(100, 70), (105, 90)],
    [(180, 70), (185, 90)],
]
ONE_WITH_A_FLAG = [[(110, 80), (150, 40), (150, 240)]]  # Fast: 1 at about 80 %, then 9 and 7
LETTER_A = [[(60, 250), (140, 40), (220, 250)], [(95, 165), (185, 165)]]


@pytest.fixture(scope="module")
def shipped_url(tmp_path_factory):
    if not (SHIPPED / "manifest.json").exists():
        pytest.skip(f"{SHIPPED}/manifest.json is not shipped yet")
    with serve_app(SHIPPED, tmp_path_factory.mktemp("streamlit")) as url:
        yield url


@pytest.fixture
def page(browser, shipped_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(shipped_url)
    page.locator(SCRIPT_DONE).wait_for(state="attached")
    yield page
    page.close()


def draw(page, strokes: list[list[tuple[int, int]]]) -> None:
    """Each stroke as a hand draws it (canvas pixels), then wait for the last one's rerun."""
    for points in strokes:
        draw_stroke(page, points)
        page.wait_for_timeout(300)
    page.wait_for_timeout(1500)  # the last stroke's rerun has started
    page.locator(SCRIPT_DONE).wait_for(state="attached")


# every image shown has loaded and every chart shown is drawn (Vega: a canvas or an svg)
PAINTED = """() => {
  const shown = [...document.querySelectorAll('img, [data-testid=stVegaLiteChart]')]
    .filter(element => element.checkVisibility());
  return shown.every(element => element.tagName === 'IMG'
    ? element.complete && element.naturalWidth > 0
    : element.querySelector('canvas, svg'));
}"""


def screenshot(page, name: str, top, bottom) -> Path:
    """The page from `top`'s top to `bottom`'s bottom (locators), in a viewport tall enough to
    hold both (Streamlit scrolls inside the page, so a full-page shot would stop at the fold)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 2600})
    page.wait_for_timeout(500)
    page.locator(SCRIPT_DONE).wait_for(state="attached")
    page.wait_for_function(PAINTED)
    page.wait_for_timeout(500)
    first, last = top.bounding_box(), bottom.bounding_box()
    clip = {"x": 0, "y": max(0, first["y"] - 16), "width": 1400}
    clip["height"] = last["y"] + last["height"] + 16 - clip["y"]
    path = IMAGES / name
    page.screenshot(path=str(path), clip=clip)
    print(f"screenshot: {path}")
    return path


def test_a_drawn_four_gets_its_digit_and_the_maps_that_explain_it(page):
    draw(page, FOUR)
    expect(page.get_by_test_id("stMetricValue")).to_have_text("4")
    expect(page.get_by_text(NOT_A_DIGIT)).to_have_count(0)
    page.get_by_text("Why 4?").wait_for()
    page.get_by_text(re.compile(r"^occlusion, p\(4\): largest drop")).wait_for()
    page.get_by_text("attention rollout, all blocks").wait_for()
    page.get_by_text(re.compile(r"^Occlusion maps: \d+ inked patches blanked")).wait_for()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.get_by_text(re.compile(r'^No "why 4 and not …" map: the runner-up')).wait_for()


def test_a_one_with_a_flag_gets_its_maps_and_a_word_on_the_runner_up(page):
    draw(page, ONE_WITH_A_FLAG)
    expect(page.get_by_test_id("stMetricValue")).to_have_text("1")
    contrast = page.get_by_text(re.compile(r"^why 1 and not \d$"))
    no_contrast = page.get_by_text(re.compile(r'^No "why 1 and not …" map: the runner-up'))
    expect(contrast.or_(no_contrast)).to_have_count(1)  # the third column says one or the other
    page.get_by_text("Occlusion for every digit").click()
    for digit in range(10):
        expect(page.get_by_text(re.compile(rf"^p\({digit}\) \d+%$"))).to_have_count(1)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    last_head = page.get_by_text(re.compile(r"^block 1, head \d+$")).last
    screenshot(page, "explanations.png", page.get_by_role("tab").first, last_head)


def test_a_smiley_is_not_a_digit_and_the_details_stay_in_expanders(page):
    draw(page, SMILEY)
    expect(page.get_by_text(NOT_A_DIGIT)).to_be_visible()
    expect(page.get_by_test_id("stMetricValue")).to_have_count(0)  # no big digit
    page.get_by_text("Probabilities anyway").click()
    page.get_by_text("The maps anyway (for a drawing the model declined)").wait_for()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.get_by_text("The maps anyway (for a drawing the model declined)").click()
    page.get_by_text("attention rollout, all blocks").wait_for()
    why = page.get_by_role("heading", name=re.compile(r"^Why its best guess is \d"))
    screenshot(page, "declined.png", page.get_by_role("tab").first, why)


def test_a_letter_a_is_not_a_digit(page):
    draw(page, LETTER_A)
    expect(page.get_by_text(NOT_A_DIGIT)).to_be_visible()
    expect(page.get_by_test_id("stMetricValue")).to_have_count(0)
    screenshot(
        page, "declined-letter-a.png", page.get_by_role("tab").first, page.get_by_text(NOT_A_DIGIT)
    )


def test_the_error_analysis_tab_shows_confusion_reliability_and_mistakes(page):
    page.get_by_role("tab", name="Error analysis").click()
    page.get_by_text(re.compile(r"^Fast on the MNIST test set: 10,000 digits")).wait_for()
    tab = page.get_by_role("tabpanel").filter(has_text="on the MNIST test set")
    expect(tab.locator("[data-testid=stVegaLiteChart]")).to_have_count(
        2
    )  # the confusion matrix and the reliability diagram
    expect(page.get_by_text(re.compile(r"^\d → \d · \d+%$")).first).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    gallery = page.get_by_text(re.compile(r"^\d → \d · \d+%$")).last
    screenshot(page, "error-analysis.png", page.get_by_role("tab").first, gallery)
