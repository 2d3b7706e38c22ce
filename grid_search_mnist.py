"""Grid search of from-scratch ViTs on MNIST: train, evaluate, export to ONNX, benchmark, record.

Each configuration of `param_grid.json` (a scikit-learn `ParameterGrid`) is trained with early
stopping on a validation split, evaluated on the test set, exported to ONNX with its attention
maps, benchmarked (PyTorch eager vs ONNX Runtime) and written as one row of
`<output-dir>/results.csv`. Runs already in that table are skipped, so an interrupted search
resumes where it stopped.

    python grid_search_mnist.py --data-dir ../shared/data/mnist                 # the full grid
    python grid_search_mnist.py --train-subset 2000 --epochs 1 --grid my.json   # a quick look
    python grid_search_mnist.py --backend ray --ray-address HEAD_IP:6379        # on a Ray cluster
    python grid_search_mnist.py --halving --epochs 9 --data-dir ../shared/data/mnist  # 1, 3, 9

One mode at a time: the grid (no mode flag), or --halving, --select, --ship, --retime,
--retime-shipped, --reexport-shipped, --robust or --calibrate-shipped. A run that fails is
reported with its configuration and the others go on; it has no row, so the next run of the same
command retries it. The exit code is 1 when any run failed, 2 when the command is refused before
any work (a one-line message says why).
"""

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from custom_modules.grid.settings import (
    BACKENDS,
    FROM_SCRATCH_WARMUP_EPOCHS,
    SHIPPED_NAMES,
    WANDB_MODES,
    GridSettings,
    Mode,
    RaySettings,
    settings_error,
)

DEFAULTS = GridSettings()


class UsageError(Exception):
    """A command line that cannot be run as typed; the message is one line."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the module docstring's layout; add "(default: X)" where there is a default to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        no_default = action.nargs == 0 or action.default in (None, argparse.SUPPRESS)
        if no_default or "default" in help_text or not action.option_strings:
            return help_text
        return f"{help_text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # the default prints the whole usage first
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="grid_search_mnist.py", description=__doc__, formatter_class=HelpFormatter
    )
    modes = parser.add_argument_group("mode (at most one; none runs the grid)")
    exclusive = modes.add_mutually_exclusive_group()
    mode_help = {
        Mode.HALVING: "the grid by successive halving: every configuration trained to "
        "--min-epochs of the --epochs schedule, the best 1/--halving-factor (and the Fast pick) "
        "on for --halving-factor times as many, and so on to --epochs; each rung's table in "
        "<output-dir>/rungs/, the last one chooses",
        Mode.SELECT: "print the Fast/Large choice made from --results-table, then stop",
        Mode.SHIP: "train the chosen configurations with this command's budget into --output-dir, "
        "then write them, their INT8 variants and manifest.json to --models-dir",
        Mode.RETIME: "time the ONNX files of every run in --results-table again, all in one "
        "sitting and taking turns (files read from --output-dir), update their ONNX p50/p90",
        Mode.RETIME_SHIPPED: "time the models of --models-dir/manifest.json again (PyTorch and "
        "ONNX in turns, one sitting, --bench-calls each), update their p50 latencies there",
        Mode.REEXPORT_SHIPPED: "export the models of --models-dir again from their checkpoints "
        "with the current export code (INT8 variants and latencies too; needs --data-dir)",
        Mode.ROBUST: "fine-tune the shipped models (or --only one) from their checkpoints for real "
        "handwriting and for declining non-digits, then ship and calibrate them (models/README.md)",
        Mode.CALIBRATE_SHIPPED: "fit every shipped model's temperature and decline rule again on "
        "validation inputs and write them, with their calibration errors, into the manifest",
    }
    for mode, help_text in mode_help.items():
        exclusive.add_argument(
            f"--{mode.value}", dest="mode", action="store_const", const=mode, help=help_text
        )
    parser.set_defaults(mode=Mode.GRID)

    files = parser.add_argument_group("files")
    files.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULTS.data_dir,
        help="folder with the four MNIST IDX files (downloaded there if missing)",
    )
    files.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULTS.output_dir,
        help="results.csv, onnx/, checkpoints/ and wandb/ go here",
    )
    files.add_argument(
        "--grid", type=Path, default=DEFAULTS.grid, help="the grid file: lists of values per key"
    )
    files.add_argument(
        "--results-table",
        type=Path,
        default=DEFAULTS.results_table,
        help="the grid's results that --select and --ship choose from (and --retime updates)",
    )
    files.add_argument(
        "--models-dir",
        type=Path,
        default=DEFAULTS.models_dir,
        help="the shipped models and their manifest.json",
    )

    grid = parser.add_argument_group("the grid")
    grid.add_argument(
        "--max-runs",
        type=int,
        default=DEFAULTS.max_runs,
        help="a grid with more runs than this asks for --yes before it starts",
    )
    grid.add_argument("--yes", action="store_true", help="start a grid larger than --max-runs")
    grid.add_argument(
        "--halving-factor",
        type=int,
        default=DEFAULTS.halving_factor,
        help="with --halving: each rung keeps 1 run in this many and trains it this many times "
        "as long",
    )
    grid.add_argument(
        "--min-epochs",
        type=int,
        default=DEFAULTS.min_epochs,
        help="with --halving: the first rung's epochs, which every configuration trains",
    )

    shipping = parser.add_argument_group("shipping")
    shipping.add_argument(
        "--only",
        choices=SHIPPED_NAMES,
        help="with --ship, --robust or --calibrate-shipped: this model (and its INT8 variant) "
        "alone; the other's files and entry stay",
    )
    shipping.add_argument(
        "--init-from",
        type=Path,
        help="with --ship: start each model from its shipped checkpoint in this models folder "
        "(a further cosine cycle) instead of random weights",
    )
    shipping.add_argument(
        "--keep-latencies",
        action="store_true",
        help="with --reexport-shipped: keep the manifest's latencies instead of timing the "
        "models again (on a busy machine; --retime-shipped times them later)",
    )

    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="at most this many")
    training.add_argument(
        "--patience",
        type=int,
        default=DEFAULTS.patience,
        help="epochs without a better validation loss before stopping",
    )
    training.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="images per training step"
    )
    training.add_argument(
        "--lr", type=float, default=DEFAULTS.lr, help="peak learning rate of AdamW"
    )
    training.add_argument(
        "--elastic-alpha",
        type=float,
        default=DEFAULTS.elastic_alpha,
        help="add elastic distortion of this strength (pixels, sigma 4) to the affine "
        "augmentation; 0 turns it off",
    )
    training.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="train on the images as they are (e.g. a short low-lr polish after augmentation)",
    )
    training.add_argument(
        "--train-subset", type=int, help="train on this many images only (quick runs; default: all)"
    )
    training.add_argument(
        "--val-size",
        type=int,
        default=DEFAULTS.val_size,
        help="images held out of the 60k training set for validation",
    )
    training.add_argument(
        "--device", default=DEFAULTS.device, help="auto (CUDA if there is one), cpu, cuda or cuda:N"
    )
    training.add_argument(
        "--baseline",
        action="store_true",
        help="train in fp32 with the written-out attention instead of the fast path",
    )
    training.add_argument(
        "--seed", type=int, default=DEFAULTS.seed, help="seeds the split, weights and batches"
    )
    training.add_argument(
        "--ema-decay",
        type=float,
        default=DEFAULTS.ema_decay,
        help="with --robust: the shipped weights are this exponential moving average per step",
    )
    training.add_argument(
        "--non-digits",
        type=int,
        default=DEFAULTS.non_digits,
        help="with --robust: non-digit images made for training to decline them",
    )
    training.add_argument(
        "--stop-after",
        type=int,
        help="with --robust: ship after this epoch of the --epochs schedule; the same command "
        "without it goes on from there (default: run the whole schedule)",
    )
    training.add_argument(
        "--head-only",
        action="store_true",
        help="with --robust: refit only the final norm and head, on the frozen blocks' features "
        "(minutes, for a model too big to fine-tune in the time there is)",
    )
    training.add_argument(
        "--interpolate",
        action="store_true",
        help="with --robust: ship the mix of the start's and the fine-tuned weights (WiSE-FT) "
        "that is most fine-tuned while keeping the start's clean validation accuracy",
    )
    training.add_argument(
        "--interpolate-at",
        type=float,
        metavar="ALPHA",
        help="with --robust: ship the mix with this share of the fine-tuned weights instead "
        "(chosen on validation by benchmarks/weight_mix.py); every mix is still read and kept",
    )
    training.add_argument(
        "--from-scratch",
        action="store_true",
        help="with --robust: train the shipped models' configurations from fresh weights with "
        f"the recipe ({FROM_SCRATCH_WARMUP_EPOCHS:g} epochs of warm-up) instead of fine-tuning "
        "their checkpoints",
    )
    training.add_argument(
        "--widen-mlp",
        type=int,
        metavar="RATIO",
        help="with --robust: widen the checkpoints' MLPs to this ratio of the embedding before "
        "fine-tuning (the new units enter with zero weight, so the start reads as before); "
        "with --from-scratch: train the configuration with MLPs this wide",
    )
    training.add_argument(
        "--patch-overlap",
        type=int,
        metavar="PIXELS",
        help="with --robust: each patch kernel also reads this many pixels of the neighbouring "
        "patches on every side (2: 8x8 kernels on the same 7x7 grid); the checkpoints' kernels "
        "grow with zeros around them, so the start reads as before; with --from-scratch: train "
        "the configuration with kernels this large",
    )
    training.add_argument(
        "--distill",
        action="store_true",
        help="with --robust: train a small CNN teacher on the same restyled digits (resumable, "
        "in --output-dir), then take half of the digits' loss from its outputs (DeiT)",
    )
    training.add_argument(
        "--teacher-epochs",
        type=int,
        metavar="N",
        help="with --distill: train the teacher for N epochs (default: its recipe's, in "
        "custom_modules/training/teacher.py)",
    )
    training.add_argument(
        "--continental",
        type=float,
        default=DEFAULTS.continental,
        metavar="SHARE",
        help="with --robust: give this share of the training 1s a flag (some a foot too) and of "
        "the 7s a bar across the stem, as writers outside the US form them (default: 0)",
    )
    training.add_argument(
        "--plain",
        type=float,
        default=DEFAULTS.plain,
        metavar="SHARE",
        help="with --robust: keep this share of the training images in MNIST's own style, only "
        "framed as served (default: 0, every image restyled)",
    )
    training.add_argument(
        "--thick-pens",
        type=float,
        default=DEFAULTS.thick_pens,
        metavar="SHARE",
        help="with --robust: draw this share of the restyled images with the widest pen, about a "
        "third of the digit's height, as a small digit drawn with a wide brush (default: 0)",
    )

    logging = parser.add_argument_group("logging and benchmarks")
    logging.add_argument(
        "--wandb",
        choices=WANDB_MODES,
        default=DEFAULTS.wandb,
        help="online falls back to offline when you are not logged in",
    )
    logging.add_argument(
        "--wandb-project", default=DEFAULTS.wandb_project, help="the W&B project of the runs"
    )
    logging.add_argument(
        "--bench-threads",
        type=int,
        default=DEFAULTS.bench_threads,
        help="threads of the latency benchmark, for both runtimes",
    )
    logging.add_argument(
        "--bench-calls",
        type=int,
        default=DEFAULTS.bench_calls,
        help="timed batch-1 calls per runtime in the latency benchmark",
    )

    backend = parser.add_argument_group("backend")
    backend.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULTS.backend,
        help="local: one run after the other here; ray: one Ray Tune trial per configuration",
    )
    backend.add_argument(
        "--ray-address",
        help="an existing Ray cluster, e.g. HEAD_IP:6379 (default: start a local Ray instance)",
    )
    backend.add_argument(
        "--ray-num-cpus",
        type=int,
        help="CPUs of the local Ray instance (default: all of this machine's)",
    )
    backend.add_argument(
        "--cpus-per-trial",
        type=float,
        help="CPUs Ray reserves for each trial, and its PyTorch threads (default: 1)",
    )
    backend.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs Ray reserves for each trial; fractions share a GPU (default: 0)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[Mode, GridSettings]:
    """The mode and the settings of a command line; UsageError when it contradicts itself."""
    args = build_parser().parse_args(argv)
    typed = sys.argv[1:] if argv is None else argv
    plain = {f.name: getattr(args, f.name) for f in fields(GridSettings) if hasattr(args, f.name)}
    settings = GridSettings(
        **plain,
        ray=RaySettings(
            args.ray_address, args.ray_num_cpus, args.cpus_per_trial, args.gpus_per_trial
        ),
        command="python grid_search_mnist.py " + shlex.join(typed),
    )
    if error := settings_error(args.mode, settings):
        raise UsageError(error)
    return args.mode, settings


def main(argv: list[str] | None = None, run_one=None) -> int:
    """Parse the command line, then run its mode; `run_one` stands in for one run (tests)."""
    try:
        mode, settings = parse_args(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        from custom_modules.grid.commands import run_command  # torch: only after parsing
    except ModuleNotFoundError as err:  # the app's install has no PyTorch
        print(
            f"error: {err.name} is not installed: training needs the full install, the README's "
            "test command (the app's requirements.txt is not enough)",
            file=sys.stderr,
        )
        return 2
    return run_command(mode, settings, run_one)


if __name__ == "__main__":
    sys.exit(main())
