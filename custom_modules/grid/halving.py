"""Successive halving over the grid, with epochs as the resource (the idea of scikit-learn's
`HalvingGridSearchCV`): every configuration trains a few epochs, the better part goes on, and so on.

Every rung trains along one and the same schedule of `--epochs` epochs, resuming the runs' saved
training states, so a configuration that reaches the last rung has had a whole `--epochs` run.
Torch-free: the rules only; `commands.halving` runs the rungs.
"""

import math
from pathlib import Path

from custom_modules.grid.selection import accuracy_rank, select_models


def rung_epochs(min_epochs: int, factor: int, epochs: int) -> list[int]:
    """The epoch each rung stops after: `min_epochs`, `factor` times more each, `epochs` last."""
    if factor < 2 or not 1 <= min_epochs <= epochs:
        raise ValueError(f"no rungs for min_epochs {min_epochs}, factor {factor}, epochs {epochs}")
    stops, stop = [], min_epochs
    while stop < epochs:
        stops.append(stop)
        stop *= factor
    return [*stops, epochs]


def survivors_after(rung: int, n_configs: int, factor: int) -> int:
    """How many runs the accuracy ranking keeps after `rung` (from 0): ceil(n / factor^(rung+1))."""
    return math.ceil(n_configs / factor ** (rung + 1))


def promoted(rows: list[dict], keep: int) -> list[dict]:
    """The runs that go on: the `keep` best by validation accuracy, and also the run the README's
    rule would ship as Fast from these rows, so that a fast configuration is not lost to slower,
    more accurate ones before the last rung chooses."""
    best = sorted(rows, key=accuracy_rank)[:keep]
    fast = select_models(rows).fast
    if fast["run_id"] in {row["run_id"] for row in best}:
        return best
    return [*best, fast]


def rung_dir(output_dir: Path, stop_after: int, epochs: int) -> Path:
    """A rung's own grid folder (results.csv, onnx/, checkpoints/, history/), named by its stop."""
    return output_dir / "rungs" / f"epoch-{stop_after}-of-{epochs}"
