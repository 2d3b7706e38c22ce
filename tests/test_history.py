"""Per-epoch learning curves (custom_modules/grid/history.py): written whole, read back checked."""

import json
from pathlib import Path

import numpy as np
import pytest

from custom_modules.grid.history import (
    HistoryError,
    history_dir,
    history_path,
    read_histories,
    read_history,
    write_history,
)

EPOCHS = [
    {"epoch": 1, "train_loss": 1.2, "lr": 1e-3, "val_loss": 0.9, "val_accuracy": 0.7},
    {"epoch": 2, "train_loss": 0.8, "lr": 5e-4, "val_loss": 0.6, "val_accuracy": np.float32(0.8)},
]


def test_written_beside_the_results_table_and_read_back(tmp_path: Path) -> None:
    path = history_path(tmp_path, "vit-e16-h2-l1-m2")
    assert path == tmp_path / "history" / "vit-e16-h2-l1-m2.json"
    assert history_dir(tmp_path / "results.csv") == path.parent
    write_history(path, "vit-e16-h2-l1-m2", EPOCHS, best_epoch=2)
    document = read_history(path)
    assert document["run_id"] == "vit-e16-h2-l1-m2" and document["best_epoch"] == 2
    assert [e["val_accuracy"] for e in document["epochs"]] == [0.7, pytest.approx(0.8)]
    assert not list(path.parent.glob(".*.tmp"))  # written under a temporary name, then renamed


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"epochs": []}', '{"epochs": [{"epoch": 1, "val_loss": 0.5}]}'],
)
def test_an_unusable_file_is_one_line_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "vit-x.json"
    path.write_text(content)
    with pytest.raises(HistoryError, match=str(path)) as error:
        read_history(path)
    assert "\n" not in str(error.value)


def test_runs_without_a_file_are_absent_and_broken_ones_reported(tmp_path: Path) -> None:
    write_history(tmp_path / "a.json", "a", EPOCHS, best_epoch=2)
    (tmp_path / "b.json").write_text(json.dumps({"epochs": "no"}))
    curves, problems = read_histories(tmp_path, ["a", "b", "c"])
    assert list(curves) == ["a"] and len(curves["a"]) == 2
    assert len(problems) == 1 and "b.json" in problems[0]
