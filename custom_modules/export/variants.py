"""Faster variants of an exported model: ONNX Runtime's transformer fusions and INT8 weights.

Torch-free: onnx and onnxruntime only.
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.optimizer import optimize_model

from custom_modules.atomic_file import replaced_atomically
from custom_modules.contract import INPUT_NAME, PIXEL_MAX
from custom_modules.serving.model import onnx_session


def quantize_int8(source: str | Path, target: str | Path) -> Path:
    """Dynamic INT8 quantisation of the weights (activations are quantised on the fly)."""
    model = onnx.load(source)
    # the exporter's stored intermediate shapes trip the quantiser's shape inference; drop them
    del model.graph.value_info[:]
    with tempfile.TemporaryDirectory() as tmp:
        stripped = Path(tmp) / "stripped.onnx"
        onnx.save(model, stripped)
        with replaced_atomically(target) as tmp_path:
            quantize_dynamic(stripped, tmp_path, weight_type=QuantType.QInt8)
    return Path(target)


def fuse_transformer_ops(
    source: str | Path, target: str | Path, num_heads: int, hidden_size: int
) -> Path:
    """ONNX Runtime's transformer graph fusions (LayerNorm + residual, bias + GELU, ...)."""
    optimized = optimize_model(
        str(source), model_type="vit", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    with replaced_atomically(target) as tmp_path:
        optimized.save_model_to_file(str(tmp_path))
    return Path(target)


def max_difference(reference: str | Path, candidate: str | Path, images: np.ndarray) -> float:
    """Largest absolute difference over all outputs of two models on the same input."""
    outputs = [
        onnx_session(path).run(None, {INPUT_NAME: images}) for path in (reference, candidate)
    ]
    return max(float(np.abs(a - b).max()) for a, b in zip(*outputs, strict=True))


def as_pixels(images: np.ndarray) -> np.ndarray:
    """The graph's input `(N, 1, 28, 28)` float32 in [0, 1]: uint8 images `(N, 28, 28)` as the
    loader gives them are scaled; float pixels `(N, 1, 28, 28)`, as split, pass as they are."""
    if images.dtype == np.uint8:
        return images[:, None].astype(np.float32) / PIXEL_MAX
    return np.asarray(images, dtype=np.float32)


def onnx_predictions(path: str | Path, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Predicted digits for uint8 images `(N, 28, 28)` or pixels `(N, 1, 28, 28)` in [0, 1]."""
    session = onnx_session(path)
    predictions = []
    for start in range(0, len(images), batch_size):
        batch = as_pixels(images[start : start + batch_size])
        (logits,) = session.run(["logits"], {INPUT_NAME: batch})
        predictions.append(logits.argmax(axis=1))
    return np.concatenate(predictions)


def onnx_accuracy(
    path: str | Path, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000
) -> float:
    """Accuracy of an ONNX model on images (as `onnx_predictions` takes them) and their labels."""
    return float((onnx_predictions(path, images, batch_size) == labels).mean())
