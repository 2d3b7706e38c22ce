"""Grid search of from-scratch ViTs on MNIST: train, evaluate, export to ONNX, benchmark, record.

Each configuration of `param_grid.json` (a scikit-learn `ParameterGrid`) is trained with early
stopping on a validation split, evaluated on the test set, exported to ONNX with its attention
maps, benchmarked (PyTorch eager vs ONNX Runtime) and written as one row of
`<output-dir>/results.csv`. Runs already in that table are skipped, so an interrupted search
resumes where it stopped.

    python grid_search_mnist.py --data-dir ../shared/data/mnist                 # the full grid
    python grid_search_mnist.py --train-subset 2000 --epochs 1 --grid my.json   # a quick look
    python grid_search_mnist.py --backend ray --ray-address HEAD_IP:6379        # on a Ray cluster

A run that fails is reported with its configuration and the others go on; it has no row, so the
next run of the same command retries it. The exit code is 1 when any run failed.
"""

import argparse
import json
import netrc
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sklearn.model_selection import ParameterGrid

from custom_modules.latency import benchmark_latency, onnx_latencies_interleaved
from custom_modules.mnist_data import DEFAULT_DATA_DIR, MnistDataError, load_mnist
from custom_modules.onnx_export import export_onnx
from custom_modules.results_table import (
    ResultsTableError,
    append_result,
    read_results,
    update_results,
)
from custom_modules.selection import FAST_MARGIN, select_models
from custom_modules.shipping import (
    reexport_shipped,
    retime_shipped,
    ship_models,
    shipped_entry,
)
from custom_modules.training import (
    DataSplits,
    TrainConfig,
    TrainingPath,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    select_device,
    split_mnist,
    train_model,
)
from custom_modules.vision_transformer import VisionTransformer, ViTConfig

GRID_KEYS = ("emb_dim", "num_heads", "n_layers", "mlp_ratio")
BACKENDS = ("local", "ray")
RAY_FLAGS = ("ray_address", "ray_num_cpus", "cpus_per_trial", "gpus_per_trial")
SHIPPED_NAMES = ("Fast", "Large")


class GridError(ValueError):
    """The grid file is missing, not JSON, or describes an impossible model."""


def load_grid(path: str | Path) -> list[dict[str, int]]:
    """Read and validate a grid file; return every configuration, in `ParameterGrid` order."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise GridError(f"{path}: grid file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GridError(f"{path}: cannot read the grid file ({err})") from None
    except json.JSONDecodeError as err:
        raise GridError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(spec, dict) or not spec:
        raise GridError(f"{path}: expected a JSON object mapping parameter names to lists")
    unknown = sorted(set(spec) - set(GRID_KEYS))
    if unknown:
        raise GridError(f"{path}: unknown key(s) {unknown}; allowed: {list(GRID_KEYS)}")
    missing = [key for key in GRID_KEYS if key not in spec]
    if missing:
        raise GridError(f"{path}: missing key(s) {missing}")
    for key, values in spec.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{path}: '{key}' must be a non-empty list of positive integers")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GridError(f"{path}: '{key}' has {value!r}; expected positive integers")
    configs = list(ParameterGrid(spec))
    for config in configs:
        if config["emb_dim"] % config["num_heads"] != 0:
            raise GridError(
                f"{path}: emb_dim {config['emb_dim']} is not divisible by "
                f"num_heads {config['num_heads']}"
            )
    return configs


def run_id(config: dict[str, int]) -> str:
    """A stable name for a configuration, e.g. `vit-e64-h4-l2-m2`."""
    return "vit-e{emb_dim}-h{num_heads}-l{n_layers}-m{mlp_ratio}".format(**config)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the module docstring's layout and show every flag's default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder with the four MNIST IDX files (downloaded there if missing)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs/grid"),
        help="results.csv, onnx/ and wandb/ go here",
    )
    parser.add_argument("--grid", type=Path, default=Path("param_grid.json"))
    parser.add_argument(
        "--max-runs",
        type=int,
        default=200,
        help="a grid with more runs than this asks for --yes before it starts",
    )
    parser.add_argument("--yes", action="store_true", help="start a grid larger than --max-runs")
    parser.add_argument(
        "--select",
        action="store_true",
        help="print the Fast/Large choice made from --results-table, then stop",
    )
    parser.add_argument(
        "--retime",
        action="store_true",
        help="time the ONNX files of every run in --results-table again, all in one sitting and "
        "taking turns (files read from --output-dir), update their ONNX p50/p90, then stop",
    )
    parser.add_argument(
        "--retime-shipped",
        action="store_true",
        help="time the models of --models-dir/manifest.json again (PyTorch and ONNX in turns, "
        "one sitting, --bench-calls each), update their p50 latencies there, then stop",
    )
    parser.add_argument(
        "--reexport-shipped",
        action="store_true",
        help="export the models of --models-dir again from their checkpoints with the current "
        "export code (INT8 variants and latencies too; needs --data-dir), then stop",
    )
    parser.add_argument(
        "--ship",
        action="store_true",
        help="train the chosen configurations with this command's budget into --output-dir, "
        "then write them, their INT8 variants and manifest.json to --models-dir",
    )
    parser.add_argument(
        "--results-table",
        type=Path,
        default=Path("models/grid_results.csv"),
        help="the grid's results that --select and --ship choose from (and --retime updates)",
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument(
        "--only",
        choices=SHIPPED_NAMES,
        default=None,
        help="with --ship: train and ship this model alone; the other's files and entry stay",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="with --ship: start each model from its shipped checkpoint in this models folder "
        "(a further cosine cycle) instead of random weights",
    )
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--patience",
        type=int,
        default=3,
        help="epochs without a better validation loss before stopping",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--elastic-alpha",
        type=float,
        default=0.0,
        help="add elastic distortion of this strength (pixels, sigma 4) to the affine augmentation",
    )
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="train on the images as they are (e.g. a short low-lr polish after augmentation)",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--train-subset", type=int, default=None, help="train on this many images only (quick runs)"
    )
    parser.add_argument(
        "--val-size",
        type=int,
        default=5000,
        help="images held out of the 60k training set for validation",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="train in fp32 with the written-out attention instead of the fast path",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--wandb",
        choices=["online", "offline", "disabled"],
        default="online",
        help="online falls back to offline when you are not logged in",
    )
    parser.add_argument("--wandb-project", default="vit-digits")
    parser.add_argument("--bench-threads", type=int, default=1)
    parser.add_argument(
        "--bench-calls",
        type=int,
        default=500,
        help="timed batch-1 calls per runtime in the latency benchmark",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: one run after the other here; ray: one Ray Tune trial per configuration",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="an existing Ray cluster, e.g. HEAD_IP:6379 (default: start a local Ray instance)",
    )
    parser.add_argument(
        "--ray-num-cpus",
        type=int,
        default=None,
        help="CPUs of the local Ray instance (default: all of this machine's)",
    )
    parser.add_argument(
        "--cpus-per-trial",
        type=float,
        default=None,
        help="CPUs Ray reserves for each trial, and its PyTorch threads (default: 1)",
    )
    parser.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPUs Ray reserves for each trial; fractions share a GPU (default: 0)",
    )
    return parser.parse_args(argv)


def backend_args_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the backend flags, or None."""
    if args.backend == "local":
        given = [flag for flag in RAY_FLAGS if vars(args)[flag] is not None]
        flags = ", ".join(f"--{flag.replace('_', '-')}" for flag in given)
        return f"{flags}: only with --backend ray" if given else None
    if args.ray_address is not None and args.ray_num_cpus is not None:
        return "--ray-num-cpus sizes a local Ray instance; the cluster at --ray-address has its own"
    if args.ray_num_cpus is not None and args.ray_num_cpus < 1:
        return "--ray-num-cpus must be at least 1"
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        return "--cpus-per-trial must be more than 0"
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        return "--gpus-per-trial must be 0 or more"
    if args.device.startswith("cuda") and not args.gpus_per_trial:
        return f"--device {args.device} with --backend ray needs --gpus-per-trial > 0"
    return None


def wandb_mode(requested: str) -> str:
    """`online` only when there is a W&B login; never prompt, never block on the network."""
    if requested != "online":
        return requested
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    print("W&B: no login found, logging offline (see README: `wandb sync`)", file=sys.stderr)
    return "offline"


@dataclass
class WandbLogger:
    """One W&B run per configuration; a no-op when W&B is disabled."""

    run: object | None

    @classmethod
    def start(cls, mode: str, project: str, name: str, config: dict, root: Path) -> "WandbLogger":
        if mode == "disabled":
            return cls(None)
        import wandb

        root.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project,
            name=name,
            config=config,
            mode=mode,
            dir=root,
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )
        return cls(run)

    def log(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.log(metrics, step=metrics.get("epoch"))

    def finish(self, summary: dict, onnx_path: Path | None, exit_code: int = 0) -> None:
        if self.run is None:
            return
        import wandb

        self.run.summary.update(summary)
        if onnx_path is not None:
            artifact = wandb.Artifact(self.run.name, type="model")
            artifact.add_file(str(onnx_path))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=exit_code)

    @property
    def run_path(self) -> str:
        return "" if self.run is None else f"{self.run.project}/{self.run.id}"


def training_state_path(output_dir: Path, name: str) -> Path:
    """Where a run's training state waits, epoch by epoch, until its row is in the table."""
    return output_dir / "train_state" / f"{name}.pt"


def run_config(
    config: dict[str, int], args: argparse.Namespace, data: DataSplits, device: torch.device
) -> dict:
    """Train, evaluate, export and benchmark one configuration; return its results row."""
    name = run_id(config)
    path = TrainingPath.baseline() if args.baseline else TrainingPath.fast(device)
    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        augment=not args.no_augment,
        elastic_alpha=args.elastic_alpha,
        bf16=path.bf16,
        seed=args.seed,
    )
    torch.manual_seed(args.seed)
    model = VisionTransformer(ViTConfig(**config), path.fused_attention)
    if args.init_from is not None:
        checkpoint = args.init_from / shipped_entry(args.init_from, config)["checkpoint"]
        model.load_state_dict(load_checkpoint(checkpoint).state_dict())
    model = model.to(device)
    logger = WandbLogger.start(
        wandb_mode(args.wandb),
        args.wandb_project,
        name,
        {
            **model.config.to_dict(),
            **vars(train_config),
            "fused_attention": path.fused_attention,
            "params": model.num_parameters(),
        },
        args.output_dir,
    )

    def on_epoch(record: dict) -> None:
        logger.log(record)
        print(
            f"{name} epoch {record['epoch']}/{train_config.epochs}: train loss "
            f"{record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
            f"val acc {record['val_accuracy']:.4f}",
            flush=True,
        )

    try:
        state_path = training_state_path(args.output_dir, name)
        result = train_model(model, data, train_config, on_epoch, state_path)
        val = evaluate(model, data.val_images, data.val_labels)
        test = evaluate(model, data.test_images, data.test_labels)
        model = model.to("cpu").eval()
        checkpoint_path = save_checkpoint(model, args.output_dir / "checkpoints" / f"{name}.pt")
        onnx_path = export_onnx(model, args.output_dir / "onnx" / f"{name}.onnx")
        latency = benchmark_latency(model, onnx_path, args.bench_threads, args.bench_calls)
    except BaseException:
        logger.finish({}, None, exit_code=1)
        raise
    row = {
        "run_id": name,
        **config,
        "params": model.num_parameters(),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 1),
        "train_images_per_s": round(result.images_per_second, 1),
        **{f"val_{k}": round(v, 5) for k, v in val.items()},
        **{f"test_{k}": round(v, 5) for k, v in test.items()},
        **{k: round(v, 1) for k, v in latency.items()},
        "onnx_size_bytes": onnx_path.stat().st_size,
        "onnx_file": str(onnx_path.relative_to(args.output_dir)),
        "checkpoint_file": str(checkpoint_path.relative_to(args.output_dir)),
        "wandb_run": logger.run_path,
    }
    logger.finish({k: v for k, v in row.items() if k != "run_id"}, onnx_path)
    return row


RunFn = Callable[[dict[str, int], argparse.Namespace, DataSplits, torch.device], dict]


def describe(config: dict[str, int]) -> str:
    """A configuration for messages: `vit-e64-h4-l2-m2 (emb_dim=64, num_heads=4, ...)`."""
    params = ", ".join(f"{key}={config[key]}" for key in GRID_KEYS)
    return f"{run_id(config)} ({params})"


@dataclass
class GridProgress:
    """Adds each finished run to the results table and reports every run as it ends."""

    results_path: Path
    total: int
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ended(self) -> int:
        return len(self.finished) + len(self.failed)

    def record(self, row: dict, seconds: float) -> None:
        """Append the row (raises ResultsTableError when the table cannot be written)."""
        append_result(self.results_path, row)
        training_state_path(self.results_path.parent, row["run_id"]).unlink(missing_ok=True)
        self.finished.append(row["run_id"])
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


def run_locally(
    todo: list[dict[str, int]],
    args: argparse.Namespace,
    data: DataSplits,
    run_one: RunFn,
    progress: GridProgress,
) -> None:
    """One run after the other in this process; a run that raises is reported and skipped."""
    device = select_device(args.device)
    data = data.to(device)
    print(f"device {device}")
    for config in todo:
        started = time.perf_counter()
        try:
            row = run_one(config, args, data, device)
        except Exception as err:  # not KeyboardInterrupt: Ctrl+C stops the whole grid
            traceback.print_exc()
            progress.record_failure(config, err)
            continue
        progress.record(row, time.perf_counter() - started)


def chosen_configs(results_table: Path) -> dict[str, dict[str, int]]:
    """Apply the README's rule to the grid's results: {"Fast": config, "Large": config}."""
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
    return {name: {key: int(row[key]) for key in GRID_KEYS} for name, row in chosen.items()}


def retime(results_table: Path, output_dir: Path, threads: int, calls: int) -> None:
    """Re-measure every run's ONNX latency in one sitting and write it into the table."""
    rows = read_results(results_table)
    if not rows:
        raise ValueError(f"{results_table}: the results table is empty: run the grid first")
    paths = [output_dir / row["onnx_file"] for row in rows]
    if missing := [str(path) for path in paths if not path.is_file()]:
        raise ValueError(
            f"ONNX files not found (is --output-dir the grid's?): {', '.join(missing)}"
        )
    print(
        f"timing {len(paths)} ONNX files in turns, {calls} batch-1 calls each, {threads} thread(s)"
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
    update_results(results_table, changes)
    print(f"updated {results_table}")


def lineage(init_from: Path | None, config: dict[str, int], command: str) -> str:
    """The commands that make a model: with --init-from, the shipped one's, then this."""
    if init_from is None:
        return command
    previous = shipped_entry(init_from, config)["command"]
    # a rerun after shipping into the same folder finds this command already there
    return previous if previous.endswith(f" && {command}") else f"{previous} && {command}"


def improved_on_start(trained: dict[str, dict], init_from: Path) -> dict[str, dict]:
    """The runs whose validation accuracy is at least that of the model they started from."""
    kept = {}
    for name, row in trained.items():
        config = {key: int(row[key]) for key in GRID_KEYS}
        start, end = shipped_entry(init_from, config)["val_accuracy"], float(row["val_accuracy"])
        if end >= start:
            kept[name] = row
        else:
            print(f"{name}: val acc {end:.4f}, below the {start:.4f} it started from: not shipped")
    return kept


def output_dir_error(output_dir: Path) -> str | None:
    """Why the output folder cannot be written, or None; checked before any training."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as err:
        return f"{output_dir}: cannot write the output folder ({err.strerror or err})"
    return None


def main(argv: list[str] | None = None, run_one: RunFn | None = None) -> int:
    """Run the configurations not yet in the results table; `run_one` defaults to `run_config`."""
    args = parse_args(argv)
    run_one = run_one or run_config
    results_path = args.output_dir / "results.csv"
    if (args.only or args.init_from) and not args.ship:
        print("error: --only and --init-from go with --ship", file=sys.stderr)
        return 2
    if args.no_augment and args.elastic_alpha > 0:
        print(
            "error: --elastic-alpha needs the augmentation that --no-augment turns off",
            file=sys.stderr,
        )
        return 2
    if error := backend_args_error(args):
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.retime:
        try:
            retime(args.results_table, args.output_dir, args.bench_threads, args.bench_calls)
        except (ResultsTableError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.retime_shipped:
        try:
            models = retime_shipped(args.models_dir, args.bench_calls)["models"]
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for name, entry in models.items():
            onnx_us, torch_us = entry["onnx_p50_us"], entry["torch_p50_us"]
            print(
                f"{name:<11} ONNX p50 {onnx_us:>7.1f} µs, PyTorch p50 {torch_us:>7.1f} µs "
                f"({torch_us / onnx_us:.2f}x)"
            )
        print(f"updated {args.models_dir / 'manifest.json'}")
        return 0
    if args.reexport_shipped:
        try:
            data = split_mnist(load_mnist(args.data_dir), args.val_size, args.seed)
            reexport_shipped(args.models_dir, data)
        except (MnistDataError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"updated {args.models_dir / 'manifest.json'}")
        return 0
    try:
        if args.select or args.ship:
            chosen = chosen_configs(args.results_table)
            if args.select:
                return 0
            chosen = {name: c for name, c in chosen.items() if args.only in (None, name)}
            command = "python grid_search_mnist.py " + shlex.join(
                sys.argv[1:] if argv is None else argv
            )
            commands = {name: lineage(args.init_from, c, command) for name, c in chosen.items()}
            configs = list({run_id(c): c for c in chosen.values()}.values())
        else:
            configs = load_grid(args.grid)
        done = {row["run_id"] for row in read_results(results_path)}
    except (GridError, ResultsTableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(configs) > args.max_runs and not args.yes:
        print(
            f"error: {args.grid} makes {len(configs)} runs, more than --max-runs "
            f"{args.max_runs}; add --yes to start it anyway",
            file=sys.stderr,
        )
        return 2
    if error := output_dir_error(args.output_dir):
        print(f"error: {error}", file=sys.stderr)
        return 2
    todo = [config for config in configs if run_id(config) not in done]
    source = "chosen to ship" if args.ship else f"in {args.grid}"
    print(
        f"{len(configs)} configurations {source}: {len(configs) - len(todo)} done, "
        f"{len(todo)} to run; results in {results_path}"
    )
    if not todo and not args.ship:
        return 0

    try:
        mnist = load_mnist(args.data_dir)
    except MnistDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        data = split_mnist(mnist, args.val_size, args.seed, args.train_subset)
    except ValueError as err:  # an impossible --val-size
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{len(data.train_labels)} train / {len(data.val_labels)} val / "
        f"{len(data.test_labels)} test images"
    )

    progress = GridProgress(results_path, len(todo))
    try:
        if args.backend == "ray":
            from custom_modules.ray_backend import run_on_ray

            run_on_ray(todo, args, data, run_one, progress)
        else:
            run_locally(todo, args, data, run_one, progress)
    except (ResultsTableError, OSError) as err:  # cannot write here, or cannot reach Ray
        print(f"error: {err}", file=sys.stderr)
        return 1
    if (exit_code := progress.exit_code()) != 0 or not args.ship:
        return exit_code
    rows = {row["run_id"]: row for row in read_results(results_path)}
    trained = {name: rows[run_id(config)] for name, config in chosen.items()}
    if args.init_from is not None:
        trained = improved_on_start(trained, args.init_from)
    if trained:
        ship_models(
            trained, args.output_dir, args.models_dir, data, args.results_table.name, commands
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
