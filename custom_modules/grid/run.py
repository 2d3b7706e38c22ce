"""One run of the grid: train, evaluate, export, benchmark; its learning curves and results row,
logged to W&B."""

import netrc
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from custom_modules.export.latency import benchmark_latency
from custom_modules.export.onnx_export import export_onnx
from custom_modules.grid.grid_file import run_id
from custom_modules.grid.history import history_path, write_history
from custom_modules.grid.settings import GridSettings
from custom_modules.grid.shipping import shipped_entry
from custom_modules.training.checkpoints import load_checkpoint, save_checkpoint
from custom_modules.training.data import DataSplits
from custom_modules.training.loop import TrainConfig, TrainingPath, train_model
from custom_modules.training.metrics import evaluate
from custom_modules.vision_transformer import VisionTransformer, ViTConfig


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
    print("W&B: no login found, logging offline (see docs/grid.md: `wandb sync`)", file=sys.stderr)
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


def run_config(
    config: dict[str, int], settings: GridSettings, data: DataSplits, device: torch.device
) -> dict:
    """Train, evaluate, export and benchmark one configuration; return its results row.

    With `settings.stop_after`, training stops after that epoch of its schedule (a halving rung).
    """
    name = run_id(config)
    path = TrainingPath.baseline() if settings.baseline else TrainingPath.fast(device)
    train_config = TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        patience=settings.patience,
        augment=settings.augment,
        elastic_alpha=settings.elastic_alpha,
        bf16=path.bf16,
        seed=settings.seed,
    )
    torch.manual_seed(settings.seed)
    model = VisionTransformer(ViTConfig(**config), path.fused_attention)
    if settings.init_from is not None:
        checkpoint = settings.init_from / shipped_entry(settings.init_from, config)["checkpoint"]
        model.load_state_dict(load_checkpoint(checkpoint).state_dict())
    model = model.to(device)
    logger = WandbLogger.start(
        wandb_mode(settings.wandb),
        settings.wandb_project,
        name if settings.stop_after is None else f"{name}-epoch{settings.stop_after}",
        {
            **model.config.to_dict(),
            **vars(train_config),
            "stop_after": settings.stop_after,
            "fused_attention": path.fused_attention,
            "params": model.num_parameters(),
        },
        settings.output_dir,
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
        state_path = settings.training_state_path(name)
        result = train_model(model, data, train_config, on_epoch, state_path, settings.stop_after)
        val = evaluate(model, data.val_images, data.val_labels)
        test = evaluate(model, data.test_images, data.test_labels)
        model = model.to("cpu").eval()
        checkpoint_path = save_checkpoint(model, settings.output_dir / "checkpoints" / f"{name}.pt")
        onnx_path = export_onnx(model, settings.output_dir / "onnx" / f"{name}.onnx")
        latency = benchmark_latency(model, onnx_path, settings.bench_threads, settings.bench_calls)
        write_history(
            history_path(settings.output_dir, name), name, result.history, result.best_epoch
        )
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
        "onnx_file": str(onnx_path.relative_to(settings.output_dir)),
        "checkpoint_file": str(checkpoint_path.relative_to(settings.output_dir)),
        "wandb_run": logger.run_path,
    }
    logger.finish({k: v for k, v in row.items() if k != "run_id"}, onnx_path)
    return row


RunFn = Callable[[dict[str, int], GridSettings, DataSplits, torch.device], dict]
