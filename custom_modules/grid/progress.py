"""The grid's progress: each finished run's row into the table, each run reported as it ends."""

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from custom_modules.grid.grid_file import describe, run_id
from custom_modules.grid.results_table import append_result


@dataclass
class GridProgress:
    """Adds each finished run to the results table (and keeps its row) and reports every run."""

    results_path: Path
    total: int
    state_path: Callable[[str], Path] | None = None  # deleted once the row is in; None: kept
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rows: dict[str, dict] = field(default_factory=dict)  # the finished runs' rows, by run_id

    @property
    def ended(self) -> int:
        return len(self.finished) + len(self.failed)

    def record(self, row: dict, seconds: float) -> None:
        """Append the row (raises ResultsTableError when the table cannot be written)."""
        append_result(self.results_path, row)
        if self.state_path is not None:
            self.state_path(row["run_id"]).unlink(missing_ok=True)
        self.finished.append(row["run_id"])
        self.rows[row["run_id"]] = row
        print(
            f"[{self.ended}/{self.total}] {row['run_id']}: val acc {row['val_accuracy']:.4f}, "
            f"test acc {row['test_accuracy']:.4f}, ONNX p50 {row['onnx_p50_us']:.0f} µs "
            f"(PyTorch {row['torch_p50_us']:.0f} µs), {seconds:.0f} s",
            flush=True,
        )

    def record_failure(self, config: dict[str, int], error: BaseException) -> None:
        """Report the run with its configuration and the error's first line."""
        self.failed.append(run_id(config))
        message = str(error).strip().splitlines()
        summary = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
        print(f"[{self.ended}/{self.total}] FAILED {describe(config)}: {summary}", file=sys.stderr)

    def exit_code(self) -> int:
        """0 when every run finished; else say what did not, and 1."""
        if len(self.finished) == self.total:
            return 0
        if self.failed:
            print(f"{len(self.failed)} run(s) failed: {', '.join(self.failed)}", file=sys.stderr)
        unfinished = self.total - self.ended
        if unfinished:
            print(f"{unfinished} run(s) did not finish", file=sys.stderr)
        print(
            "they have no row in the results table: rerun the same command to retry them",
            file=sys.stderr,
        )
        return 1
