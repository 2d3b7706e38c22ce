"""The grid command's modes, each a function of typed settings that returns the exit code.

0: done; 1: some run failed or the table could not be written (rerun to retry); 2: refused
before any work, with a one-line message.
"""

import dataclasses
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from custom_modules.contract import config_of
from custom_modules.export.latency import onnx_latencies_interleaved
from custom_modules.grid.grid_file import GridError, load_grid, run_id
from custom_modules.grid.halving import promoted, rung_dir, rung_epochs, survivors_after
from custom_modules.grid.local import run_locally
from custom_modules.grid.progress import GridProgress
from custom_modules.grid.results_table import ResultsTableError, read_results, update_results
from custom_modules.grid.run import RunFn, run_config
from custom_modules.grid.selection import FAST_MARGIN, accuracy_rank, select_models
from custom_modules.grid.settings import FROM_SCRATCH_WARMUP_EPOCHS, GridSettings, Mode
from custom_modules.grid.shipping import (
    ShippedModel,
    improved_on_start,
    lineage,
    reexport_shipped,
    retime_shipped,
    ship_models,
)
from custom_modules.serving.errors import ModelFileError
from custom_modules.training.data import DataSplits, split_mnist
from custom_modules.training.mnist_data import MnistDataError, load_mnist


def training_splits(settings: GridSettings) -> DataSplits:
    """MNIST split as the settings say: --val-size held out by --seed, --train-subset of the rest.

    Raises MnistDataError (the files) or ValueError (an impossible --val-size)."""
    return split_mnist(
        load_mnist(settings.data_dir), settings.val_size, settings.seed, settings.train_subset
    )


def refuse(message: object) -> int:
    """Say why the command does nothing, in one line; exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def chosen_rows(results_table: Path) -> dict[str, dict]:
    """Apply the README's rule to the grid's results: {"Fast": row, "Large": row}."""
    rows = read_results(results_table)
    selection = select_models(rows)
    print(
        f"{len(rows)} runs in {results_table}; best validation accuracy "
        f"{selection.best_val_accuracy:.4f}; within {FAST_MARGIN:.1%} of it, fastest first:"
    )
    for row in selection.candidates:
        print(
            f"  {row['run_id']:<20} val acc {float(row['val_accuracy']):.4f}  "
            f"ONNX p50 {float(row['onnx_p50_us']):>7.1f} µs  {int(row['params']):>9,} params"
        )
    chosen = {"Fast": selection.fast, "Large": selection.large}
    for name, row in chosen.items():
        print(f"{name}: {row['run_id']}")
    return chosen


def select(settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Print the Fast/Large choice made from the results table."""
    try:
        chosen_rows(settings.results_table)
    except (ResultsTableError, ValueError) as err:
        return refuse(err)
    return 0


def retime(settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Re-measure every run's ONNX latency in one sitting and write it into the table."""
    table, threads, calls = settings.results_table, settings.bench_threads, settings.bench_calls
    try:
        rows = read_results(table)
        if not rows:
            raise ValueError(f"{table}: the results table is empty: run the grid first")
        paths = [settings.output_dir / row["onnx_file"] for row in rows]
        if missing := [str(path) for path in paths if not path.is_file()]:
            raise ValueError(
                f"ONNX files not found (is --output-dir the grid's?): {', '.join(missing)}"
            )
        print(
            f"timing {len(paths)} ONNX files in turns, {calls} batch-1 calls each, "
            f"{threads} thread(s)"
        )
        latencies = onnx_latencies_interleaved(paths, threads, calls)
        changes = {}
        for row, latency in zip(rows, latencies, strict=True):
            print(
                f"  {row['run_id']:<20} ONNX p50 {float(row['onnx_p50_us']):>7.1f} -> "
                f"{latency['onnx_p50_us']:>7.1f} µs"
            )
            changes[row["run_id"]] = {key: round(value, 1) for key, value in latency.items()}
            changes[row["run_id"]]["bench_threads"] = threads
        update_results(table, changes)
    except (ResultsTableError, ValueError) as err:
        return refuse(err)
    print(f"updated {table}")
    return 0


def retime_shipped_models(settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Time the shipped models again, in one sitting; update their latencies in the manifest."""
    try:
        models = retime_shipped(settings.models_dir, settings.bench_calls)["models"]
    except (ModelFileError, ValueError) as err:
        return refuse(err)
    for name, entry in models.items():
        onnx_us, torch_us = entry["onnx_p50_us"], entry["torch_p50_us"]
        print(
            f"{name:<11} ONNX p50 {onnx_us:>7.1f} µs, PyTorch p50 {torch_us:>7.1f} µs "
            f"({torch_us / onnx_us:.2f}x)"
        )
    print(f"updated {settings.models_dir / 'manifest.json'}")
    return 0


def reexport_shipped_models(settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Export the shipped models again from their checkpoints (INT8 variants too)."""
    try:
        data = split_mnist(load_mnist(settings.data_dir), settings.val_size, settings.seed)
        reexport_shipped(settings.models_dir, data, retime=not settings.keep_latencies)
    except (MnistDataError, ModelFileError, ValueError) as err:
        return refuse(err)
    print(f"updated {settings.models_dir / 'manifest.json'}")
    return 0


def robust(settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Fine-tune the shipped models for real handwriting and non-digits; ship and calibrate."""
    import torch

    from custom_modules.grid.robust import RobustJob, robust_ship
    from custom_modules.training.loop import TrainingPath
    from custom_modules.training.robust import RobustConfig
    from custom_modules.training.style import StyleAugment
    from custom_modules.training.teacher import DISTILL_WEIGHT, TeacherConfig

    cpu = torch.device("cpu")  # the fine-tuning runs on the CPU

    if error := output_dir_error(settings.output_dir):
        return refuse(error)
    style = StyleAugment(
        continental_p=settings.continental, plain_p=settings.plain, thick_p=settings.thick_pens
    )
    teacher = None
    if settings.distill:
        teacher = TeacherConfig(seed=settings.seed, style=style)
        if settings.teacher_epochs is not None:
            teacher = dataclasses.replace(teacher, epochs=settings.teacher_epochs)
    job = RobustJob(
        names=[settings.only] if settings.only else ["Fast", "Large"],
        models_dir=settings.models_dir,
        output_dir=settings.output_dir,
        config=RobustConfig(
            epochs=settings.epochs,
            lr=settings.lr,
            batch_size=settings.batch_size,
            ema_decay=settings.ema_decay,
            seed=settings.seed,
            warmup_epochs=(
                FROM_SCRATCH_WARMUP_EPOCHS if settings.from_scratch else RobustConfig.warmup_epochs
            ),
            distill_weight=DISTILL_WEIGHT if settings.distill else 0.0,
            style=style,
        ),
        non_digit_count=settings.non_digits,
        command=settings.command,
        stop_after=settings.stop_after,
        head_only=settings.head_only,
        interpolate=settings.interpolate,
        interpolate_at=settings.interpolate_at,
        from_scratch=settings.from_scratch,
        widen_mlp=settings.widen_mlp,
        patch_overlap=settings.patch_overlap,
        teacher=teacher,
        path=TrainingPath.baseline() if settings.baseline else TrainingPath.fast(cpu),
    )
    try:
        robust_ship(job, training_splits(settings))
    except (MnistDataError, ModelFileError, ValueError, KeyError) as err:
        return refuse(err)
    print(f"updated {settings.models_dir / 'manifest.json'}; time the models: --retime-shipped")
    return 0


def calibrate_shipped_models(settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Fit the shipped models' temperatures and decline rules again, on validation inputs."""
    from custom_modules.grid.robust import calibrate_shipped

    try:
        data = split_mnist(load_mnist(settings.data_dir), settings.val_size, settings.seed)
        names = None if settings.only is None else [settings.only, f"{settings.only} INT8"]
        calibrate_shipped(settings.models_dir, data, names)
    except (MnistDataError, ModelFileError, ValueError) as err:
        return refuse(err)
    print(f"updated {settings.models_dir / 'manifest.json'}")
    return 0


def output_dir_error(output_dir: Path) -> str | None:
    """Why the output folder cannot be written, or None; checked before any training."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as err:
        return f"{output_dir}: cannot write the output folder ({err.strerror or err})"
    return None


def start_error(n_runs: int, settings: GridSettings) -> str | None:
    """Why a grid of `n_runs` does not start: more runs than --max-runs without --yes, or an
    output folder it cannot write; None when it may."""
    if n_runs > settings.max_runs and not settings.yes:
        return (
            f"{settings.grid} makes {n_runs} runs, more than --max-runs "
            f"{settings.max_runs}; add --yes to start it anyway"
        )
    return output_dir_error(settings.output_dir)


def run_grid(settings: GridSettings, run_one: RunFn | None = None, ship: bool = False) -> int:
    """Run the configurations not yet in the results table; with `ship`, the chosen two only,
    then ship them. `run_one` defaults to `run_config`."""
    run_one = run_one or run_config
    results_path = settings.results_path
    try:
        if ship:
            chosen = {
                name: config_of(row)
                for name, row in chosen_rows(settings.results_table).items()
                if settings.only in (None, name)
            }
            commands = {
                name: lineage(settings.init_from, config, settings.command)
                for name, config in chosen.items()
            }
            configs = list({run_id(c): c for c in chosen.values()}.values())
        else:
            configs = load_grid(settings.grid)
        done = {row["run_id"]: row for row in read_results(results_path)}
    except (GridError, ModelFileError, ResultsTableError, ValueError) as err:
        return refuse(err)
    if error := start_error(len(configs), settings):
        return refuse(error)
    todo = [config for config in configs if run_id(config) not in done]
    source = "chosen to ship" if ship else f"in {settings.grid}"
    print(
        f"{len(configs)} configurations {source}: {len(configs) - len(todo)} done, "
        f"{len(todo)} to run; results in {results_path}"
    )
    if not todo and not ship:
        return 0

    try:
        data = training_splits(settings)
    except (MnistDataError, ValueError) as err:  # ValueError: an impossible --val-size
        return refuse(err)
    print(
        f"{len(data.train_labels)} train / {len(data.val_labels)} val / "
        f"{len(data.test_labels)} test images"
    )

    progress = GridProgress(results_path, len(todo), settings.training_state_path)
    if (exit_code := train_runs(todo, settings, data, run_one, progress)) != 0 or not ship:
        return exit_code
    rows = done | progress.rows  # the rows in memory: read at the start, or just made
    trained = {name: rows[run_id(config)] for name, config in chosen.items()}
    if settings.init_from is not None:
        trained = improved_on_start(trained, settings.init_from)
    if trained:
        models = {
            name: ShippedModel.from_row(row, settings.output_dir, commands[name])
            for name, row in trained.items()
        }
        ship_models(models, settings.models_dir, data, settings.results_table.name)
    return 0


def train_runs(
    todo: list[dict[str, int]],
    settings: GridSettings,
    data: DataSplits,
    run_one: RunFn,
    progress: GridProgress,
) -> int:
    """Run `todo` on the settings' backend, each finished row into `progress`; its exit code."""
    try:
        if settings.backend == "ray":
            from custom_modules.grid.ray_backend import run_on_ray

            run_on_ray(todo, settings, data, run_one, progress)
        else:
            run_locally(todo, settings, data, run_one, progress)
    except (ResultsTableError, OSError) as err:  # cannot write here, or cannot reach Ray
        print(f"error: {err}", file=sys.stderr)
        return 1
    return progress.exit_code()


def train_rung(
    todo: list[dict[str, int]], settings: GridSettings, data: DataSplits, run_one: RunFn
) -> int:
    """Train a rung's runs to `settings.stop_after`, keeping their states for the next rung, then
    time their ONNX files again; the exit code."""
    progress = GridProgress(settings.results_path, len(todo))  # no state_path: states kept
    if (exit_code := train_runs(todo, settings, data, run_one, progress)) != 0:
        return exit_code
    # the runs' own benchmarks came at different moments (or side by side on Ray): the Fast
    # pick compares latencies taken in one sitting, in turns
    return retime(dataclasses.replace(settings, results_table=settings.results_path))


def halving(settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Successive halving over the grid, rung by rung; then the Fast/Large choice from the last.

    A rerun skips the rows each rung's table already has and resumes unfinished runs by epoch.
    """
    run_one = run_one or run_config
    try:
        configs = load_grid(settings.grid)
    except GridError as err:
        return refuse(err)
    if error := start_error(len(configs), settings):
        return refuse(error)
    stops = rung_epochs(settings.min_epochs, settings.halving_factor, settings.epochs)
    # shared by the rungs, each going on from it; absolute: Ray trials run in folders of their own
    state_dir = (settings.output_dir / "train_state").resolve()
    print(
        f"successive halving of {len(configs)} configurations in {settings.grid}: "
        f"{len(stops)} rungs, stopping after epochs {stops} of one {settings.epochs}-epoch schedule"
    )
    data, survivors = None, configs
    for rung, stop_after in enumerate(stops):
        rung_settings = dataclasses.replace(
            settings,
            output_dir=rung_dir(settings.output_dir, stop_after, settings.epochs),
            stop_after=stop_after,
            state_dir=state_dir,
        )
        try:
            done = {row["run_id"]: row for row in read_results(rung_settings.results_path)}
        except ResultsTableError as err:
            return refuse(err)
        todo = [config for config in survivors if run_id(config) not in done]
        print(
            f"rung {rung + 1}/{len(stops)}, to epoch {stop_after}: {len(survivors)} "
            f"configuration(s), {len(todo)} to run; results in {rung_settings.results_path}"
        )
        if todo:
            try:
                data = data or training_splits(settings)
            except (MnistDataError, ValueError) as err:
                return refuse(err)
            if (exit_code := train_rung(todo, rung_settings, data, run_one)) != 0:
                return exit_code
            done = {row["run_id"]: row for row in read_results(rung_settings.results_path)}
        rows = [done[run_id(config)] for config in survivors]
        ranked = sorted(rows, key=accuracy_rank)
        print(
            f"  best at epoch {stop_after}: "
            + ", ".join(f"{row['run_id']} {float(row['val_accuracy']):.4f}" for row in ranked[:3])
        )
        if rung + 1 < len(stops):
            keep = survivors_after(rung, len(configs), settings.halving_factor)
            survivors = [config_of(row) for row in promoted(rows, keep)]
            print(f"  on to the next rung: {', '.join(map(run_id, survivors))}")
    shutil.rmtree(state_dir, ignore_errors=True)  # every survivor has run its whole schedule
    try:
        chosen_rows(rung_settings.results_path)
    except (ResultsTableError, ValueError) as err:
        return refuse(err)
    print(f"to ship them: --ship --results-table {rung_settings.results_path}")
    return 0


def ship(settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Train the chosen configurations with this command's budget, then ship them."""
    return run_grid(settings, run_one, ship=True)


MODES: dict[Mode, Callable[[GridSettings, RunFn | None], int]] = {
    Mode.GRID: run_grid,
    Mode.SELECT: select,
    Mode.SHIP: ship,
    Mode.RETIME: retime,
    Mode.RETIME_SHIPPED: retime_shipped_models,
    Mode.REEXPORT_SHIPPED: reexport_shipped_models,
    Mode.ROBUST: robust,
    Mode.CALIBRATE_SHIPPED: calibrate_shipped_models,
    Mode.HALVING: halving,
}


def run_command(mode: Mode, settings: GridSettings, run_one: RunFn | None = None) -> int:
    """Do what `mode` says with `settings`; the exit code."""
    return MODES[mode](settings, run_one)
