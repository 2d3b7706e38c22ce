"""The benchmark scripts run end to end and print their tables (few calls: no figure is checked)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pipeline import synthetic_mnist, write_mnist_folder

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "models" / "manifest.json").exists(), reason="no shipped models")
def test_the_inference_benchmark_prints_a_table_per_shipped_model() -> None:
    quick = ["--calls", "20", "--warmup", "2", "--rounds", "2", "--throughput-batch", "4"]
    out = run_script("benchmarks/inference.py", *quick)
    for name in ("Fast", "Large"):
        assert f"\n{name}: " in out and f"{name}: app path" in out
    assert out.count("ONNX Runtime INT8 (dynamic quantisation)") == 4  # 2 models x 2 thread counts
    assert "Fast INT8:" not in out  # a variant is a row of its model's table, not a model


@pytest.mark.slow
def test_the_training_benchmark_prints_the_ratio_for_both_configurations(tmp_path) -> None:
    data_dir = write_mnist_folder(tmp_path / "mnist", synthetic_mnist(n_train=1500))
    quick = ["--steps-scale", "0.02", "--held-out", "100", "--batch-size", "16"]
    out = run_script("benchmarks/training.py", "--data-dir", str(data_dir), *quick)
    assert "baseline: fp32, written-out attention" in out
    for config in ("smallest", "largest"):
        assert f"{config}: fast path" in out and "the baseline's images/s" in out
