"""Real inputs: the made-up sets, calibration, the decline rule, and the style augmentation."""

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from custom_modules.export.calibrate import decline_threshold, fit_temperature
from custom_modules.serving.calibration import (
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)
from custom_modules.serving.errors import ModelFileError
from custom_modules.serving.manifest import read_manifest
from custom_modules.serving.model import OnnxViT, softmax
from custom_modules.serving.preprocess import pen_ratio, preprocess_image
from custom_modules.synthetic.handwriting import (
    CANVAS_SIZE,
    draw_as_strokes,
    font_digit,
    other_hand,
    pen_path,
    photo_of_paper,
    skeleton,
)
from custom_modules.synthetic.non_digits import GLYPHS, make_non_digits
from custom_modules.training.style import (
    StyleAugment,
    augment_batch,
    continental_forms,
    pen_width,
    reframe_like_serving,
)

ROOT = Path(__file__).resolve().parents[1]


def a_seven() -> np.ndarray:
    """A 28x28 uint8 '7' drawn with lines, as MNIST would hold it."""
    image = Image.new("L", (28, 28))
    ImageDraw.Draw(image).line([(7, 6), (20, 6), (11, 23)], fill=255, width=3)
    return np.asarray(image)


# ------------------------------------------------------------------------------- calibration


def test_ece_is_zero_when_confidence_matches_accuracy_and_counts_the_gap_otherwise() -> None:
    # 10 inputs at confidence 0.8, 8 of them right: calibrated
    probabilities = np.full((10, 2), 0.2)
    probabilities[:, 0] = 0.8
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.0)
    # all right at 0.8: 0.2 too unsure
    assert expected_calibration_error(probabilities, np.zeros(10, int)) == pytest.approx(0.2)
    bins = reliability_bins(probabilities, labels)
    assert len(bins) == 1 and bins[0]["count"] == 10 and bins[0]["accuracy"] == 0.8


def test_fit_temperature_recovers_the_temperature_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 10))
    true_temperature = 2.5
    probabilities = softmax(logits / true_temperature)
    labels = np.array([rng.choice(10, p=p) for p in probabilities])
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.1)
    nll_fitted = negative_log_likelihood(softmax(logits / fitted), labels)
    assert nll_fitted < negative_log_likelihood(softmax(logits), labels)


def test_decline_threshold_declines_the_asked_share_of_correct_inputs() -> None:
    confidence = np.linspace(0.5, 1.0, 1001)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    threshold = decline_threshold(probabilities, np.zeros(1001, int), rate=0.02)
    assert (confidence < threshold).mean() == pytest.approx(0.02, abs=0.002)


# --------------------------------------------------------------------- serving's decline rule


def test_onnx_vit_declines_below_its_rule_and_applies_its_temperature(tmp_path: Path) -> None:
    x = preprocess_image(a_seven())
    plain = OnnxViT(ROOT / "models" / "vit-fast.onnx")
    logits = plain.predict_logits(x)
    hot_top = float(softmax(logits / 3.0).max())  # the top probability the rule reads
    assert hot_top < 1.0
    hot = OnnxViT(plain.path, temperature=3.0, decline_below=(hot_top + 1.0) / 2)
    classification = hot.classify(x)
    np.testing.assert_allclose(classification.probabilities, softmax(logits / 3.0), rtol=1e-5)
    assert classification.declined.tolist() == [True]
    assert not plain.classify(x).declined.any()  # no rule: never declines
    assert hot.predict_with_rollout(x).declined.tolist() == [True]
    with pytest.raises(ValueError):
        OnnxViT(plain.path, temperature=0.0)


def test_manifest_rejects_a_bad_temperature_or_rule(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models)
    spec = json.loads((models / "manifest.json").read_text())
    name = next(iter(spec["models"]))
    for key, bad in (("temperature", -1), ("decline_below", 1.5), ("temperature", "hot")):
        broken = json.loads(json.dumps(spec))
        broken["models"][name][key] = bad
        (models / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(ModelFileError, match=key):
            read_manifest(models)


# ---------------------------------------------------------------- the shipped models, fixed set


def fixed_font_digits() -> tuple[np.ndarray, np.ndarray]:
    """200 digits from fonts the training never saw, drawn on the canvas: a fixed set."""
    rng = np.random.default_rng(11)
    labels = np.arange(200) % 10
    frames = [preprocess_image(font_digit(int(label), rng)) for label in labels]
    return np.concatenate(frames), labels


def fixed_non_digits() -> np.ndarray:
    """200 letters, signs, scribbles and shapes (no digit pairs: they need MNIST), fixed."""
    pixels, _ = make_non_digits(
        200, 31, np.zeros((2, 28, 28), np.uint8), np.array([0, 1]), weights=(0.5, 0.25, 0.25, 0)
    )
    return pixels.astype(np.float32)[:, None] / 255


@pytest.fixture(scope="module")
def shipped() -> dict:
    return read_manifest(ROOT / "models").models


def test_every_shipped_model_has_a_fitted_temperature_and_decline_rule(shipped: dict) -> None:
    for name, info in shipped.items():
        assert info.temperature != 1.0, f"{name}: no temperature fitted"
        assert 0.0 < info.decline_below < 1.0, f"{name}: no decline rule"
        calibration = info.extra["calibration"]
        # the temperature minimises the validation NLL; an ECE already under 0.5 % may tick up
        # by a few hundredths of a point (Large step 19: 0.35 -> 0.38 %), so it is held to the
        # target instead
        assert calibration["val_nll_after"] <= calibration["val_nll_before"], name
        assert calibration["val_ece_after"] <= 0.01, name
        assert calibration["test_ece_after"] <= 0.01, name  # the models issue's target
        # the target: at most 2 % of the drawn digits it reads correctly are declined
        assert info.extra["real_inputs"]["drawn_correct_declined"] <= 0.02, name


def test_shipped_models_decline_non_digits_and_keep_digits_on_a_fixed_set(shipped: dict) -> None:
    digits, labels = fixed_font_digits()
    non_digits = fixed_non_digits()
    for name, info in shipped.items():
        model = OnnxViT.from_info(info)
        read = model.classify(digits)
        right = read.probabilities.argmax(1) == labels
        assert right.mean() >= 0.85, f"{name} reads {right.mean():.0%} of the font digits"
        # font digits are odd shapes: the shipped files decline 3.1 % (Large) to 7.3 % (Fast,
        # step 15) of those they read (step 13's Fast 4.9 %, its INT8 5.4 %; step 11's 2.7-3.3 %):
        # each robust Fast cycle declined more of them (models/README.md, the font shapes)
        assert read.declined[right].mean() <= 0.08, f"{name} declines read digits"
        declined = model.classify(non_digits).declined.mean()
        # measured on this set: Fast 0.97, Large 0.885 (Large INT8 0.89), past the models
        # issue's 0.8; a model without a rule declines none.
        trained_to_decline = "history" in info.extra
        floor = 0.4 if trained_to_decline else 0.1
        assert declined >= floor, f"{name} declines only {declined:.0%} of the non-digits"


# -------------------------------------------------------------------------- the made-up inputs


def test_made_up_digits_are_canvas_drawings_and_photos_the_app_can_read() -> None:
    rng = np.random.default_rng(0)
    seven = a_seven()
    for canvas in (draw_as_strokes(seven, rng), other_hand(seven, rng), font_digit(7, rng)):
        assert canvas.shape == (CANVAS_SIZE, CANVAS_SIZE, 4) and canvas.dtype == np.uint8
        assert preprocess_image(canvas) is not None
    photo = Image.open(io.BytesIO(photo_of_paper(draw_as_strokes(seven, rng), rng)))
    assert photo.format == "JPEG"
    assert preprocess_image(np.asarray(photo)) is not None


@pytest.mark.parametrize("pen", [0.08, 0.3, 0.5])
def test_a_drawn_digits_pen_is_the_asked_share_of_its_centre_lines_size(pen: float) -> None:
    canvas = draw_as_strokes(a_seven(), np.random.default_rng(0), pen_range=(pen, pen))
    ink = canvas[..., 3].astype(np.float32) / 255
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # the ink's box is the line's, widened by the pen
    assert pen_ratio(digit) == pytest.approx(pen / (1 + pen), abs=0.02)


def test_skeleton_thins_a_thick_bar_to_one_pixel() -> None:
    bar = np.zeros((20, 20), bool)
    bar[5:15, 3:17] = True
    thin = skeleton(bar)
    assert thin.any() and thin.sum() < 20
    assert thin[:, 8].sum() == 1  # one pixel across the bar's middle


def test_pen_path_keeps_a_blob_filled_where_the_centre_line_alone_is_a_stroke() -> None:
    ys, xs = np.mgrid[:56, :56]
    head = (ys - 16) ** 2 + (xs - 28) ** 2 <= 10**2  # a 9's loop closed by a thick pen
    nine = head | ((abs(xs - 36) <= 2) & (ys >= 16) & (ys <= 50))
    inside = (ys - 16) ** 2 + (xs - 28) ** 2 <= 5**2
    assert (skeleton(nine) & inside).sum() < 10  # the centre line crosses the blob as a line
    assert (pen_path(nine) & inside).sum() > 0.8 * inside.sum()
    ring = head & ((ys - 16) ** 2 + (xs - 28) ** 2 >= 8**2)  # an open loop: its line suffices
    assert np.array_equal(pen_path(ring), skeleton(ring))


def test_a_photo_frames_the_whole_drawing_even_at_the_canvas_edge() -> None:
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE, 4), np.uint8)
    canvas[:, :, :3] = 255
    canvas[:, -12:, 3] = 255  # a bar along the canvas's right edge
    for seed in range(10):
        photo = np.asarray(
            Image.open(io.BytesIO(photo_of_paper(canvas, np.random.default_rng(seed)))).convert("L")
        )
        dark = photo < 120
        assert dark.sum() > 0.8 * 12 * CANVAS_SIZE, seed  # the whole bar is in the photo
        assert np.nonzero(dark)[1].max() < photo.shape[1] - 10, seed  # with paper beside it


def test_non_digit_glyphs_hold_no_digit_or_look_alike() -> None:
    assert not set(GLYPHS) & set("0123456789OoIlSsZzBbgq|/")
    pixels, kinds = make_non_digits(40, 0, np.stack([a_seven()] * 2), np.array([7, 1]))
    assert pixels.shape == (40, 28, 28) and pixels.dtype == np.uint8
    assert (pixels.reshape(40, -1).max(1) > 0).all()  # every one holds ink
    assert set(kinds.tolist()) <= {0, 1, 2, 3}


# ------------------------------------------------------------------------- style augmentation


def test_reframing_in_torch_matches_the_served_preprocessing() -> None:
    image = np.zeros((28, 28), np.uint8)
    image[2:14, 3:9] = a_seven()[6:18, 8:14]  # a small digit in the top-left corner
    served = preprocess_image(image)[0, 0]
    framed = reframe_like_serving(torch.from_numpy(image).float().div(255)[None, None])[0, 0]
    framed = framed.numpy()
    # the same box and place (the resampling kernels differ: Lanczos there, bilinear here)
    assert np.corrcoef(served.ravel(), framed.ravel())[0, 1] > 0.9
    for axis in (0, 1):
        served_rows = np.flatnonzero((served >= 0.2).any(axis=axis))
        framed_rows = np.flatnonzero((framed >= 0.2).any(axis=axis))
        assert abs(served_rows[0] - framed_rows[0]) <= 1
        assert abs(served_rows[-1] - framed_rows[-1]) <= 1
    assert max(np.ptp(np.flatnonzero((framed >= 0.2).any(axis=a))) for a in (0, 1)) >= 18


def test_a_digit_at_mnist_size_is_served_exactly_as_training_frames_it() -> None:
    """Both place the centre of mass to the sub-pixel by bilinear sampling: a digit whose ink box
    is already 20 px comes out of `preprocess_image` as `reframe_like_serving` makes it."""
    rng = np.random.default_rng(0)
    seven = a_seven()
    rows, cols = np.flatnonzero(seven.any(1)), np.flatnonzero(seven.any(0))
    box = seven[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = 20 / max(box.shape)
    size = (round(box.shape[1] * scale), round(box.shape[0] * scale))
    digit = np.asarray(Image.fromarray(box).resize(size, Image.Resampling.NEAREST))
    for _ in range(6):
        image = np.zeros((28, 28), np.uint8)
        top, left = rng.integers(0, 28 - digit.shape[0]), rng.integers(0, 28 - digit.shape[1])
        image[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
        served = preprocess_image(image)[0, 0]
        trained = reframe_like_serving(torch.from_numpy(image).float().div(255)[None, None])
        np.testing.assert_allclose(served, trained[0, 0].numpy(), atol=1e-5)


def test_style_augmentation_keeps_the_ink_framed_and_is_seeded() -> None:
    images = torch.from_numpy(np.stack([a_seven()] * 8)).float().div(255)[:, None]
    first = augment_batch(images, StyleAugment(), torch.Generator().manual_seed(3))
    again = augment_batch(images, StyleAugment(), torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    assert first.shape == (8, 1, 28, 28) and first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first[0], first[1])  # each image gets its own style
    for image in first[:, 0].numpy() >= 0.2:  # framed as served: the longer side ~20 px
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        assert 17 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 22


def test_continental_forms_flag_the_ones_bar_the_sevens_and_leave_the_rest() -> None:
    one = np.zeros((28, 28), np.uint8)
    one[4:24, 13:16] = 255  # a plain upright stroke
    images = torch.from_numpy(np.stack([one, one, a_seven(), a_seven(), one])).float().div(255)
    images = images[:, None]
    labels = torch.tensor([1, 4, 7, 3, -1])  # a 1; the same stroke labelled 4; a 7, a 3; none
    formed = continental_forms(images, labels, 1.0, torch.Generator().manual_seed(0))
    added = (formed - images)[:, 0] > 0.5
    assert added[0, 4:12, :13].sum() >= 4  # a flag down to the left of the 1's top
    assert added[2].sum() >= 4 and not added[2, :8].any()  # the 7's bar, below its top
    assert not added[[1, 3, 4]].any()  # other digits and non-digits as they were
    assert torch.equal(continental_forms(images, labels, 0.0, torch.Generator()), images)


def test_restyling_with_labels_adds_continental_forms_only_when_asked() -> None:
    images = torch.from_numpy(np.stack([a_seven()] * 4)).float().div(255)[:, None]
    labels = torch.full((4,), 7)
    plain = augment_batch(images, StyleAugment(), torch.Generator().manual_seed(5))
    labelled = augment_batch(images, StyleAugment(), torch.Generator().manual_seed(5), labels)
    assert torch.equal(plain, labelled)  # the recipe the shipped models trained on, unchanged
    barred = StyleAugment(continental_p=1.0)
    assert not torch.equal(
        augment_batch(images, barred, torch.Generator().manual_seed(5), labels), plain
    )


def test_a_plain_share_keeps_mnist_style_and_only_frames_as_served() -> None:
    images = torch.from_numpy(np.stack([a_seven()] * 64)).float().div(255)[:, None]
    framed = reframe_like_serving(images)
    all_plain = augment_batch(images, StyleAugment(plain_p=1.0), torch.Generator().manual_seed(3))
    torch.testing.assert_close(all_plain, framed)
    half = augment_batch(images, StyleAugment(plain_p=0.5), torch.Generator().manual_seed(3))
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(half, framed, strict=True)])
    assert 16 <= kept.sum() <= 48  # about half kept as framed, the rest restyled
    restyled = augment_batch(images, StyleAugment(), torch.Generator().manual_seed(3))
    torch.testing.assert_close(half[~kept], restyled[~kept])  # the same style draws as without


def test_a_thick_pen_share_widens_that_share_most_and_leaves_other_recipes_draws_alone() -> None:
    images = torch.from_numpy(np.stack([a_seven()] * 64)).float().div(255)[:, None]
    images = F.pad(images, (6, 6, 6, 6))
    probs = StyleAugment().pen_p
    before = pen_width(images, probs, torch.Generator().manual_seed(4))
    assert torch.equal(before, pen_width(images, probs, torch.Generator().manual_seed(4), 0.0))
    widest = pen_width(images, probs, torch.Generator().manual_seed(4), thick_p=1.0)
    ink = (widest >= 0.5).sum(dim=(1, 2, 3))
    assert torch.all(ink == ink[0]) and ink[0] > (before >= 0.5).sum(dim=(1, 2, 3)).max()
    some = pen_width(images, probs, torch.Generator().manual_seed(4), thick_p=0.25)
    share = torch.tensor([torch.equal(a, b) for a, b in zip(some, widest, strict=True)])
    assert 6 <= share.sum() <= 28  # about a quarter drawn with the widest pen


def test_without_the_serving_frame_the_digit_keeps_mnist_size_and_place() -> None:
    images = torch.from_numpy(np.stack([a_seven()] * 8)).float().div(255)[:, None]
    still = StyleAugment(max_degrees=0, max_shear=0, aspect_range=(1, 1), elastic_p=0, blur_p=0)
    still = replace(still, pen_p=(0.0, 1.0, 0.0, 0.0))
    unframed = augment_batch(images, replace(still, reframe=False), torch.Generator())
    torch.testing.assert_close(unframed, images, atol=1e-5, rtol=0)  # nothing else changed
    framed = augment_batch(images, still, torch.Generator())
    assert not torch.allclose(framed, images, atol=0.05)
