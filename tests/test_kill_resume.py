"""A grid killed with SIGKILL mid-training or mid-export, then rerun, ends as if never killed."""

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pytest

from tests.test_pipeline import synthetic_mnist, write_grid, write_mnist_folder

ROOT = Path(__file__).resolve().parents[1]
# columns that do not depend on timing: a resumed run must reproduce them exactly
DETERMINISTIC = [
    "run_id", "emb_dim", "num_heads", "n_layers", "mlp_ratio", "params", "epochs_run",
    "best_epoch", "val_loss", "val_accuracy", "val_f1", "test_loss", "test_accuracy", "test_f1",
]  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def grid_inputs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("kill")
    data_dir = write_mnist_folder(folder / "mnist", synthetic_mnist(n_train=1200, n_test=100))
    grid = write_grid(
        folder, {"emb_dim": [16], "num_heads": [2], "n_layers": [1, 2], "mlp_ratio": [2]}
    )
    return data_dir, grid


def grid_command(data_dir: Path, grid: Path, output_dir: Path) -> list[str]:
    return [
        sys.executable, "grid_search_mnist.py", "--data-dir", str(data_dir),
        "--output-dir", str(output_dir), "--grid", str(grid), "--epochs", "3",
        "--batch-size", "32", "--val-size", "100", "--wandb", "disabled", "--bench-calls", "20",
    ]  # fmt: skip


def run_to_end(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def rows(output_dir: Path) -> list[dict[str, str]]:
    with (output_dir / "results.csv").open() as f:
        return [{key: row[key] for key in DETERMINISTIC} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(grid_inputs, tmp_path_factory) -> list[dict[str, str]]:
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    run_to_end(grid_command(*grid_inputs, output_dir))
    return rows(output_dir)


def kill_when(command: list[str], condition: Callable[[], bool], timeout: float = 120) -> None:
    """Start the grid and SIGKILL it the moment `condition()` holds."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            if process.poll() is not None:
                pytest.fail(f"the grid ended before it could be killed: {process.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("the moment to kill the grid never came")
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def assert_no_broken_artifacts(output_dir: Path) -> None:
    """Every visible ONNX file loads; the table (if any) parses; leftovers are hidden temp files."""
    for path in (output_dir / "onnx").glob("*.onnx"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if (output_dir / "results.csv").exists():
        rows(output_dir)


def test_killed_during_export_then_rerun(grid_inputs, uninterrupted, tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    command = grid_command(*grid_inputs, output_dir)
    checkpoint = output_dir / "checkpoints" / "vit-e16-h2-l1-m2.pt"
    # the checkpoint is written just before the export starts
    kill_when(command, checkpoint.exists)
    assert not (output_dir / "results.csv").exists()
    assert_no_broken_artifacts(output_dir)
    run_to_end(command)
    assert rows(output_dir) == uninterrupted


def test_killed_during_training_then_rerun(grid_inputs, uninterrupted, tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    command = grid_command(*grid_inputs, output_dir)
    table = output_dir / "results.csv"
    # the first run's row is in: the second run is training now
    kill_when(command, lambda: table.exists() and len(rows(output_dir)) == 1)
    assert len(rows(output_dir)) == 1
    assert not (output_dir / "onnx" / "vit-e16-h2-l2-m2.onnx").exists()
    assert_no_broken_artifacts(output_dir)
    run_to_end(command)
    assert rows(output_dir) == uninterrupted


def test_killed_between_epochs_then_rerun_resumes(grid_inputs, uninterrupted, tmp_path) -> None:
    output_dir = tmp_path / "out"
    command = grid_command(*grid_inputs, output_dir)
    state = output_dir / "train_state" / "vit-e16-h2-l1-m2.pt"
    kill_when(command, state.exists)  # its first epoch is saved; the second is under way
    assert not (output_dir / "results.csv").exists()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{state}: resuming after epoch" in done.stdout
    assert rows(output_dir) == uninterrupted
    assert not list((output_dir / "train_state").iterdir())  # states go once their rows are in
