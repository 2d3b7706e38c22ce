"""The model-choice rule: Large is the most accurate on validation, Fast the quickest near it."""

import pytest

from custom_modules.grid.selection import FAST_MARGIN, select_models


def row(run_id: str, val_accuracy: float, onnx_p50_us: float, params: int = 1000, **extra) -> dict:
    return {
        "run_id": run_id,
        "val_accuracy": str(val_accuracy),
        "val_loss": str(extra.pop("val_loss", 0.1)),
        "onnx_p50_us": str(onnx_p50_us),
        "params": str(params),
        "test_accuracy": str(extra.pop("test_accuracy", 0.5)),
    }


def test_large_is_best_validation_and_fast_is_quickest_within_margin() -> None:
    rows = [
        row("big", 0.960, 900),
        row("mid", 0.930, 300),
        row("small", 0.911, 120),  # within 5 points of 0.960
        row("tiny", 0.909, 60),  # quickest, but too inaccurate
    ]
    selection = select_models(rows)
    assert selection.large["run_id"] == "big"
    assert selection.fast["run_id"] == "small"
    assert [r["run_id"] for r in selection.candidates] == ["small", "mid", "big"]
    assert FAST_MARGIN == 0.05


def test_the_test_set_plays_no_part() -> None:
    rows = [row("a", 0.99, 500, test_accuracy=0.90), row("b", 0.98, 100, test_accuracy=0.999)]
    selection = select_models(rows, margin=0.001)
    assert selection.large["run_id"] == "a" and selection.fast["run_id"] == "a"


def test_ties_go_to_lower_validation_loss_then_fewer_parameters() -> None:
    rows = [
        row("heavy", 0.99, 500, params=5000, val_loss=0.05),
        row("light", 0.99, 400, params=1000, val_loss=0.05),
        row("lossy", 0.99, 300, params=100, val_loss=0.07),
    ]
    assert select_models(rows, margin=0.0).large["run_id"] == "light"


def test_empty_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        select_models([])
