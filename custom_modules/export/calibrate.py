"""Temperature scaling and the decline rule, fitted on validation inputs through the exported file.

Both are set on the validation split only, as the app will meet it: MNIST's validation digits as
they are, drawn again as brush strokes, in other hands and photographed on paper, each through
`preprocess_image`. The temperature minimises the negative log-likelihood of the MNIST ones (Guo
et al. 2017), the kind the calibration error is reported on; the rule declines an input whose
largest calibrated probability is below `decline_below`, set so that a chosen share of the
correctly read validation digits (of all four kinds) would be declined.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from custom_modules.serving.calibration import expected_calibration_error, negative_log_likelihood
from custom_modules.serving.model import OnnxViT, softmax
from custom_modules.serving.preprocess import preprocess_image
from custom_modules.serving.upload import read_upload
from custom_modules.synthetic.handwriting import draw_as_strokes, other_hand, photo_of_paper

DECLINED_DIGITS = 0.01  # share of correctly read validation digits the rule may decline


@dataclass(frozen=True)
class ValidationInputs:
    """Validation digits as the app meets them: (N, 1, 28, 28) pixels, labels, kind per row."""

    pixels: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray  # "mnist", "drawn", "other hand", "photo"

    @classmethod
    def make(
        cls, digits: np.ndarray, labels: np.ndarray, made_from: int = 2000, seed: int = 7
    ) -> "ValidationInputs":
        """`digits` (N, 28, 28) uint8 validation images, each served as it is; the first
        `made_from` of them also drawn, in another hand and photographed."""
        rng = np.random.default_rng(seed)
        drawn = [draw_as_strokes(d, rng) for d in digits[:made_from]]
        sources = {
            "mnist": list(digits),
            "drawn": drawn,
            "other hand": [other_hand(d, rng) for d in digits[:made_from]],
            "photo": [read_upload(photo_of_paper(c, rng)).pixels for c in drawn],
        }
        pixels, kept_labels, kinds = [], [], []
        for kind, images in sources.items():
            for image, label in zip(images, labels, strict=False):
                x = preprocess_image(image)
                if x is not None:
                    pixels.append(x)
                    kept_labels.append(label)
                    kinds.append(kind)
        return cls(np.concatenate(pixels), np.asarray(kept_labels), np.asarray(kinds))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the NLL of softmax(logits / T) (searched in log T)."""

    def nll(log_t: float) -> float:
        return negative_log_likelihood(softmax(logits / np.exp(log_t)), labels)

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def decline_threshold(probabilities: np.ndarray, labels: np.ndarray, rate: float) -> float:
    """The largest-probability level below which `rate` of the correctly read inputs fall."""
    correct = probabilities.argmax(1) == labels
    return float(np.quantile(probabilities.max(1)[correct], rate))


@dataclass(frozen=True)
class Calibration:
    """What the manifest records for a model: its temperature, its rule and their evidence.

    The errors are on the MNIST validation digits (what the temperature was fitted on); the
    declined shares on all four kinds of validation digit, and on held-out non-digits.
    """

    temperature: float
    decline_below: float
    val_ece_before: float
    val_ece_after: float
    val_nll_before: float
    val_nll_after: float
    val_digits_declined: float
    val_non_digits_declined: float


def calibrate(
    model: OnnxViT, digits: ValidationInputs, non_digits: np.ndarray, rate: float = DECLINED_DIGITS
) -> Calibration:
    """Fit the temperature and the decline rule on validation digits; report on non-digits."""
    logits = model.predict_logits(digits.pixels)
    return calibrate_logits(logits, digits, model.predict_logits(non_digits), rate)


def calibrate_logits(
    logits: np.ndarray,
    digits: ValidationInputs,
    non_digit_logits: np.ndarray,
    rate: float = DECLINED_DIGITS,
) -> Calibration:
    """`calibrate` on logits already computed: `logits` (N, 10) of `digits.pixels`."""
    mnist = digits.kinds == "mnist"
    temperature = fit_temperature(logits[mnist], digits.labels[mnist])
    after = softmax(logits / temperature)
    threshold = decline_threshold(after, digits.labels, rate)
    non_digit = softmax(non_digit_logits / temperature)
    before, labels = softmax(logits[mnist]), digits.labels[mnist]
    return Calibration(
        temperature=temperature,
        decline_below=threshold,
        val_ece_before=expected_calibration_error(before, labels),
        val_ece_after=expected_calibration_error(after[mnist], labels),
        val_nll_before=negative_log_likelihood(before, labels),
        val_nll_after=negative_log_likelihood(after[mnist], labels),
        val_digits_declined=float((after.max(1) < threshold).mean()),
        val_non_digits_declined=float((non_digit.max(1) < threshold).mean()),
    )
