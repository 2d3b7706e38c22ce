"""Error analysis of one shipped model, made at shipping time into a small file the app reads.

`models/error_analysis-<name>.npz` (a few dozen KB) holds, for the MNIST test set: the confusion
matrix, every digit the model gets wrong (its pixels, true label, prediction, confidence and
occlusion map), the reliability bins and ECE of its (calibrated) probabilities, and the
provisional decline threshold set on the validation split. The app needs no
MNIST files. `vit-digits-error-analysis` (custom_modules/grid/error_analysis.py) writes it.

Torch-free (numpy and ONNX Runtime through OnnxViT).
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from custom_modules.atomic_file import replaced_atomically
from custom_modules.contract import NUM_CLASSES, PIXEL_MAX
from custom_modules.serving.calibration import expected_calibration_error, reliability_bins
from custom_modules.serving.explain import explain
from custom_modules.serving.model import OnnxViT

DECLINE_QUANTILE = 0.01  # provisional: 1 % of the validation digits fall below the threshold
GALLERY_MAX = 200  # wrong test digits kept (all of them for today's models)
RELIABILITY_KEYS = ("low", "high", "count", "confidence", "accuracy")


def artifact_path(models_dir: str | Path, model_name: str) -> Path:
    """`<models_dir>/error_analysis-<name>.npz`, the name lower-cased with dashes: fast-int8."""
    slug = "-".join(model_name.lower().split())
    return Path(models_dir) / f"error_analysis-{slug}.npz"


@dataclass(frozen=True)
class ErrorAnalysis:
    """One model on one labelled set: confusion, mistakes, confidences, decline threshold."""

    model_name: str
    model_sha256: str  # of the ONNX file it was made with: a newer file makes it stale
    confusion: np.ndarray  # (10, 10) int: rows the true digit, columns the prediction
    reliability: list[dict[str, float]]  # serving/calibration.py's reliability_bins (15)
    ece: float  # expected calibration error over those bins
    wrong_index: np.ndarray  # (M,) int: index in the set, most confident mistakes first
    wrong_images: np.ndarray  # (M, 28, 28) uint8
    wrong_labels: np.ndarray  # (M,) int
    wrong_predicted: np.ndarray  # (M,) int
    wrong_confidence: np.ndarray  # (M,) float
    wrong_occlusion: np.ndarray  # (M, 7, 7) float: drop in p(predicted) per blanked patch
    decline_threshold: float  # PROVISIONAL rule, see serving/explain.py: NaN when not set

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.confusion.sum())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with replaced_atomically(path) as tmp_path, open(tmp_path, "wb") as f:
            np.savez_compressed(
                f,
                model_name=np.array(self.model_name),
                model_sha256=np.array(self.model_sha256),
                confusion=self.confusion.astype(np.int32),
                reliability=np.array(
                    [[row[key] for key in RELIABILITY_KEYS] for row in self.reliability],
                    dtype=np.float64,
                ).reshape(-1, len(RELIABILITY_KEYS)),
                ece=np.float64(self.ece),
                wrong_index=self.wrong_index.astype(np.int32),
                wrong_images=self.wrong_images.astype(np.uint8),
                wrong_labels=self.wrong_labels.astype(np.int8),
                wrong_predicted=self.wrong_predicted.astype(np.int8),
                wrong_confidence=self.wrong_confidence.astype(np.float32),
                wrong_occlusion=self.wrong_occlusion.astype(np.float16),
                decline_threshold=np.float64(self.decline_threshold),
            )
        return path


def load_error_analysis(path: str | Path) -> ErrorAnalysis | None:
    """The artifact at `path`, or None when there is none or it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return ErrorAnalysis(
                model_name=str(data["model_name"]),
                model_sha256=str(data["model_sha256"]) if "model_sha256" in data else "",
                confusion=data["confusion"].astype(np.int64),
                reliability=[
                    dict(zip(RELIABILITY_KEYS, map(float, row), strict=True))
                    for row in data["reliability"]
                ],
                ece=float(data["ece"]),
                wrong_index=data["wrong_index"].astype(np.int64),
                wrong_images=data["wrong_images"],
                wrong_labels=data["wrong_labels"].astype(np.int64),
                wrong_predicted=data["wrong_predicted"].astype(np.int64),
                wrong_confidence=data["wrong_confidence"],
                wrong_occlusion=data["wrong_occlusion"].astype(np.float32),
                decline_threshold=float(data["decline_threshold"]),
            )
    except (OSError, KeyError, ValueError):
        return None


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def as_inputs(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 digits as (N, 1, 28, 28) model inputs in [0, 1]."""
    return (np.asarray(images, dtype=np.float32) / PIXEL_MAX)[:, None]


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (np.asarray(labels), np.asarray(predicted)), 1)
    return confusion


def decline_threshold(model: OnnxViT, val_images: np.ndarray | None) -> float:
    """PROVISIONAL: the DECLINE_QUANTILE quantile of the validation digits' top probability."""
    if val_images is None or not len(val_images):
        return float("nan")
    confidence = model.classify(as_inputs(val_images)).probabilities.max(axis=1)
    return float(np.quantile(confidence, DECLINE_QUANTILE))


def build_error_analysis(
    model: OnnxViT,
    model_name: str,
    images: np.ndarray,
    labels: np.ndarray,
    val_images: np.ndarray | None = None,
    gallery_max: int = GALLERY_MAX,
) -> ErrorAnalysis:
    """Analyse `model` on (N, 28, 28) uint8 `images` with their `labels`."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = model.classify(as_inputs(images)).probabilities
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:gallery_max]
    occlusion = [explain(model, as_inputs(images[i : i + 1])).occlusion() for i in wrong]
    return ErrorAnalysis(
        model_name=model_name,
        model_sha256=file_sha256(model.path),
        confusion=confusion_matrix(labels, predicted),
        reliability=reliability_bins(probabilities, labels),
        ece=expected_calibration_error(probabilities, labels),
        wrong_index=wrong,
        wrong_images=np.asarray(images)[wrong],
        wrong_labels=labels[wrong],
        wrong_predicted=predicted[wrong],
        wrong_confidence=confidence[wrong],
        wrong_occlusion=np.array(occlusion, dtype=np.float32).reshape(len(wrong), 7, 7),
        decline_threshold=decline_threshold(model, val_images),
    )
