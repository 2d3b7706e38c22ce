"""The grid on Ray Tune: one trial per configuration; only the driver writes files and the table.

Each trial runs `run_config` in a scratch folder on whichever node Ray places it, then reports its
results row together with the bytes of every file the run wrote there: `onnx/<run_id>.onnx`,
`checkpoints/<run_id>.pt` and, unless W&B is disabled, the run's folder under `wandb/`. As each
trial finishes, the driver writes those files under `--output-dir` (temporary name, then rename)
and only then appends the row to `results.csv`. No shared storage is needed.

The data reaches the trials through Ray's object store: the driver loads and splits MNIST once, so
every trial trains on the same split and the other nodes need neither the files nor the internet.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cloudpickle
import ray
from ray import tune

from custom_modules.atomic_file import replaced_atomically
from custom_modules.grid.results_table import ResultsTableError
from custom_modules.grid.settings import GridSettings
from custom_modules.training.data import DataSplits
from custom_modules.training.loop import select_device

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from custom_modules.grid.progress import GridProgress
    from custom_modules.grid.run import RunFn

ROW_KEY = "row"
FILES_KEY = "files"


def start_ray(address: str | None, num_cpus: int | None) -> None:
    """Connect to the cluster at `address`, or start a local instance without a dashboard."""
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    else:
        ray.init(address=address)
    nodes = sum(node["Alive"] for node in ray.nodes())
    resources = ray.cluster_resources()
    print(
        f"Ray: {nodes} node(s), {resources.get('CPU', 0):g} CPU(s), "
        f"{resources.get('GPU', 0):g} GPU(s)"
    )


def trial_resources(settings: GridSettings) -> dict[str, float]:
    """What Ray reserves for each trial: 1 CPU and no GPU unless the settings say otherwise."""
    ray_settings = settings.ray
    cpus = 1.0 if ray_settings.cpus_per_trial is None else ray_settings.cpus_per_trial
    return {"cpu": cpus, "gpu": ray_settings.gpus_per_trial or 0.0}


def read_files(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` (symlinks left out), keyed by its path relative to it."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Write each file under `root`: to a temporary name first, then renamed into place."""
    for relative, content in files.items():
        with replaced_atomically(root / relative) as tmp_path:
            tmp_path.write_bytes(content)


def run_trial(
    trial_config: dict, *, settings: GridSettings, data: DataSplits, run_one: RunFn
) -> None:
    """One configuration, in a scratch folder on this node; report its row and its files."""
    device = select_device(settings.device)
    with tempfile.TemporaryDirectory(prefix="vit-grid-") as scratch:
        trial_settings = dataclasses.replace(settings, output_dir=Path(scratch))
        try:
            row = run_one(trial_config["config"], trial_settings, data.to(device), device)
        finally:
            stop_wandb()
        files = read_files(Path(scratch))
    tune.report({ROW_KEY: row, FILES_KEY: files})


def stop_wandb() -> None:
    """Shut this worker's W&B service down now; left to `atexit`, it is already gone when Ray
    ends the worker, and W&B prints a traceback."""
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


def trial_error(trial: Trial) -> BaseException:
    """What the run raised, or the Ray error (e.g. `ActorDiedError`) when its worker died."""
    if trial.pickled_error_file is None:
        return tune.TuneError("no error recorded; see the log above")
    with open(trial.pickled_error_file, "rb") as f:
        error = cloudpickle.load(f)
    cause = getattr(error, "cause", None)  # a RayTaskError wraps what the run raised
    return cause if isinstance(cause, BaseException) else error


class RecordOnDriver(tune.Callback):
    """Runs on the driver: writes each finished trial's files, then its row; reports failures."""

    def __init__(self, output_dir: Path, progress: GridProgress) -> None:
        self.output_dir = output_dir
        self.progress = progress
        self.recorded: set[str] = set()
        self.write_error: ResultsTableError | OSError | None = None

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info):
        files = result.pop(FILES_KEY)  # Tune lets callbacks edit the result: no bytes in its logs
        try:
            write_files(self.output_dir, files)
            self.progress.record(result[ROW_KEY], result["time_total_s"])
        except (ResultsTableError, OSError) as err:
            self.write_error = err
            raise  # ends the experiment: nothing more could be recorded
        self.recorded.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info):
        if trial.trial_id not in self.recorded:  # a worker lost after its report lost nothing
            self.progress.record_failure(trial.config["config"], trial_error(trial))


def run_on_ray(
    todo: list[dict[str, int]],
    settings: GridSettings,
    data: DataSplits,
    run_one: RunFn,
    progress: GridProgress,
) -> None:
    """Run every configuration as a Tune trial; a failed trial does not stop the others."""
    start_ray(settings.ray.address, settings.ray.num_cpus)
    try:
        recorder = RecordOnDriver(settings.output_dir, progress)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, settings=settings, data=data, run_one=run_one),
            trial_resources(settings),
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"config": tune.grid_search(todo)},
            run_config=tune.RunConfig(
                name=f"grid-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str((settings.output_dir / "ray_results").resolve()),
                callbacks=[recorder],
                failure_config=tune.FailureConfig(max_failures=0),
                verbose=0,
            ),
        )
        try:
            tuner.fit()
        except tune.TuneError:
            if recorder.write_error is not None:
                raise recorder.write_error from None
            raise
    finally:
        ray.shutdown()
