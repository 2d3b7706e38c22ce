"""Tests for app.py with Streamlit's AppTest, on the tiny models of conftest.py.

AppTest cannot draw on the canvas component, so predictions go through the upload input,
which feeds the same preprocess -> predict -> display path as the canvas.
"""

import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from custom_modules.grid.history import history_path, write_history

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT_S = 30


def seven_png(dark_on_light: bool = False) -> bytes:
    """A hand-drawn-looking 7 (two strokes) as PNG bytes."""
    image = Image.new("L", (200, 240), 0)
    pen = ImageDraw.Draw(image)
    pen.line([(40, 40), (160, 40), (80, 210)], fill=255, width=16, joint="curve")
    pen.line([(70, 120), (140, 120)], fill=255, width=14)
    if dark_on_light:
        image = Image.eval(image, lambda value: 255 - value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def models_env(monkeypatch, tiny_models_dir: Path) -> Path:
    monkeypatch.setenv("VIT_DIGITS_MODELS_DIR", str(tiny_models_dir))
    return tiny_models_dir


def run_app() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    assert not app.exception, app.exception
    return app


def open_tab(app: AppTest, label: str) -> AppTest:
    """Open a tab as a click does: only the open tab's content runs."""
    app.session_state["tab"] = label
    app.run()
    assert not app.exception, app.exception
    return app


def upload(app: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    app.radio(key="source").set_value("Upload an image").run()
    app.file_uploader[0].set_value((name, data, mime)).run()
    assert not app.exception, app.exception
    return app


def image_captions(app: AppTest) -> list[str]:
    return [caption for image in app.image for caption in image.captions]


def test_blank_canvas_shows_a_hint_and_no_prediction(models_env):
    app = run_app()
    assert any("Draw a digit" in info.value for info in app.info)
    assert not app.metric and not app.error
    assert [tab.label for tab in app.tabs] == ["Draw & predict", "Grid search", "Error analysis"]


def test_the_model_switch_above_the_tabs_shows_the_chosen_models_numbers(models_env):
    app = run_app()
    model_switch = app.segmented_control(key="model")
    assert model_switch.options == ["Fast", "Large"] and model_switch.value == "Fast"
    assert any(caption.value.startswith("5,738 params · ") for caption in app.main.caption)
    model_switch.set_value("Large").run()
    assert any(caption.value.startswith("16,546 params · ") for caption in app.main.caption)
    assert "Large: 3 blocks × 3 heads" in " ".join(c.value for c in app.sidebar.caption)
    assert app.sidebar.slider(key="stroke_width").value == 28


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_uploaded_digit_gets_a_prediction_and_attention_maps(models_env, dark_on_light):
    app = upload(run_app(), "seven.png", seven_png(dark_on_light))
    assert not app.error
    assert app.metric[0].label == "Predicted digit" and app.metric[0].value in list("0123456789")
    captions = image_captions(app)
    heads = [f"block {block}, head {head}" for block in range(2) for head in range(2)]
    assert set(heads) <= set(captions)
    assert "attention rollout, all blocks" in captions
    assert any(caption.startswith("the 28×28 model input") for caption in captions)
    assert any("Preprocessing + inference took" in caption.value for caption in app.caption)
    assert app.get("vega_lite_chart")  # the ten probabilities


def test_large_model_shows_every_block_and_head(models_env):
    app = run_app()
    app.segmented_control(key="model").set_value("Large").run()
    captions = image_captions(upload(app, "seven.png", seven_png()))
    assert sum(caption.startswith("block ") for caption in captions) == 3 * 3


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\nnot really a png",
        seven_png()[:300],
        seven_png()[:-40],
        b"",
        b"GIF89a" + bytes(range(256)),
    ],
    ids=["bad-header", "truncated-head", "truncated-tail", "empty", "garbage"],
)
def test_unreadable_upload_is_a_one_line_error(models_env, data):
    app = upload(run_app(), "broken.png", data)
    assert len(app.error) == 1 and "broken.png" in app.error[0].value
    assert "\n" not in app.error[0].value
    assert not app.metric


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not-an-image.png", ": not a PNG, JPEG or GIF image."),
        ("empty.png", ": not a PNG, JPEG or GIF image."),
        ("bitmap.png", ": not a PNG, JPEG or GIF image."),
        ("truncated.png", ": the file is damaged or truncated (image file is truncated)."),
        ("bomb-20000x20000.png", ": more than 89,478,485 pixels, refused as a possible"),
        ("bomb-10000x10000.png", ": more than 89,478,485 pixels, refused as a possible"),
        ("huge-6000x6000.png", ": 6000×6000 px is more than the 16.8 megapixels read here"),
        ("over-the-limit.png", ": {size:,} bytes is over the 5 MB limit."),
    ],
)
def test_unusable_upload_is_one_line_error_and_the_app_goes_on(models_env, uploads, name, message):
    app = upload(run_app(), name, uploads[name])
    expected = f"Cannot read `{name}`{message.format(size=len(uploads[name]))}"
    assert [error.value[: len(expected)] for error in app.error] == [expected]
    assert "\n" not in app.error[0].value and not app.metric and not app.warning
    app.file_uploader[0].set_value(("seven.png", seven_png(), "image/png")).run()
    assert not app.exception and not app.error and app.metric  # the next upload works


@pytest.mark.parametrize(
    ("name", "mime", "description", "warning"),
    [
        ("animated.gif", "image/gif", "GIF, palette", "an animation of 3 frames; only the first"),
        ("sixteen-bit.png", "image/png", "PNG, 16-bit greyscale", None),
        ("cmyk.jpg", "image/jpeg", "JPEG, CMYK", None),
        ("palette.png", "image/png", "PNG, palette", None),
        ("palette-transparent.png", "image/png", "PNG, palette with transparency", None),
        ("wide-10000x10.png", "image/png", "PNG, greyscale", "10000×10 px is far more elongated"),
        ("tall-10x10000.png", "image/png", "PNG, RGB", "10×10000 px is far more elongated"),
    ],
)
def test_odd_but_valid_upload_is_classified(models_env, uploads, name, mime, description, warning):
    app = upload(run_app(), name, uploads[name], mime)
    assert not app.error and app.metric[0].value in list("0123456789")
    expected_warnings = [f"`{name}`: {warning}"] if warning else []
    assert [w.value[: len(expected_warnings[0])] for w in app.warning] == expected_warnings
    assert any(caption.startswith(f"{name} · {description}, ") for caption in image_captions(app))


@pytest.mark.parametrize("name", ["one-pixel.png", "blank.jpg"])
def test_blank_upload_says_no_digit_was_found_and_shows_the_hint(models_env, uploads, name):
    blank = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(blank, format="JPEG")
    data = uploads.get(name) or blank.getvalue()
    app = upload(run_app(), name, data, "image/jpeg" if name.endswith("jpg") else "image/png")
    assert [w.value for w in app.warning] == [
        "No digit found: the image is blank, too faint or too small."
    ]
    assert any("Draw a digit" in info.value for info in app.info)
    assert not app.metric and not app.error


def test_the_upload_limit_is_a_few_mb_and_the_app_states_it(models_env):
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    limit_mb = config["server"]["maxUploadSize"]
    assert 1 <= limit_mb <= 10
    app = run_app()
    app.radio(key="source").set_value("Upload an image").run()
    assert app.file_uploader[0].label.endswith(f"at most {limit_mb} MB")
    assert app.file_uploader[0].proto.max_upload_size_mb == limit_mb


def test_a_file_name_cannot_break_the_one_line_message(models_env):
    name = "two\nlines `and` **markdown**.png"
    app = upload(run_app(), name, b"not an image")
    assert app.error[0].value.startswith("Cannot read `two lines 'and' **markdown**.png`: not a")


def test_missing_models_folder_shows_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("VIT_DIGITS_MODELS_DIR", str(tmp_path / "no-models"))
    app = run_app()
    message = app.error[0].value
    assert "manifest.json" in message and "grid_search_mnist.py --ship" in message
    assert "models/README.md" in message


def test_missing_model_file_shows_what_to_run(monkeypatch, tmp_path, tiny_models_dir):
    manifest = json.loads((tiny_models_dir / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("VIT_DIGITS_MODELS_DIR", str(tmp_path))
    app = run_app()
    message = app.error[0].value
    assert str(tmp_path / "vit-fast.onnx") in message and "--ship" in message


def grid_tables(app: AppTest) -> tuple:
    """The Grid search tab's two tables: the shipped models, then the grid's runs."""
    shipped, runs = (frame.value for frame in app.tabs[1].dataframe)
    return shipped, runs


def test_grid_search_tab_shows_the_shipped_models_apart_from_their_grid_runs(models_env):
    app = run_app()
    assert not app.tabs[1].dataframe and not app.tabs[1].get("vega_lite_chart")  # closed: not run
    grid_tab = open_tab(app, "Grid search").tabs[1]
    shipped, runs = grid_tables(app)
    assert list(shipped["model"]) == ["Fast", "Large"]
    assert list(shipped["test_accuracy"]) == pytest.approx([90.0, 91.0])  # in percent, as shown
    assert list(shipped["params"]) == [5738, int(shipped["params"][1])]
    # best validation accuracy first; the grid runs of the shipped configurations marked
    assert list(runs["run_id"]) == ["vit-e24-h3-l3-m2", "vit-e16-h2-l2-m2", "vit-e8-h1-l1-m1"]
    assert list(runs["served"]) == ["Large", "Fast", ""]
    assert "onnx_file" not in runs.columns  # the table shows figures, not file names
    why = " ".join(caption.value for caption in grid_tab.caption)
    assert "trained again for far longer" in why and "at most 0 epochs" not in why
    assert grid_tab.get("vega_lite_chart")
    notes = " ".join(info.value for info in grid_tab.info)
    assert "No learning curves for these grid runs" in notes
    assert "shipped models' own training curves are not available" in notes


def test_grid_search_tab_draws_the_recorded_learning_curves(monkeypatch, tmp_path, tiny_models_dir):
    for name in ("vit-fast.onnx", "vit-large.onnx", "grid_results.csv"):
        (tmp_path / name).write_bytes((tiny_models_dir / name).read_bytes())
    epochs = [{"epoch": e, "val_loss": 1 / e, "val_accuracy": 1 - 0.1 / e} for e in (1, 2, 3)]
    for run_id in ("vit-e16-h2-l2-m2", "vit-e8-h1-l1-m1"):
        write_history(history_path(tmp_path, run_id), run_id, epochs, best_epoch=3)
    manifest = json.loads((tiny_models_dir / "manifest.json").read_text())
    manifest["models"]["Fast"]["history"] = [  # as --robust records it: two validation sets
        {"epoch": e, "val_clean_loss": 0.2 / e, "val_clean_accuracy": 0.9, "val_styled_loss": 0.5}
        for e in (1, 2)
    ]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("VIT_DIGITS_MODELS_DIR", str(tmp_path))
    app = open_tab(run_app(), "Grid search")
    grid_tab = app.tabs[1]
    picker = grid_tab.multiselect(key="grid_curves")
    assert picker.options == ["vit-e16-h2-l2-m2", "vit-e8-h1-l1-m1"]  # the runs with curves
    assert picker.value == ["vit-e16-h2-l2-m2"]  # Fast's grid run, shown at first
    assert len(grid_tab.get("vega_lite_chart")) == 3  # the scatter, the grid's, the shipped's
    assert not grid_tab.info and not grid_tab.warning
    picker.set_value([]).run()
    assert len(app.tabs[1].get("vega_lite_chart")) == 2


def test_extra_models_and_keys_in_the_manifest_are_served(monkeypatch, tmp_path, tiny_models_dir):
    """A variant sharing Fast's configuration (e.g. an INT8 copy) and unknown keys are fine."""
    for name in ("vit-fast.onnx", "vit-large.onnx", "grid_results.csv"):
        (tmp_path / name).write_bytes((tiny_models_dir / name).read_bytes())
    manifest = json.loads((tiny_models_dir / "manifest.json").read_text())
    fast = {**manifest["models"]["Fast"], "checkpoint": "vit-fast.pt", "int8": {"shipped": True}}
    manifest["models"] = {
        **manifest["models"],
        "Fast": fast,
        "Fast INT8": {**fast, "int8_of": "Fast"},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("VIT_DIGITS_MODELS_DIR", str(tmp_path))
    app = open_tab(run_app(), "Grid search")
    assert app.segmented_control(key="model").options == ["Fast", "Large", "Fast INT8"]
    assert list(grid_tables(app)[1]["served"]) == ["Large", "Fast", ""]
    assert list(grid_tables(app)[0]["model"]) == ["Fast", "Large", "Fast INT8"]
    app.segmented_control(key="model").set_value("Fast INT8").run()
    assert not app.exception and not app.error


def test_a_model_with_overlapping_patches_is_named_so_and_has_no_grid_run(
    monkeypatch, tmp_path, tiny_models_dir
):
    for name in ("vit-fast.onnx", "vit-large.onnx", "grid_results.csv"):
        (tmp_path / name).write_bytes((tiny_models_dir / name).read_bytes())
    manifest = json.loads((tiny_models_dir / "manifest.json").read_text())
    fast = manifest["models"]["Fast"]
    fast["config"] = {**fast["config"], "patch_overlap": 2}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("VIT_DIGITS_MODELS_DIR", str(tmp_path))
    app = open_tab(run_app(), "Grid search")
    captions = [caption.value for caption in app.sidebar.caption]
    assert any("4×4 patches read through 8×8 kernels on a 7×7 grid" in c for c in captions)
    shipped, runs = grid_tables(app)
    assert shipped["architecture"][0].endswith("MLP ×2, 8×8 patch kernels")
    assert "Fast" not in set(runs["served"])  # the grid's 4x4 run of its size is not Fast
    assert "Large" in set(runs["served"])


def test_grid_search_tab_without_results_shows_a_note(monkeypatch, tmp_path, tiny_models_dir):
    for name in ("manifest.json", "vit-fast.onnx", "vit-large.onnx"):
        (tmp_path / name).write_bytes((tiny_models_dir / name).read_bytes())
    monkeypatch.setenv("VIT_DIGITS_MODELS_DIR", str(tmp_path))
    app = open_tab(run_app(), "Grid search")
    assert any("No grid results yet" in info.value for info in app.tabs[1].info)


def test_app_does_not_import_torch(tiny_models_dir):
    """The whole app, run once with a prediction, in a fresh interpreter without torch loaded."""
    code = f"""
import os, sys
os.environ["VIT_DIGITS_MODELS_DIR"] = {str(tiny_models_dir)!r}
from streamlit.testing.v1 import AppTest
app = AppTest.from_file({APP!r}, default_timeout={TIMEOUT_S}).run()
app.radio(key="source").set_value("Upload an image").run()
app.file_uploader[0].set_value(("seven.png", {seven_png()!r}, "image/png")).run()
assert not app.exception and app.metric, app.exception
assert "torch" not in sys.modules, "app.py imported torch"
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
