"""An exported ViT in an ONNX Runtime session, checked against the contract when it is opened."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from custom_modules.contract import GRID_SIZE, IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, output_names
from custom_modules.messages import one_line
from custom_modules.serving.errors import model_file_error

if TYPE_CHECKING:
    from custom_modules.serving.manifest import ModelInfo


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Classification:
    """Calibrated probabilities (N, 10) and, per input, whether the model declines to read it."""

    probabilities: np.ndarray
    declined: np.ndarray  # (N,) bool: the largest probability is below the model's rule


@dataclass(frozen=True)
class Prediction(Classification):
    """A classification, each block's CLS attention (N, heads, 7, 7), the rollout (N, 7, 7)."""

    cls_attentions: list[np.ndarray]
    rollout: np.ndarray


def onnx_session(
    path: str | Path,
    threads: int = 1,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
) -> ort.InferenceSession:
    """The one way this project opens an ONNX file: a CPU session, all graph optimisations (by
    default), `threads` intra-op threads and one inter-op thread."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _open_session(path: Path, threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise model_file_error(path, "model file not found")
    try:
        return onnx_session(path, threads)
    except Exception as err:  # ORT's errors (InvalidProtobuf, Fail, ...) share no narrower base
        raise model_file_error(path, f"not a readable ONNX model ({one_line(err, 200)})") from None


def _count_blocks(path: Path, session: ort.InferenceSession) -> int:
    """Check the graph's signature against the export; return its number of blocks."""
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    n_layers = len(outputs) - 2
    expected_input = (INPUT_NAME, [1, IMAGE_SIZE, IMAGE_SIZE], "tensor(float)")
    signature_ok = (
        len(inputs) == 1
        and (inputs[0].name, inputs[0].shape[1:], inputs[0].type) == expected_input
        and len(inputs[0].shape) == 4
        and n_layers >= 1
        and outputs == output_names(n_layers)
    )
    if not signature_ok:
        found = ", ".join(f"{i.name}{i.shape}" for i in inputs) + " -> " + ", ".join(outputs)
        raise model_file_error(
            path,
            f"not a ViT Digits export (found {found}; expected input[batch, 1, 28, 28] "
            "-> logits, cls_attention_0.., attention_rollout)",
        )
    return n_layers


RUN_BATCH = 500  # inputs per ONNX Runtime run when only the logits are kept


def _checked(x: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) float pixels as the graph takes them: contiguous float32."""
    if not isinstance(x, np.ndarray) or x.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"expected a (N, 1, 28, 28) array, got {shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"expected a float array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


class OnnxViT:
    """An exported ViT in an ONNX Runtime session; `predict` is safe to call from many threads.

    Its probabilities are softmax(logits / `temperature`), and it declines an input whose largest
    probability is below `decline_below`: both fitted on validation data when the model shipped
    (the manifest's `temperature` and `decline_below`; 1 and 0, no rule, when it has none).
    One intra-op thread by default, as in the latency benchmark: a batch of one is too small to
    split, and concurrent requests then each get a core.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int = 1,
        temperature: float = 1.0,
        decline_below: float = 0.0,
    ) -> None:
        if not temperature > 0 or not 0 <= decline_below <= 1:
            raise ValueError(f"temperature {temperature} must be > 0, decline_below in [0, 1]")
        self.path = Path(path)
        self.temperature = temperature
        self.decline_below = decline_below
        self._session = _open_session(self.path, threads)
        self.n_layers = _count_blocks(self.path, self._session)
        self.num_heads = self._probe_heads()

    @classmethod
    def from_info(cls, info: "ModelInfo", threads: int = 1) -> "OnnxViT":
        """The model a manifest entry describes, with its calibration and decline rule."""
        return cls(info.path, threads, info.temperature, info.decline_below)

    def _probe_heads(self) -> int:
        """Run one blank image (warms the session up) and check every output's shape."""
        blank = np.zeros((1, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        try:
            outputs = self._session.run(None, {INPUT_NAME: blank})
        except Exception as err:  # a graph that loads but cannot run, e.g. a missing kernel
            problem = f"the model fails to run ({one_line(err, 200)})"
            raise model_file_error(self.path, problem) from None
        logits, *attentions, rollout = outputs
        num_heads = attentions[0].shape[1] if attentions[0].ndim == 4 else 0
        grid = (GRID_SIZE, GRID_SIZE)
        shapes_ok = (
            logits.shape == (1, NUM_CLASSES)
            and num_heads >= 1
            and all(a.shape == (1, num_heads, *grid) for a in attentions)
            and rollout.shape == (1, *grid)
        )
        if not shapes_ok:
            shapes = ", ".join(str(o.shape) for o in outputs)
            raise model_file_error(self.path, f"unexpected output shapes {shapes}")
        return num_heads

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        """All outputs for (N, 1, 28, 28) pixels in [0, 1] (what `preprocess_image` returns)."""
        return self._session.run(None, {INPUT_NAME: _checked(x)})

    def _classification(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = softmax(logits / self.temperature)
        return probabilities, probabilities.max(axis=-1) < self.decline_below

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """The raw logits (N, 10), before the temperature: for fitting and measuring it.

        Any N: run RUN_BATCH inputs at a time, since each run also returns the attentions."""
        x = _checked(x)
        if len(x) <= RUN_BATCH:
            return self._run(x)[0]
        return np.concatenate(
            [self._run(x[i : i + RUN_BATCH])[0] for i in range(0, len(x), RUN_BATCH)]
        )

    def classify(self, x: np.ndarray) -> Classification:
        """Calibrated probabilities and the declined flags for (N, 1, 28, 28) pixels."""
        return Classification(*self._classification(self.predict_logits(x)))

    def predict_with_rollout(self, x: np.ndarray) -> Prediction:
        """The classification, each block's CLS attention and the rollout for (N, 1, 28, 28)."""
        logits, *attentions, rollout = self._run(x)
        return Prediction(*self._classification(logits), attentions, rollout)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities (N, 10) and one CLS attention array (N, heads, 7, 7) per block."""
        prediction = self.predict_with_rollout(x)
        return prediction.probabilities, prediction.cls_attentions
