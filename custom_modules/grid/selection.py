"""The rule that picks the shipped models from the grid's results table (validation only)."""

from dataclasses import dataclass

# "Fast" may give up at most this much validation accuracy against the best run. Wide, because
# the grid's short per-run budget ranks runs still leaving the plateau (README, "Models").
FAST_MARGIN = 0.05


@dataclass(frozen=True)
class Selection:
    large: dict[str, str]
    fast: dict[str, str]
    best_val_accuracy: float
    candidates: list[dict[str, str]]  # the runs within the margin, fastest first


def accuracy_rank(row: dict) -> tuple[float, float, int]:
    """Sort key, best first: higher validation accuracy, lower validation loss, fewer params."""
    return (-float(row["val_accuracy"]), float(row["val_loss"]), int(row["params"]))


def select_models(rows: list[dict[str, str]], margin: float = FAST_MARGIN) -> Selection:
    """Large: the best validation accuracy (ties: lower validation loss, then fewer parameters).

    Fast: the lowest ONNX batch-1 p50 latency among runs whose validation accuracy is within
    `margin` of the best. The test set plays no part in either choice.
    """
    if not rows:
        raise ValueError("the results table is empty: run the grid first")

    large = min(rows, key=accuracy_rank)
    best = float(large["val_accuracy"])
    candidates = sorted(
        (row for row in rows if float(row["val_accuracy"]) >= best - margin - 1e-12),
        key=lambda row: (float(row["onnx_p50_us"]), accuracy_rank(row)),
    )
    return Selection(large=large, fast=candidates[0], best_val_accuracy=best, candidates=candidates)
