"""The training loop: AdamW, warm-up then cosine, early stopping, resumable epoch by epoch."""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from custom_modules.training.augment import random_affine
from custom_modules.training.data import DataSplits
from custom_modules.training.metrics import evaluate
from custom_modules.training.resumable import load_state, save_state


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX); Linux only."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class TrainingPath:
    """How training does its arithmetic: bf16 autocast or fp32, fused or explicit attention."""

    bf16: bool
    fused_attention: bool

    @classmethod
    def baseline(cls) -> "TrainingPath":
        return cls(bf16=False, fused_attention=False)

    @classmethod
    def fast(cls, device: torch.device) -> "TrainingPath":
        """The fastest path measured by benchmarks/training.py on each kind of device.

        On the CPU the written-out attention beat the fused kernel, in fp32 and under bf16;
        on CUDA the fused kernel is the fast one.
        """
        if device.type == "cuda":
            return cls(bf16=torch.cuda.is_bf16_supported(), fused_attention=True)
        return cls(bf16=cpu_has_bf16(), fused_attention=False)


@dataclass
class TrainConfig:
    """Optimisation settings shared by every run of the grid."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    patience: int = 3
    augment: bool = True
    elastic_alpha: float = 0.0  # pixels; 0 = affine augmentation only
    bf16: bool = False
    seed: int = 0


@dataclass
class TrainResult:
    """What training leaves behind beside the (best) weights loaded into the model."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0
    train_seconds: float = 0.0
    images_per_second: float = 0.0


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only; biases, norms, CLS token and positions are left alone."""
    decay = [p for p in model.parameters() if p.ndim >= 2 and p.shape[0] > 1]
    decay_ids = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if id(p) not in decay_ids]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class TrainingState:
    """Everything needed to go on after the epoch just finished: saved and loaded as a whole.

    `setup` names the run (training settings, model config, training-set size): a state saved
    for another setup is not resumed. The file holds `vars(state)`, tensors and plain values
    only, so `torch.load(weights_only=True)` reads it back.
    """

    setup: dict
    model: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)
    generator: torch.Tensor | None = None
    torch_rng: torch.Tensor | None = None
    best_loss: float = math.inf
    best_state: dict | None = None
    bad_epochs: int = 0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    stopped: bool = False

    def save(self, path: Path) -> None:
        save_state(path, vars(self))

    @classmethod
    def load(cls, path: Path | None, setup: dict) -> "TrainingState | None":
        """The state saved by an interrupted run of the same setup, or None to start afresh."""
        return load_state(path, setup, "training state", lambda saved: cls(**saved))


def train_model(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    on_epoch: Callable[[dict], None] | None = None,
    state_path: str | Path | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """AdamW + warm-up/cosine; early-stop on validation loss and restore the best weights.

    With `state_path`, the training state is saved after every epoch and a rerun goes on from there.
    With `stop_after`, stop after that epoch of the schedule; a later call with the same state
    goes on along the same schedule (the rungs of successive halving).
    """
    device = data.train_images.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    n_train = len(data.train_labels)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    # at most a tenth of the schedule, so that short runs still reach the cosine decay
    warmup_steps = max(1, min(round(config.warmup_epochs * steps_per_epoch), total_steps // 10))

    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(warmup_steps, total_steps)
    )

    state_path = None if state_path is None else Path(state_path)
    setup = {"train": asdict(config), "model": model.config.to_dict(), "n_train": n_train}
    state = TrainingState.load(state_path, setup)
    if state is None:
        state = TrainingState(setup=setup)
    else:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        generator.set_state(state.generator)
        torch.set_rng_state(state.torch_rng)  # dropout draws from it
        print(f"{state_path}: resuming after epoch {len(state.history)}")

    start_epoch = len(state.history) + 1
    last_epoch = config.epochs if stop_after is None else min(stop_after, config.epochs)
    epochs = range(start_epoch, last_epoch + 1 if not state.stopped else start_epoch)
    for epoch in tqdm(epochs, desc="epochs", leave=False, disable=None):
        model.train()
        order = torch.randperm(n_train, generator=generator, device=device)
        running_loss, started = torch.zeros((), device=device), time.perf_counter()
        for step in tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", leave=False, disable=None):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            images, labels = data.train_images[batch], data.train_labels[batch]
            if config.augment:
                images = random_affine(images, generator, elastic_alpha=config.elastic_alpha)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                logits = model(images)  # pixels in [0, 1]: the model normalises them
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running_loss += loss.detach()
        state.train_seconds += time.perf_counter() - started

        val = evaluate(model, data.val_images, data.val_labels)
        record = {
            "epoch": epoch,
            "train_loss": running_loss.item() / steps_per_epoch,
            "lr": scheduler.get_last_lr()[0],
            **{f"val_{k}": v for k, v in val.items()},
        }
        state.history.append(record)
        if val["loss"] < state.best_loss:
            state.best_loss, state.bad_epochs, state.best_epoch = val["loss"], 0, epoch
            state.best_state = copy.deepcopy(model.state_dict())
        else:
            state.bad_epochs += 1
            state.stopped = state.bad_epochs >= config.patience
        if state_path is not None:
            state.model, state.optimizer = model.state_dict(), optimizer.state_dict()
            state.scheduler, state.generator = scheduler.state_dict(), generator.get_state()
            state.torch_rng = torch.get_rng_state()
            state.save(state_path)
        if on_epoch is not None:
            on_epoch(record)
        if state.stopped:
            break

    model.load_state_dict(state.best_state)
    epochs_run = len(state.history)
    return TrainResult(
        history=state.history,
        best_epoch=state.best_epoch,
        epochs_run=epochs_run,
        train_seconds=state.train_seconds,
        images_per_second=epochs_run * n_train / max(state.train_seconds, 1e-9),
    )
