"""The app's verdicts and explanations with Streamlit's AppTest: a blank upload, a digit, a
declined input and a close call each get their own message; the maps and the error-analysis tab.
"""

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from custom_modules.serving.error_analysis import artifact_path, build_error_analysis
from custom_modules.serving.explain import verdict
from custom_modules.serving.manifest import read_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.serving.preprocess import preprocess_image
from custom_modules.serving.upload import read_upload
from tests.test_app import APP, TIMEOUT_S, image_captions, open_tab, seven_png, upload

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models"
NOT_A_DIGIT = "This does not look like a digit"
NO_DIGIT_FOUND = "No digit found: the image is blank, too faint or too small."


def models_copy(tiny_models_dir: Path, folder: Path, **entry_changes) -> Path:
    """The tiny models in `folder`, each manifest entry updated with `entry_changes`."""
    shutil.copytree(tiny_models_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["models"].values():
        entry.update(entry_changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def with_error_analysis(
    folder: Path, name: str, decline_threshold: float | None = None, stale: bool = False
) -> None:
    """Write `name`'s error-analysis file, built on 40 random "digits" (`stale`: as if made
    with another version of the model file)."""
    rng = np.random.default_rng(0)
    images = (rng.random((40, 28, 28)) * 255).astype(np.uint8)
    labels = rng.integers(0, 10, 40)
    model = OnnxViT(folder / f"vit-{name.lower()}.onnx")
    analysis = build_error_analysis(model, name, images, labels)
    if decline_threshold is not None:
        analysis = dataclasses.replace(analysis, decline_threshold=decline_threshold)
    if stale:
        analysis = dataclasses.replace(analysis, model_sha256="0" * 64)
    analysis.save(artifact_path(folder, name))


def run_app(monkeypatch, folder: Path) -> AppTest:
    monkeypatch.setenv("VIT_DIGITS_MODELS_DIR", str(folder))
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    assert not app.exception, app.exception
    return app


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def texts(elements) -> list[str]:
    return [element.value for element in elements]


@pytest.fixture
def tiny(tiny_models_dir: Path, tmp_path: Path) -> Path:
    return models_copy(tiny_models_dir, tmp_path / "models")


def test_a_blank_upload_says_no_digit_was_found_and_nothing_else(monkeypatch, tiny):
    with_error_analysis(tiny, "Fast", decline_threshold=0.99)  # a rule that declines anything
    app = upload(run_app(monkeypatch, tiny), "blank.png", png(Image.new("L", (64, 64), 0)))
    assert texts(app.warning) == [NO_DIGIT_FOUND]  # not "does not look like a digit"
    assert any("Draw a digit" in info for info in texts(app.info))
    assert not app.metric and not app.expander


@pytest.mark.skipif(not (SHIPPED / "manifest.json").exists(), reason="no shipped models")
def test_a_drawn_seven_gets_the_digit_and_the_maps_that_explain_it(monkeypatch):
    app = upload(run_app(monkeypatch, SHIPPED), "seven.png", seven_png())
    assert app.metric[0].label == "Predicted digit" and app.metric[0].value == "7"
    assert not any(NOT_A_DIGIT in warning for warning in texts(app.warning))
    assert "Why 7?" in texts(app.subheader)
    captions = image_captions(app)
    first_maps = [c for c in captions if c.startswith(("attention rollout", "occlusion", "why "))]
    fast = read_manifest(SHIPPED).models["Fast"]  # the app's first model
    measured = fast.extra.get("faithfulness", {}).get("most_faithful", "rollout")
    first = "attention rollout" if measured == "rollout" else "occlusion, p(7)"
    assert first_maps[0].startswith(first)  # the most faithful first
    assert any(c.startswith("occlusion, p(7): largest drop ") for c in captions)
    assert sum(c.startswith("block ") for c in captions) == 2 * 4  # every head of Fast
    per_digit = [c.split(")")[0] for c in captions if c.startswith("p(")]
    assert per_digit == [f"p({d}" for d in range(10)]  # an occlusion map for every digit
    how_to_read = " ".join(texts(app.caption) + texts(app.markdown))
    for name in ("Rollout", "Occlusion", "Raw attention per head"):
        assert f"**{name}**" in how_to_read


def test_occlusion_of_a_slow_model_waits_for_the_user_to_turn_it_on(monkeypatch, tiny):
    slow = models_copy(tiny, tiny.parent / "slow", params=10**6)  # 49 runs: 2.45 G multiply-adds
    app = upload(run_app(monkeypatch, slow), "seven.png", seven_png())
    toggle = app.toggle(key="occlusion-Fast")
    assert toggle.value is False
    assert any("Occlusion is off" in caption for caption in texts(app.caption))
    assert not any(c.startswith(("occlusion", "why ")) for c in image_captions(app))
    assert "attention rollout, all blocks" in image_captions(app)
    toggle.set_value(True).run()
    assert any(c.startswith("occlusion, p(") for c in image_captions(app))
    assert not any("Occlusion is off" in caption for caption in texts(app.caption))


def test_the_map_measured_most_faithful_comes_first(monkeypatch, tiny):
    for first, caption in (("occlusion", "occlusion, p("), ("rollout", "attention rollout")):
        folder = models_copy(tiny, tiny.parent / first, faithfulness={"most_faithful": first})
        app = upload(run_app(monkeypatch, folder), "seven.png", seven_png())
        maps = [c for c in image_captions(app) if c.startswith(("attention rollout", "occlusion"))]
        assert maps[0].startswith(caption), maps


@pytest.mark.parametrize("rule", ["serving API", "provisional"])
def test_a_declined_input_says_it_is_no_digit_and_keeps_the_details(monkeypatch, tiny, rule):
    if rule == "serving API":  # the manifest's rule, applied by OnnxViT
        models_copy(tiny, tiny.parent / "declining", decline_below=0.99)
        folder = tiny.parent / "declining"
    else:  # the provisional threshold of the error-analysis file
        with_error_analysis(tiny, "Fast", decline_threshold=0.99)
        folder = tiny
    app = upload(run_app(monkeypatch, folder), "seven.png", seven_png())
    assert any(NOT_A_DIGIT in warning for warning in texts(app.warning))
    assert not app.metric  # no big predicted digit
    assert [e.label for e in app.expander][:2] == [
        "Probabilities anyway",
        "The maps anyway (for a drawing the model declined)",
    ]
    assert app.expander[0].get("vega_lite_chart")  # the ten probabilities
    assert "attention rollout, all blocks" in image_captions(app)


def test_an_undeclined_input_of_the_same_model_gets_its_digit(monkeypatch, tiny):
    with_error_analysis(tiny, "Fast", decline_threshold=0.0)
    app = upload(run_app(monkeypatch, tiny), "seven.png", seven_png())
    assert not any(NOT_A_DIGIT in warning for warning in texts(app.warning))
    assert app.metric[0].value in list("0123456789")


def test_a_close_call_names_both_digits(monkeypatch, tiny):
    """The tiny random models spread their probability: the runner-up is close to the top."""
    x = preprocess_image(read_upload(seven_png()).pixels)
    probabilities = OnnxViT(tiny / "vit-fast.onnx").predict(x)[0][0]
    judged = verdict(probabilities, declined=False)
    assert judged.close_call and judged.contrast_shown
    app = upload(run_app(monkeypatch, tiny), "seven.png", seven_png())
    a, b = judged.digit, judged.runner_up
    assert any(info.startswith(f"**Not sure: {a} or {b}.**") for info in texts(app.info))
    assert app.metric[0].value == str(a)
    assert f"why {a} and not {b}" in image_captions(app)


def test_the_error_analysis_tab_without_files_says_how_to_make_them(monkeypatch, tiny):
    app = open_tab(run_app(monkeypatch, tiny), "Error analysis")
    assert [tab.label for tab in app.tabs][-1] == "Error analysis"
    assert any("vit-digits-error-analysis" in info for info in texts(app.tabs[-1].info))


def test_the_error_analysis_tab_shows_confusion_reliability_and_mistakes(monkeypatch, tiny):
    with_error_analysis(tiny, "Fast")
    with_error_analysis(tiny, "Large")
    app = open_tab(run_app(monkeypatch, tiny), "Error analysis")
    tab = app.tabs[-1]
    assert tab.selectbox(key="analysis_model").options == ["Fast", "Large"]
    assert len(tab.get("vega_lite_chart")) == 2  # confusion matrix, reliability diagram
    mistakes = [c for c in image_captions(app) if "→" in c]
    assert 0 < len(mistakes) <= 40
    caption = " ".join(texts(tab.caption))
    assert "Fast on the MNIST test set: 40 digits" in caption
    tab.selectbox(key="analysis_model").set_value("Large").run()
    assert "Large on the MNIST test set: 40 digits" in " ".join(texts(app.tabs[-1].caption))


def test_an_analysis_of_an_older_model_file_is_flagged_and_its_threshold_unused(monkeypatch, tiny):
    with_error_analysis(tiny, "Fast", decline_threshold=0.99, stale=True)
    app = upload(run_app(monkeypatch, tiny), "seven.png", seven_png())
    assert not any(NOT_A_DIGIT in warning for warning in texts(app.warning))  # not declined
    assert app.metric
    open_tab(app, "Error analysis")
    assert any("earlier version of Fast's model file" in w for w in texts(app.tabs[-1].warning))
