"""The grid's results table: one CSV row per finished run, rewritten atomically."""

import csv
import fcntl
import os
from pathlib import Path

from custom_modules.atomic_file import replaced_atomically

FIELDS = [
    "run_id",
    "emb_dim",
    "num_heads",
    "n_layers",
    "mlp_ratio",
    "params",
    "epochs_run",
    "best_epoch",
    "train_seconds",
    "train_images_per_s",
    "val_loss",
    "val_accuracy",
    "val_precision",
    "val_recall",
    "val_f1",
    "test_loss",
    "test_accuracy",
    "test_precision",
    "test_recall",
    "test_f1",
    "bench_threads",
    "torch_p50_us",
    "torch_p90_us",
    "torch_images_per_s",
    "onnx_p50_us",
    "onnx_p90_us",
    "onnx_images_per_s",
    "onnx_size_bytes",
    "onnx_file",
    "checkpoint_file",
    "wandb_run",
]


class ResultsTableError(RuntimeError):
    """The results table cannot be read or written."""


def read_results(path: str | Path) -> list[dict[str, str]]:
    """All rows of the table (an empty list when it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ResultsTableError(f"{path}: cannot read the results table ({err})") from None
    if "run_id" not in header or any(None in row or not row.get("run_id") for row in rows):
        raise ResultsTableError(
            f"{path}: the results table is corrupt (bad header or ragged rows); "
            "fix or move it away, then rerun"
        )
    return rows


def append_result(path: str | Path, row: dict) -> None:
    """Add one row: the whole table is written to a temporary file and renamed over the old one.

    A lock file serialises writers, so several grid processes may share one output folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _rewrite_with(path, row)


def update_results(path: str | Path, changes: dict[str, dict]) -> None:
    """Overwrite some columns of existing rows: `changes` maps run_id -> {column: value}."""
    path = Path(path)
    with path.with_name(f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = read_results(path)
        if unknown := set(changes) - {row["run_id"] for row in rows}:
            raise ResultsTableError(f"{path}: no row for {', '.join(sorted(unknown))}")
        _write_rows(path, [{**row, **changes.get(row["run_id"], {})} for row in rows])


def _rewrite_with(path: Path, row: dict) -> None:
    _write_rows(path, read_results(path) + [{key: row.get(key, "") for key in FIELDS}])


def _write_rows(path: Path, rows: list[dict]) -> None:
    try:
        with replaced_atomically(path) as tmp_path, tmp_path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise ResultsTableError(f"{path}: cannot write the results table ({err})") from None
