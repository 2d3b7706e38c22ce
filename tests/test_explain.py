"""Occlusion maps, the contrastive map, deletion / insertion curves and the error-analysis file.

Known answers come from a synthetic ONNX model that follows the export's contract but whose
logits are a fixed linear function of the ink in each 4x4 patch, so every probability a test
checks is worked out by hand.
"""

import functools
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from custom_modules.serving.calibration import reliability_bins
from custom_modules.serving.error_analysis import (
    artifact_path,
    build_error_analysis,
    confusion_matrix,
    file_sha256,
    load_error_analysis,
)
from custom_modules.serving.explain import (
    OCCLUSION_BUDGET_MACS,
    curve_area,
    deletion_inputs,
    explain,
    inked_patches,
    insertion_inputs,
    is_declined,
    occluded,
    occlusion_by_default,
    patch_ranking,
    verdict,
)
from custom_modules.serving.model import OnnxViT
from custom_modules.serving.overlay import signed_overlay

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_FAST = ROOT / "models" / "vit-fast.onnx"
GAIN = 8.0  # the synthetic model's logit for digit 0 per unit of mean ink in the key patch


def patch_linear_model(path: Path, weights: np.ndarray) -> Path:
    """An ONNX model with the export's signature: logits = (mean ink per patch) @ weights.

    `weights` is (49, 10); its one "head" of attention and its rollout are the mean ink per patch.
    """
    pool = helper.make_node("AveragePool", ["input"], ["ink"], kernel_shape=[4, 4], strides=[4, 4])
    flat = helper.make_node("Reshape", ["ink", "flat_shape"], ["ink_flat"])
    logits = helper.make_node("MatMul", ["ink_flat", "weights"], ["logits"])
    attention = helper.make_node("Identity", ["ink"], ["cls_attention_0"])
    rollout = helper.make_node("Reshape", ["ink", "rollout_shape"], ["attention_rollout"])
    initializers = [
        numpy_helper.from_array(np.array([-1, 49], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, 7, 7], np.int64), "rollout_shape"),
        numpy_helper.from_array(weights.astype(np.float32), "weights"),
    ]
    graph = helper.make_graph(
        [pool, flat, logits, attention, rollout],
        "patch_linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("cls_attention_0", TensorProto.FLOAT, ["batch", 1, 7, 7]),
            helper.make_tensor_value_info("attention_rollout", TensorProto.FLOAT, ["batch", 7, 7]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


KEY, DECOY = 24, 10  # the patch that decides digit 0 (the centre) and one that decides nothing


@pytest.fixture(scope="module")
def key_patch_model(tmp_path_factory) -> OnnxViT:
    """Digit 0's logit is GAIN x the mean ink of patch KEY; every other logit is 0."""
    weights = np.zeros((49, 10))
    weights[KEY, 0] = GAIN
    return OnnxViT(patch_linear_model(tmp_path_factory.mktemp("synthetic") / "key.onnx", weights))


def with_ink(*patches: int) -> np.ndarray:
    """A (1, 1, 28, 28) input whose `patches` are fully inked (1.0), the rest background."""
    x = np.zeros((1, 1, 28, 28), np.float32)
    for patch in patches:
        row, col = divmod(patch, 7)
        x[0, 0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] = 1.0
    return x


def p_zero(key_ink: float) -> float:
    """p(digit 0) of the key-patch model when patch KEY holds `key_ink` mean ink."""
    return math.exp(GAIN * key_ink) / (math.exp(GAIN * key_ink) + 9)


def test_the_patch_that_holds_the_ink_ranks_first(key_patch_model):
    explanation = explain(key_patch_model, with_ink(KEY, DECOY))
    occlusion = explanation.occlusion()
    assert explanation.ranked[0] == 0
    assert occlusion.reshape(-1)[KEY] == pytest.approx(p_zero(1) - p_zero(0), abs=1e-5)
    assert np.count_nonzero(np.abs(occlusion) > 1e-6) == 1  # the decoy and blank patches: 0
    assert patch_ranking(occlusion)[0] == KEY


def test_the_contrast_map_says_which_patch_speaks_for_which_digit(tmp_path):
    """Digit 3 reads patch 8, digit 5 patch 40: "why 3 and not 5" is + at 8 and - at 40."""
    weights = np.zeros((49, 10))
    weights[8, 3], weights[40, 5] = 3.0, 2.0
    model = OnnxViT(patch_linear_model(tmp_path / "two.onnx", weights))
    explanation = explain(model, with_ink(8, 40))
    contrast = explanation.contrast(3, 5).reshape(-1)
    assert explanation.ranked[:2].tolist() == [3, 5]
    assert contrast[8] > 0 > contrast[40]
    assert np.count_nonzero(np.abs(contrast) > 1e-6) == 2
    np.testing.assert_allclose(explanation.contrast(5, 3), -explanation.contrast(3, 5), atol=1e-6)


def test_explain_is_one_batch_with_the_same_numbers_as_one_call_per_variant(tiny_model_path):
    model = OnnxViT(tiny_model_path)
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    x[:, :, :, :8] = 0  # the first two columns of patches hold no ink
    explanation = explain(model, x)
    alone = model.predict_with_rollout(x)
    np.testing.assert_allclose(explanation.prediction.probabilities, alone.probabilities, atol=1e-6)
    np.testing.assert_allclose(explanation.prediction.rollout, alone.rollout, atol=1e-6)
    for got, expected in zip(
        explanation.prediction.cls_attentions, alone.cls_attentions, strict=True
    ):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    given = explain(model, x, alone)  # the prediction given: only the variants run
    np.testing.assert_allclose(
        given.occluded_probabilities, explanation.occluded_probabilities, atol=1e-6
    )
    assert given.prediction is alone
    inked = inked_patches(x)
    assert len(inked) == 49 - 14
    for patch in range(49):
        variant = occluded(x, np.array([patch]))
        assert not variant.reshape(7, 4, 7, 4)[patch // 7, :, patch % 7].any()
        expected = model.predict(variant)[0][0] if patch in inked else alone.probabilities[0]
        np.testing.assert_allclose(explanation.occluded_probabilities[patch], expected, atol=1e-5)


def test_deletion_and_insertion_curves_have_the_areas_worked_out_by_hand(key_patch_model):
    x = with_ink(KEY, DECOY)
    full, none = p_zero(1), p_zero(0)
    rest = [p for p in range(49) if p not in (KEY, DECOY)]

    def area(order, make):
        return curve_area(key_patch_model.predict(make(x, np.array(order)))[0][:, 0])

    # key first: the probability falls at once; decoy first: one step later
    assert area([KEY, DECOY, *rest], deletion_inputs) == pytest.approx(
        ((full + none) / 2 + 48 * none) / 49, abs=1e-5
    )
    assert area([DECOY, KEY, *rest], deletion_inputs) == pytest.approx(
        (full + (full + none) / 2 + 47 * none) / 49, abs=1e-5
    )
    assert area([KEY, DECOY, *rest], insertion_inputs) == pytest.approx(
        ((none + full) / 2 + 48 * full) / 49, abs=1e-5
    )
    assert area([*rest, DECOY, KEY], insertion_inputs) == pytest.approx(
        (48 * none + (none + full) / 2) / 49, abs=1e-5
    )
    # the occlusion map's own order is the faithful one
    order = patch_ranking(explain(key_patch_model, x).occlusion())
    assert area(order, deletion_inputs) < area([DECOY, KEY, *rest], deletion_inputs)


def test_deletion_ends_blank_and_insertion_ends_at_the_input():
    x = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)
    order = np.random.default_rng(2).permutation(49)
    deletion, insertion = deletion_inputs(x, order), insertion_inputs(x, order)
    assert deletion.shape == insertion.shape == (50, 1, 28, 28)
    np.testing.assert_array_equal(deletion[0], x[0])
    assert not deletion[-1].any() and not insertion[0].any()
    np.testing.assert_allclose(insertion[-1], x[0])
    np.testing.assert_allclose(deletion + insertion, np.repeat(x, 50, axis=0))


def test_patch_ranking_breaks_ties_at_random_only_when_asked():
    saliency = np.zeros(49)
    saliency[[5, 7]] = [2.0, 1.0]
    ranked = patch_ranking(saliency)
    assert ranked[:3].tolist() == [5, 7, 0]
    shuffled = patch_ranking(saliency, np.random.default_rng(0))
    assert shuffled[:2].tolist() == [5, 7] and sorted(shuffled[2:]) == sorted(ranked[2:])
    assert shuffled[2:].tolist() != ranked[2:].tolist()


@pytest.mark.skipif(not SHIPPED_FAST.exists(), reason="no shipped Fast model")
def test_shipped_fast_finds_the_only_inked_patch():
    """A stroke inside one patch: blanking it leaves a blank page, blanking the others nothing.
    (Which way p moves is the model's: step 15's Fast reads a blank page as a surer 1 than this
    dash, so blanking the dash raises p(1).)"""
    x = np.zeros((1, 1, 28, 28), np.float32)
    x[0, 0, 13:15, 12:16] = 1.0  # inside patch (3, 3)
    explanation = explain(OnnxViT(SHIPPED_FAST), x)
    occlusion = explanation.occlusion().reshape(-1)
    assert np.flatnonzero(occlusion).tolist() == [24]
    assert patch_ranking(np.abs(occlusion))[0] == 24


def test_verdict_names_the_runner_up_and_calls_close_calls():
    clear = verdict(np.array([0.9, 0.02, *[0.01] * 8]), declined=False)
    assert (clear.digit, clear.close_call, clear.contrast_shown) == (0, False, False)
    close = verdict(np.array([0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5]), declined=False)
    assert (close.digit, close.runner_up, close.close_call) == (4, 9, True)
    somewhat = verdict(np.array([0.0, 0.0, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.2]), False)
    assert somewhat.contrast_shown and not somewhat.close_call


def test_declining_uses_the_models_rule_or_else_the_provisional_threshold(key_patch_model):
    prediction = explain(key_patch_model, with_ink(DECOY)).prediction  # uniform: p = 0.1
    assert is_declined(prediction, key_patch_model, 0.5)
    assert not is_declined(prediction, key_patch_model, 0.05)
    assert not is_declined(prediction, key_patch_model, float("nan"))  # no threshold


def test_signed_overlay_paints_for_green_and_against_magenta():
    saliency = np.zeros((7, 7))
    saliency[0, 0], saliency[6, 6] = 1.0, -1.0
    image = signed_overlay(np.zeros((28, 28), np.uint8), saliency, size=112)
    assert image.shape == (112, 112, 3)
    green, magenta, untouched = image[0, 0], image[-1, -1], image[50, 50]
    assert green[1] > green[0] and magenta[0] > magenta[1] and not untouched.any()


def test_occlusion_runs_unasked_only_when_its_49_runs_fit_the_budget():
    largest = OCCLUSION_BUDGET_MACS // (49 * 50)  # parameters
    assert occlusion_by_default(largest) and not occlusion_by_default(largest + 1)
    assert occlusion_by_default(72_074) and not occlusion_by_default(1_074_698)  # Fast, Large


@pytest.mark.parametrize("size", [84, 112, 168, 224])
def test_signed_overlay_is_the_blend_done_at_full_size(size):
    """Blending at 28x28 and blowing up must give exactly the image blended pixel by pixel."""
    rng = np.random.default_rng(size)
    pixels = rng.integers(0, 256, (28, 28)).astype(np.uint8)
    saliency = rng.normal(size=(7, 7)).astype(np.float32)
    ones = functools.partial(np.ones, dtype=np.float32)
    big = np.kron(saliency / np.abs(saliency).max(), ones((size // 7, size // 7)))[..., None]
    grey = np.kron(pixels.astype(np.float32), ones((size // 28, size // 28)))[..., None]
    green, magenta = np.float32([40, 230, 90]), np.float32([230, 60, 200])
    colour = np.where(big >= 0, green, magenta)
    alpha = np.abs(big) * np.float32(0.7)
    expected = np.clip(np.rint(grey * (1 - alpha) + colour * alpha), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(signed_overlay(pixels, saliency, size), expected)


def test_overlays_refuse_a_size_the_input_does_not_divide():
    with pytest.raises(ValueError, match="multiple of 28"):
        signed_overlay(np.zeros((28, 28), np.uint8), np.ones((7, 7)), size=100)


# ------------------------------------------------------------------------ error analysis


def test_error_analysis_matches_a_recount_one_digit_at_a_time(tiny_model_path, tmp_path):
    rng = np.random.default_rng(3)
    images = (rng.random((60, 28, 28)) * 255).astype(np.uint8)
    images[:, :6] = 0
    labels = rng.integers(0, 10, 60)
    model = OnnxViT(tiny_model_path)
    built = build_error_analysis(model, "Fast", images, labels, val_images=images[:30])
    path = built.save(artifact_path(tmp_path, "Fast INT8"))
    assert path.name == "error_analysis-fast-int8.npz" and path.stat().st_size < 300_000
    analysis = load_error_analysis(path)
    assert analysis.model_sha256 == file_sha256(tiny_model_path)

    predicted, confidence, all_probabilities = [], [], []
    for image in images:  # the recount: one digit at a time, no batching
        probabilities = model.predict((image.astype(np.float32) / 255)[None, None])[0][0]
        predicted.append(int(probabilities.argmax()))
        confidence.append(float(probabilities.max()))
        all_probabilities.append(probabilities)
    expected = np.zeros((10, 10), int)
    for label, guess in zip(labels, predicted, strict=True):
        expected[label, guess] += 1
    np.testing.assert_array_equal(analysis.confusion, expected)
    wrong = [i for i in range(60) if predicted[i] != labels[i]]
    assert sorted(analysis.wrong_index.tolist()) == wrong
    for slot, index in enumerate(analysis.wrong_index):
        np.testing.assert_array_equal(analysis.wrong_images[slot], images[index])
        assert analysis.wrong_labels[slot] == labels[index]
        assert analysis.wrong_predicted[slot] == predicted[index]
        assert analysis.wrong_confidence[slot] == pytest.approx(confidence[index], abs=1e-5)
        single = explain(model, (images[index].astype(np.float32) / 255)[None, None])
        np.testing.assert_allclose(analysis.wrong_occlusion[slot], single.occlusion(), atol=2e-3)
    assert (np.diff(analysis.wrong_confidence) <= 0).all()  # most confident mistakes first
    recounted_bins = reliability_bins(np.array(all_probabilities), labels)
    assert len(analysis.reliability) == len(recounted_bins)
    for stored, recounted in zip(analysis.reliability, recounted_bins, strict=True):
        assert stored == pytest.approx(recounted, abs=1e-5)
    assert analysis.decline_threshold == pytest.approx(np.quantile(confidence[:30], 0.01), 1e-4)
    assert analysis.accuracy == pytest.approx(np.mean(np.array(predicted) == labels))


def test_an_unreadable_artifact_is_none(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert load_error_analysis(tmp_path / "broken.npz") is None
    assert load_error_analysis(tmp_path / "missing.npz") is None


def test_confusion_matrix_rows_are_the_true_digit():
    assert confusion_matrix([1, 1, 2], [1, 2, 2])[1].tolist() == [0, 1, 1, *[0] * 7]


def test_the_validation_digits_are_those_split_mnist_holds_out():
    from custom_modules.grid.error_analysis import validation_images
    from custom_modules.training.data import split_mnist
    from tests.test_pipeline import synthetic_mnist

    mnist = synthetic_mnist(n_train=300)
    ours = validation_images(mnist, val_size=40, seed=5)
    theirs = split_mnist(mnist, val_size=40, seed=5).val_images.numpy()
    np.testing.assert_allclose(ours[:, None] / 255.0, theirs, atol=1e-7)
