"""scripts/compare_predictions.py finds a graph that normalises its own input equal to an older
export that took normalised input, and finds a difference where there is one (tiny models,
generated digits: no MNIST, no shipped models needed)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from custom_modules.contract import MNIST_MEAN, MNIST_STD
from custom_modules.export.onnx_export import export_onnx
from custom_modules.vision_transformer import VisionTransformer, ViTConfig
from scripts.compare_predictions import compare_folders, drawn_digits
from tests.conftest import _manifest_entry
from tests.test_pipeline import synthetic_mnist

CONFIG = {"emb_dim": 16, "num_heads": 2, "n_layers": 2, "mlp_ratio": 2}


class TakesNormalisedInput(VisionTransformer):
    """An export as it was before the normalisation moved into the graph."""

    def forward_with_attention(self, images: torch.Tensor):
        return super().forward_with_attention(images * MNIST_STD + MNIST_MEAN)


def models_dir(folder: Path, model: VisionTransformer) -> Path:
    export_onnx(model, folder / "vit-fast.onnx")
    entry = _manifest_entry("vit-fast.onnx", CONFIG, model.num_parameters(), 0.9)
    (folder / "manifest.json").write_text(json.dumps({"models": {"Fast": entry}}))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    new = VisionTransformer(ViTConfig(**CONFIG)).eval()
    old = TakesNormalisedInput(ViTConfig(**CONFIG)).eval()
    old.load_state_dict(new.state_dict())
    root = tmp_path_factory.mktemp("compare")
    return models_dir(root / "old", old), models_dir(root / "new", new)


def test_the_same_weights_predict_the_same_with_the_normalisation_in_the_graph(folders) -> None:
    digits = synthetic_mnist(n_train=1, n_test=40).test_images
    comparisons = compare_folders(*folders, digits, drawn_digits(digits[:20]), True)
    assert [(c.source, c.images) for c in comparisons] == [("MNIST test", 40), ("drawn", 20)]
    for comparison in comparisons:
        assert comparison.ok(atol=1e-5), comparison.line()
        assert comparison.max_attention_difference < 1e-5


def test_a_difference_is_found(folders) -> None:
    digits = synthetic_mnist(n_train=1, n_test=40).test_images
    comparisons = compare_folders(*folders, digits, drawn_digits(digits[:20]), False)
    assert not all(comparison.ok(atol=1e-5) for comparison in comparisons)
    assert np.isfinite([c.max_probability_difference for c in comparisons]).all()
