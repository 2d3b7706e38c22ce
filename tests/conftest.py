"""Shared fixtures: a tiny exported ViT with a manifest and a grid table, so no test needs the
real shipped models."""

import csv
import json
from pathlib import Path

import pytest

from custom_modules.results_table import FIELDS

TINY_CONFIGS = {
    "Fast": {"emb_dim": 16, "num_heads": 2, "n_layers": 2, "mlp_ratio": 2},
    "Large": {"emb_dim": 24, "num_heads": 3, "n_layers": 3, "mlp_ratio": 2},
}


def _export_tiny_vit(config: dict[str, int], path: Path, seed: int) -> int:
    """Export a randomly initialised ViT to `path`; return its parameter count."""
    import torch

    from custom_modules.onnx_export import export_onnx
    from custom_modules.vision_transformer import VisionTransformer, ViTConfig

    torch.manual_seed(seed)
    model = VisionTransformer(ViTConfig(**config)).eval()
    export_onnx(model, path)
    return model.num_parameters()


def _manifest_entry(file: str, config: dict[str, int], params: int, accuracy: float) -> dict:
    return {
        "file": file,
        "config": config,
        "params": params,
        "test_accuracy": accuracy,
        "test_precision": accuracy,
        "test_recall": accuracy,
        "test_f1": accuracy,
        "onnx_p50_us": 10.0 * config["n_layers"],
        "torch_p50_us": 30.0 * config["n_layers"],
        "size_bytes": 1000,
        "command": "python grid_search_mnist.py --select",
    }


def _grid_row(config: dict[str, int], params: int, accuracy: float) -> dict:
    run_id = "vit-e{emb_dim}-h{num_heads}-l{n_layers}-m{mlp_ratio}".format(**config)
    row = {field: 0 for field in FIELDS}
    return {
        **row,
        **config,
        "run_id": run_id,
        "params": params,
        "test_accuracy": accuracy,
        "val_accuracy": accuracy,
        "onnx_p50_us": 10.0 * config["n_layers"],
        "torch_p50_us": 30.0 * config["n_layers"],
        "onnx_file": f"onnx/{run_id}.onnx",
        "wandb_run": "",
    }


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder as the app expects it: two tiny ONNX ViTs, manifest.json, grid_results.csv.

    The models are random (untrained); tests only check shapes, plumbing and the page.
    """
    folder = tmp_path_factory.mktemp("models")
    models, rows = {}, []
    for seed, (name, config) in enumerate(TINY_CONFIGS.items()):
        file = f"vit-{name.lower()}.onnx"
        params = _export_tiny_vit(config, folder / file, seed)
        accuracy = 0.9 + 0.01 * seed
        models[name] = _manifest_entry(file, config, params, accuracy)
        rows.append(_grid_row(config, params, accuracy))
    other = {"emb_dim": 8, "num_heads": 1, "n_layers": 1, "mlp_ratio": 1}
    rows.append(_grid_row(other, 1234, 0.5))
    with (folder / "grid_results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    manifest = {"models": models, "grid_results": "grid_results.csv"}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture(scope="session")
def tiny_model_path(tiny_models_dir: Path) -> Path:
    """The tiny "Fast" model: 2 blocks of 2 heads, embedding 16."""
    return tiny_models_dir / "vit-fast.onnx"
