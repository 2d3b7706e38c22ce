"""What a grid command is asked to do: its mode and its typed settings (torch-free, fast).

`grid_search_mnist.py` parses the command line into these; the run logic reads only them.
"""

import enum
from dataclasses import dataclass, field
from pathlib import Path

# The MNIST loader's default folder (training/mnist_data.py), spelled out here so that
# `grid_search_mnist.py --help` imports no numpy; tests/test_grid_guards.py checks they agree.
DEFAULT_DATA_DIR = Path.home() / ".cache" / "mnist"
BACKENDS = ("local", "ray")
SHIPPED_NAMES = ("Fast", "Large")
WANDB_MODES = ("online", "offline", "disabled")
FROM_SCRATCH_WARMUP_EPOCHS = 2.0  # --robust --from-scratch: fresh weights take a longer warm-up


class Mode(enum.Enum):
    """One command, one mode: the grid (the default) or one of the tools around it."""

    GRID = "grid"
    SELECT = "select"
    SHIP = "ship"
    RETIME = "retime"
    RETIME_SHIPPED = "retime-shipped"
    REEXPORT_SHIPPED = "reexport-shipped"
    ROBUST = "robust"
    CALIBRATE_SHIPPED = "calibrate-shipped"
    HALVING = "halving"


@dataclass(frozen=True)
class RaySettings:
    """Where and how big the Ray runs are; None: Ray's own choice (see each field)."""

    address: str | None = None  # an existing cluster; None starts a local Ray instance
    num_cpus: int | None = None  # CPUs of the local instance; None: all of this machine's
    cpus_per_trial: float | None = None  # None: 1
    gpus_per_trial: float | None = None  # None: 0

    def given(self) -> list[str]:
        """The command-line flags of the fields that are set."""
        return [
            f"--{flag}"
            for flag, value in (
                ("ray-address", self.address),
                ("ray-num-cpus", self.num_cpus),
                ("cpus-per-trial", self.cpus_per_trial),
                ("gpus-per-trial", self.gpus_per_trial),
            )
            if value is not None
        ]


@dataclass(frozen=True)
class GridSettings:
    """Everything a grid command reads besides its mode; the defaults are the CLI's defaults."""

    data_dir: Path = DEFAULT_DATA_DIR
    output_dir: Path = Path("runs/grid")
    grid: Path = Path("param_grid.json")
    max_runs: int = 200
    yes: bool = False
    results_table: Path = Path("models/grid_results.csv")
    models_dir: Path = Path("models")
    only: str | None = None
    init_from: Path | None = None
    keep_latencies: bool = False
    epochs: int = 15
    patience: int = 3
    batch_size: int = 128
    elastic_alpha: float = 0.0
    augment: bool = True
    lr: float = 1e-3
    train_subset: int | None = None
    val_size: int = 5000
    device: str = "auto"
    baseline: bool = False
    seed: int = 0
    ema_decay: float = 0.999
    non_digits: int = 40000
    stop_after: int | None = None
    head_only: bool = False
    interpolate: bool = False
    interpolate_at: float | None = None
    from_scratch: bool = False
    widen_mlp: int | None = None
    patch_overlap: int | None = None
    distill: bool = False
    teacher_epochs: int | None = None  # None: TeacherConfig's own
    continental: float = 0.0
    plain: float = 0.0
    thick_pens: float = 0.0
    halving_factor: int = 3
    min_epochs: int = 1
    state_dir: Path | None = None  # runs' training states; None: <output-dir>/train_state
    wandb: str = "online"
    wandb_project: str = "vit-digits"
    bench_threads: int = 1
    bench_calls: int = 500
    backend: str = "local"
    ray: RaySettings = field(default_factory=RaySettings)
    command: str = "python grid_search_mnist.py"  # as typed; recorded with shipped models

    @property
    def results_path(self) -> Path:
        """This command's own results table, in --output-dir."""
        return self.output_dir / "results.csv"

    def training_state_path(self, name: str) -> Path:
        """Where a run's training state waits, epoch by epoch, until its row is in the table."""
        return (self.state_dir or self.output_dir / "train_state") / f"{name}.pt"


def settings_error(mode: Mode, settings: GridSettings) -> str | None:
    """What is contradictory or impossible in these settings, or None; checked before any work."""
    if settings.only and mode not in (Mode.SHIP, Mode.ROBUST, Mode.CALIBRATE_SHIPPED):
        return "--only and --init-from go with --ship (--only with --robust too)"
    if settings.init_from and mode is not Mode.SHIP:
        return "--init-from goes with --ship"
    robust_only = (
        settings.stop_after is not None
        or settings.head_only
        or settings.interpolate
        or settings.interpolate_at is not None
        or settings.from_scratch
        or settings.widen_mlp is not None
        or settings.patch_overlap is not None
        or settings.distill
        or settings.continental
        or settings.plain
        or settings.thick_pens
    )
    if robust_only and mode is not Mode.ROBUST:
        return (
            "--stop-after, --head-only, --interpolate(-at), --from-scratch, --widen-mlp, "
            "--patch-overlap, "
            "--distill, --continental, --plain and --thick-pens go with --robust"
        )
    halving_flags = (settings.halving_factor, settings.min_epochs) != (
        GridSettings.halving_factor,
        GridSettings.min_epochs,
    )
    if halving_flags and mode is not Mode.HALVING:
        return "--halving-factor and --min-epochs go with --halving"
    if settings.halving_factor < 2:
        return f"--halving-factor {settings.halving_factor}: keep 1 in at least 2 (2 or more)"
    if not 1 <= settings.min_epochs <= settings.epochs:
        return f"--min-epochs {settings.min_epochs}: between 1 and --epochs ({settings.epochs})"
    shares = {
        "--continental": settings.continental,
        "--plain": settings.plain,
        "--thick-pens": settings.thick_pens,
    }
    for flag, share in shares.items():
        if not 0 <= share <= 1:
            return f"{flag} {share} is a share: between 0 and 1"
    if settings.interpolate_at is not None:
        if settings.interpolate:
            return "--interpolate chooses the mix by its rule; --interpolate-at gives it: one"
        if not 0 <= settings.interpolate_at <= 1:
            return f"--interpolate-at {settings.interpolate_at} is a share: between 0 and 1"
    if settings.from_scratch and (
        settings.head_only or settings.interpolate or settings.interpolate_at is not None
    ):
        return (
            "--from-scratch starts from fresh weights: no head to refit alone, no start worth "
            "mixing with (--head-only, --interpolate(-at))"
        )
    if settings.widen_mlp is not None and settings.head_only:
        return "--widen-mlp widens the MLPs to train them; --head-only keeps the blocks frozen"
    if settings.patch_overlap is not None and settings.head_only:
        return (
            "--patch-overlap grows the patch kernels to train them; --head-only keeps them frozen"
        )
    if settings.patch_overlap is not None and settings.patch_overlap < 0:
        return f"--patch-overlap {settings.patch_overlap}: pixels, 0 or more"
    if settings.widen_mlp is not None and settings.widen_mlp < 1:
        return f"--widen-mlp {settings.widen_mlp}: an MLP ratio, at least 1"
    if settings.teacher_epochs is not None and not settings.distill:
        return "--teacher-epochs goes with --distill"
    if settings.teacher_epochs is not None and settings.teacher_epochs < 1:
        return "--teacher-epochs must be at least 1"
    if settings.distill and settings.head_only:
        return "--distill trains the whole network; --head-only refits the head alone"
    if settings.keep_latencies and mode is not Mode.REEXPORT_SHIPPED:
        return "--keep-latencies goes with --reexport-shipped"
    if not settings.augment and settings.elastic_alpha > 0:
        return "--elastic-alpha needs the augmentation that --no-augment turns off"
    return backend_error(settings)


def backend_error(settings: GridSettings) -> str | None:
    """What is wrong with the backend flags, or None."""
    ray = settings.ray
    if settings.backend == "local":
        given = ray.given()
        return f"{', '.join(given)}: only with --backend ray" if given else None
    if ray.address is not None and ray.num_cpus is not None:
        return "--ray-num-cpus sizes a local Ray instance; the cluster at --ray-address has its own"
    if ray.num_cpus is not None and ray.num_cpus < 1:
        return "--ray-num-cpus must be at least 1"
    if ray.cpus_per_trial is not None and ray.cpus_per_trial <= 0:
        return "--cpus-per-trial must be more than 0"
    if ray.gpus_per_trial is not None and ray.gpus_per_trial < 0:
        return "--gpus-per-trial must be 0 or more"
    if settings.device.startswith("cuda") and not ray.gpus_per_trial:
        return f"--device {settings.device} with --backend ray needs --gpus-per-trial > 0"
    return None
