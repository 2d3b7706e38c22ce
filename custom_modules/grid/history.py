"""Per-epoch learning curves: one JSON file per run, `history/<run_id>.json` beside the table.

Torch-free (json only): the grid writes the files, the app's Grid search tab reads them.

    {"run_id": "vit-e64-h4-l2-m2", "best_epoch": 4,
     "epochs": [{"epoch": 1, "train_loss": 1.02, "lr": 0.001, "val_loss": 0.61,
                 "val_accuracy": 0.83, "val_precision": ..., "val_recall": ..., "val_f1": ...},
                ...]}

The same format serves a shipped model's curves (`"history"` in its manifest entry).
"""

import json
import math
from pathlib import Path

from custom_modules.atomic_file import replaced_atomically
from custom_modules.messages import one_line

HISTORY_DIR = "history"
CURVES = ("val_loss", "val_accuracy")  # what every epoch must have: the curves the app draws


class HistoryError(ValueError):
    """A history file that cannot be read; the message names the file, in one line."""


def history_path(output_dir: Path, run_id: str) -> Path:
    """Where a run's curves go: `<output-dir>/history/<run_id>.json`, beside results.csv."""
    return output_dir / HISTORY_DIR / f"{run_id}.json"


def history_dir(results_table: Path) -> Path:
    """The curves of a results table's runs: the `history/` folder beside the table."""
    return results_table.parent / HISTORY_DIR


def write_history(path: Path, run_id: str, epochs: list[dict], best_epoch: int) -> Path:
    """Write a run's per-epoch records whole or not at all (temporary name, then rename)."""
    document = {
        "run_id": run_id,
        "best_epoch": best_epoch,
        "epochs": [{key: _plain(value) for key, value in record.items()} for record in epochs],
    }
    with replaced_atomically(path) as tmp_path:
        tmp_path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def _plain(value: object) -> object:
    """A JSON-friendly number (numpy and torch scalars have `.item()`)."""
    return value.item() if hasattr(value, "item") else value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_history(path: Path) -> dict:
    """The checked document: `run_id`, `best_epoch` and `epochs` (each with epoch and CURVES)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HistoryError(f"{path}: cannot read the history ({one_line(err, 200)})") from None
    epochs = document.get("epochs") if isinstance(document, dict) else None
    if not isinstance(epochs, list) or not epochs:
        raise HistoryError(f"{path}: expected an object with a non-empty 'epochs' list")
    for record in epochs:
        if not isinstance(record, dict) or not all(
            _is_number(record.get(key)) for key in ("epoch", *CURVES)
        ):
            raise HistoryError(f"{path}: every epoch needs numeric epoch, {', '.join(CURVES)}")
    return {
        "run_id": str(document.get("run_id", path.stem)),
        "best_epoch": document.get("best_epoch"),
        "epochs": epochs,
    }


def read_histories(folder: Path, run_ids: list[str]) -> tuple[dict[str, list[dict]], list[str]]:
    """The curves of those runs that have a readable file in `folder`, and the problems found.

    A run without a file is simply absent (it ran before the grid recorded curves).
    """
    curves, problems = {}, []
    for run_id in run_ids:
        path = folder / f"{run_id}.json"
        if not path.is_file():
            continue
        try:
            curves[run_id] = read_history(path)["epochs"]
        except HistoryError as err:
            problems.append(str(err))
    return curves, problems
