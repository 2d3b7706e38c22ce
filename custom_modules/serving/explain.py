"""Maps that show cause: occlusion sensitivity per digit and "why A and not B", torch-free.

Occlusion (Zeiler & Fergus, 2014) on the ViT's own patches: each 4x4 patch of the 28x28 input is
blanked (set to 0, the background) and the model is run again; a patch's score is how much the
probability of a digit drops without it. All variants go through ONNX Runtime as one batch
(with the input itself, unless its prediction is given):

    explanation = explain(model, x)           # x: (1, 1, 28, 28) pixels in [0, 1]
    explanation = explain(model, x, model.predict_with_rollout(x))  # the same, in two calls
    explanation.occlusion()                   # (7, 7) drop in p(predicted digit) per patch
    explanation.contrast(4, 9)                # (7, 7) drop in p(4) - p(9): "why 4 and not 9"

A patch with no ink is already background: blanking it gives the same input, so its score is
exactly 0 and it is not run (a drawn digit inks about half of the 49 patches).

Also here: what the faithfulness benchmark needs (`patch_ranking`, deletion and insertion
curves), and the provisional rule that declines inputs (`Verdict`).
"""

import dataclasses
from dataclasses import dataclass
from functools import cache

import numpy as np

from custom_modules.contract import GRID_SIZE, IMAGE_SIZE, PATCH_SIZE
from custom_modules.serving.model import OnnxViT, Prediction

N_PATCHES = GRID_SIZE * GRID_SIZE
RUNNER_UP_SHOWN = 0.05  # a runner-up this probable gets its "why A and not B" map
CLOSE_CALL_RATIO = 0.5  # the runner-up has at least half the winner's probability: "not sure"
# The most work the app spends on occlusion per stroke unasked, in multiply-adds: Fast's 49 runs
# (177 M) fit, Large's (2.6 G) do not. Counted, not timed, so it holds on any machine.
OCCLUSION_BUDGET_MACS = 250_000_000


def occlusion_by_default(params: int) -> bool:
    """Whether the app occludes on every stroke without being asked: 49 runs of a model with
    `params` weights, each weight used about once per token (50), fit OCCLUSION_BUDGET_MACS."""
    return N_PATCHES * params * (N_PATCHES + 1) <= OCCLUSION_BUDGET_MACS


@cache
def patch_masks() -> np.ndarray:
    """(49, 28, 28) bool, read-only: patch i (row-major on the 7x7 grid) is True in mask i."""
    masks = np.zeros((N_PATCHES, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for i in range(N_PATCHES):
        row, col = divmod(i, GRID_SIZE)
        masks[
            i, row * PATCH_SIZE : (row + 1) * PATCH_SIZE, col * PATCH_SIZE : (col + 1) * PATCH_SIZE
        ] = True
    masks.flags.writeable = False
    return masks


def inked_patches(x: np.ndarray) -> np.ndarray:
    """Indices of the patches of one (1, 1, 28, 28) input that hold any ink (a pixel above 0)."""
    image = np.asarray(x, dtype=np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE)
    per_patch = image.reshape(GRID_SIZE, PATCH_SIZE, GRID_SIZE, PATCH_SIZE).max(axis=(1, 3))
    return np.flatnonzero(per_patch.reshape(-1) > 0)


def occluded(x: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """(len(patches), 1, 28, 28): the input once per patch, that patch blanked."""
    image = np.asarray(x, dtype=np.float32).reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    variants = np.repeat(image, len(patches), axis=0)
    variants[patch_masks()[patches][:, None]] = 0.0
    return variants


@dataclass(frozen=True)
class Explanation:
    """One input's prediction and what each patch does to it.

    `prediction` is the model's output for the input alone (batch of one, as `predict_with_rollout`
    gives it); `occluded_probabilities[i]` the ten probabilities with patch i blanked (row i of
    an empty patch is the input's own probabilities).
    """

    prediction: Prediction
    occluded_probabilities: np.ndarray  # (49, 10)

    @property
    def probabilities(self) -> np.ndarray:
        return self.prediction.probabilities[0]

    @property
    def ranked(self) -> np.ndarray:
        """The digits from most to least probable."""
        return np.argsort(-self.probabilities, kind="stable")

    def occlusion(self, digit: int | None = None) -> np.ndarray:
        """(7, 7): how much p(digit) drops when each patch is blanked (the predicted digit by
        default). Negative where blanking the patch makes the digit more likely."""
        digit = int(self.ranked[0]) if digit is None else digit
        drop = self.probabilities[digit] - self.occluded_probabilities[:, digit]
        return drop.reshape(GRID_SIZE, GRID_SIZE)

    def contrast(self, a: int, b: int) -> np.ndarray:
        """(7, 7): how much p(a) - p(b) drops when each patch is blanked. Positive: the patch
        speaks for a rather than b; negative: for b rather than a."""
        margin = self.probabilities[a] - self.probabilities[b]
        occluded_margin = self.occluded_probabilities[:, a] - self.occluded_probabilities[:, b]
        return (margin - occluded_margin).reshape(GRID_SIZE, GRID_SIZE)


def first_row(prediction: Prediction) -> Prediction:
    """A batched prediction cut to its first input, whatever per-input fields it carries."""

    def cut(value):
        if isinstance(value, np.ndarray) and value.ndim >= 1:
            return value[:1]
        if isinstance(value, list | tuple):
            return type(value)(cut(item) for item in value)
        return value

    fields = {f.name: cut(getattr(prediction, f.name)) for f in dataclasses.fields(prediction)}
    return dataclasses.replace(prediction, **fields)


def explain(model: OnnxViT, x: np.ndarray, prediction: Prediction | None = None) -> Explanation:
    """Occlude each inked patch of one (1, 1, 28, 28) input, all variants in one ORT call.

    Without `prediction` the input itself goes in the same batch (one call in all); with the
    input's own `prediction` (batch of one, e.g. already shown to the user) only the variants run.
    """
    if not isinstance(x, np.ndarray) or x.shape != (1, 1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected one (1, 1, 28, 28) input, got {getattr(x, 'shape', x)}")
    patches = inked_patches(x)
    variants = occluded(x, patches)
    if prediction is None:
        batched = model.predict_with_rollout(np.concatenate([x.astype(np.float32), variants]))
        prediction, variant_probabilities = first_row(batched), batched.probabilities[1:]
    elif len(patches):
        variant_probabilities = model.predict(variants)[0]
    else:
        variant_probabilities = np.empty((0, prediction.probabilities.shape[1]), np.float32)
    occluded_probabilities = np.repeat(prediction.probabilities[:1], N_PATCHES, axis=0)
    occluded_probabilities[patches] = variant_probabilities
    return Explanation(prediction, occluded_probabilities)


# ------------------------------------------------------------------------------ verdict


def is_declined(prediction: Prediction, model: OnnxViT, provisional_threshold: float) -> bool:
    """Does the model decline the (first) input of `prediction`? The one place that decides."""
    if getattr(model, "decline_below", 0.0) > 0:  # the serving API's rule, from the manifest
        return bool(prediction.declined[0])
    # PROVISIONAL, until the shipped models carry the serving API's rule (`decline_below` in
    # models/manifest.json): declined when the highest probability is below a threshold that
    # `vit-digits-error-analysis` set on the validation split (the 1st percentile of the
    # validation digits' highest probability) and stored in models/error_analysis-<name>.npz.
    # NaN (no artifact): no declining.
    return bool(np.max(prediction.probabilities[0]) < provisional_threshold)


@dataclass(frozen=True)
class Verdict:
    """What the app says about one prediction."""

    digit: int
    runner_up: int
    declined: bool  # not a digit, as far as the model can tell
    close_call: bool  # the runner-up has at least CLOSE_CALL_RATIO of the winner's probability
    contrast_shown: bool  # the runner-up is probable enough for a "why A and not B" map


def verdict(probabilities: np.ndarray, declined: bool) -> Verdict:
    """The verdict on one input's ten probabilities; `declined` comes from the model."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")
    first, second = float(probabilities[order[0]]), float(probabilities[order[1]])
    return Verdict(
        digit=int(order[0]),
        runner_up=int(order[1]),
        declined=bool(declined),
        close_call=second >= CLOSE_CALL_RATIO * first,
        contrast_shown=second >= RUNNER_UP_SHOWN,
    )


# ------------------------------------------------------------------------- faithfulness


def patch_ranking(saliency: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """The 49 patches from most to least salient; ties in a random order when `rng` is given."""
    flat = np.asarray(saliency, dtype=np.float64).reshape(-1)
    tie_break = rng.random(flat.size) if rng is not None else np.arange(flat.size)
    return np.lexsort((tie_break, -flat))


def deletion_inputs(x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(50, 1, 28, 28): the input with its first k patches of `order` blanked, k = 0..49."""
    masks = patch_masks()[np.asarray(order)]
    blanked = np.concatenate([np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), bool), np.cumsum(masks, 0) > 0])
    image = np.asarray(x, dtype=np.float32).reshape(1, IMAGE_SIZE, IMAGE_SIZE)
    return np.where(blanked, 0.0, image)[:, None].astype(np.float32)


def insertion_inputs(x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(50, 1, 28, 28): a blank input with the first k patches of `order` revealed, k = 0..49."""
    return (
        np.asarray(x, dtype=np.float32).reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE)
        - deletion_inputs(x, order)
    ).astype(np.float32)


def curve_area(curve: np.ndarray) -> float:
    """Area under a probability curve over k = 0..n patches, the x axis scaled to [0, 1]."""
    curve = np.asarray(curve, dtype=np.float64)
    return float(((curve[1:] + curve[:-1]) / 2).mean())
