"""INT8 and transformer-fused variants of an exported model keep its interface and outputs."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from custom_modules.contract import output_names
from custom_modules.export.onnx_export import export_onnx
from custom_modules.export.variants import (
    fuse_transformer_ops,
    max_difference,
    onnx_accuracy,
    quantize_int8,
)
from custom_modules.vision_transformer import VisionTransformer, ViTConfig


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[VisionTransformer, Path]:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(emb_dim=32, num_heads=2, n_layers=2)).eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("variants") / "model.onnx")


def outputs_of(path: Path) -> list[str]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [o.name for o in session.get_outputs()]


def test_int8_keeps_the_interface_and_stays_close(exported, tmp_path: Path) -> None:
    _, path = exported
    int8 = quantize_int8(path, tmp_path / "int8.onnx")
    assert outputs_of(int8) == output_names(2)
    assert int8.stat().st_size < path.stat().st_size
    images = np.random.default_rng(0).standard_normal((4, 1, 28, 28), dtype=np.float32)
    assert max_difference(path, int8, images) < 0.2
    assert [p.name for p in tmp_path.iterdir()] == ["int8.onnx"]


def test_transformer_fusions_keep_outputs_within_1e_4(exported, tmp_path: Path) -> None:
    _, path = exported
    fused = fuse_transformer_ops(path, tmp_path / "fused.onnx", num_heads=2, hidden_size=32)
    assert outputs_of(fused) == output_names(2)
    images = np.random.default_rng(1).standard_normal((3, 1, 28, 28), dtype=np.float32)
    assert max_difference(path, fused, images) <= 1e-4


def test_onnx_accuracy_matches_pytorch(exported) -> None:
    model, path = exported
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    with torch.no_grad():
        pixels = torch.from_numpy(images).float().div(255).unsqueeze(1)
        predictions = model(pixels).argmax(dim=1).numpy()
    labels = predictions.copy()
    labels[:10] = (labels[:10] + 1) % 10  # exactly 10 of 50 wrong
    assert onnx_accuracy(path, images, labels, batch_size=16) == pytest.approx(0.8)
