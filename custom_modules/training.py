"""Training and evaluation of the ViT on in-memory MNIST tensors (uses torch)."""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from torch import nn
from tqdm.auto import tqdm

from custom_modules.atomic_file import replaced_atomically
from custom_modules.inference import MNIST_MEAN, MNIST_STD
from custom_modules.mnist_data import Mnist
from custom_modules.vision_transformer import VisionTransformer, ViTConfig


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


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the normalised input the model (and the ONNX export) expects."""
    return (images - MNIST_MEAN) / MNIST_STD


@dataclass
class DataSplits:
    """Train / validation / test tensors: images `(N, 1, 28, 28)` float in [0, 1], labels int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def to(self, device: torch.device) -> "DataSplits":
        return DataSplits(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def _images(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float().div_(255).unsqueeze(1)  # (N, 1, 28, 28)


def _labels(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.int64))


def split_mnist(
    mnist: Mnist, val_size: int = 5000, seed: int = 0, train_subset: int | None = None
) -> DataSplits:
    """Hold out a seeded validation split of the training images; optionally subsample the rest."""
    n_train = len(mnist.train_labels)
    if not 0 < val_size < n_train:
        raise ValueError(f"val_size {val_size} must be between 1 and {n_train - 1}")
    order = np.random.default_rng(seed).permutation(n_train)
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    return DataSplits(
        train_images=_images(mnist.train_images[train_idx]),
        train_labels=_labels(mnist.train_labels[train_idx]),
        val_images=_images(mnist.train_images[val_idx]),
        val_labels=_labels(mnist.train_labels[val_idx]),
        test_images=_images(mnist.test_images),
        test_labels=_labels(mnist.test_labels),
    )


def elastic_field(
    shape: tuple[int, int, int],
    generator: torch.Generator,
    alpha: float,
    sigma: float,
    device: torch.device,
) -> torch.Tensor:
    """Smooth random displacements (Simard et al. 2003): blurred uniform noise times alpha.

    `shape` is (B, H, W); alpha and sigma are in pixels. Returns (B, H, W, 2) in grid_sample units.
    """
    B, H, W = shape
    noise = 2 * torch.rand(B * 2, 1, H, W, generator=generator, device=device) - 1
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=noise.dtype, device=device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    # separable blur: rows, then columns
    smooth = F.conv2d(noise, kernel.view(1, 1, 1, -1), padding=(0, radius))
    smooth = F.conv2d(smooth, kernel.view(1, 1, -1, 1), padding=(radius, 0))  # (2B, 1, H, W)
    pixels = alpha * smooth.view(B, 2, H, W).permute(0, 2, 3, 1)  # (B, H, W, 2) as (x, y)
    return pixels * pixels.new_tensor([2 / W, 2 / H])  # a pixel is 2/side in grid units


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    max_degrees: float = 12.0,
    max_shift: float = 0.1,
    scale_range: tuple[float, float] = (0.85, 1.15),
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 4.0,
) -> torch.Tensor:
    """Rotate, shift (fraction of the side) and scale a whole batch at once, as drawings vary.

    With `elastic_alpha` > 0, an elastic distortion is added to the same sampling grid.
    """
    B, device = images.shape[0], images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(B, generator=generator, device=device)

    angle = uniform(-max_degrees, max_degrees) * (math.pi / 180)
    scale = uniform(*scale_range)
    shift_x, shift_y = uniform(-max_shift, max_shift) * 2, uniform(-max_shift, max_shift) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output coordinates to input coordinates, hence the inverse scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    if elastic_alpha > 0:
        H, W = images.shape[-2:]
        grid = grid + elastic_field((B, H, W), generator, elastic_alpha, elastic_sigma, device)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


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


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits for images in [0, 1], in eval mode and fp32."""
    model.eval()
    return torch.cat(
        [model(normalize(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 (scikit-learn)."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and macro precision / recall / F1 on one split."""
    logits = predict_logits(model, images)
    loss = F.cross_entropy(logits, labels).item()
    y_true, y_pred = labels.cpu().numpy(), logits.argmax(dim=1).cpu().numpy()
    return {"loss": loss, **classification_metrics(y_true, y_pred)}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
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


def _save_training_state(path: Path, state: dict) -> None:
    """Everything needed to go on after the epoch just finished, written atomically."""
    with replaced_atomically(path) as tmp_path:
        torch.save(state, tmp_path)


def _load_training_state(path: Path | None, setup: dict) -> dict | None:
    """The state saved by an interrupted run of the same setup, or None to start afresh."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file: say so, and train from the start
        print(f"{path}: cannot read the saved training state ({err}); starting afresh")
        return None
    if state.get("setup") != setup:
        print(f"{path}: saved for another model or schedule; starting afresh")
        return None
    return state


def train_model(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    on_epoch: Callable[[dict], None] | None = None,
    state_path: str | Path | None = None,
) -> TrainResult:
    """AdamW + warm-up/cosine; early-stop on validation loss and restore the best weights.

    With `state_path`, the training state is saved after every epoch and a rerun goes on from there.
    """
    device = data.train_images.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    n_train = len(data.train_labels)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    # at most a tenth of the schedule, so that short runs still reach the cosine decay
    warmup_steps = max(1, min(round(config.warmup_epochs * steps_per_epoch), total_steps // 10))

    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(warmup_steps, total_steps)
    )

    result = TrainResult()
    best_loss, best_state, bad_epochs = math.inf, None, 0
    train_seconds, start_epoch, stopped = 0.0, 1, False
    state_path = None if state_path is None else Path(state_path)
    setup = {"train": asdict(config), "model": model.config.to_dict(), "n_train": n_train}
    if (saved := _load_training_state(state_path, setup)) is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])  # dropout draws from it
        best_loss, best_state = saved["best_loss"], saved["best_state"]
        bad_epochs = saved["bad_epochs"]
        result.history, result.best_epoch = saved["history"], saved["best_epoch"]
        train_seconds, stopped = saved["train_seconds"], saved["stopped"]
        start_epoch = len(result.history) + 1
        print(f"{state_path}: resuming after epoch {start_epoch - 1}")

    epochs = range(start_epoch, config.epochs + 1 if not stopped else start_epoch)
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
                logits = model(normalize(images))
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running_loss += loss.detach()
        train_seconds += time.perf_counter() - started

        val = evaluate(model, data.val_images, data.val_labels)
        record = {
            "epoch": epoch,
            "train_loss": running_loss.item() / steps_per_epoch,
            "lr": scheduler.get_last_lr()[0],
            **{f"val_{k}": v for k, v in val.items()},
        }
        result.history.append(record)
        if val["loss"] < best_loss:
            best_loss, bad_epochs, result.best_epoch = val["loss"], 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
            stopped = bad_epochs >= config.patience
        if state_path is not None:
            _save_training_state(
                state_path,
                {
                    "setup": setup,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "best_loss": best_loss,
                    "best_state": best_state,
                    "bad_epochs": bad_epochs,
                    "best_epoch": result.best_epoch,
                    "history": result.history,
                    "train_seconds": train_seconds,
                    "stopped": stopped,
                },
            )
        if on_epoch is not None:
            on_epoch(record)
        if stopped:
            break

    model.load_state_dict(best_state)
    result.epochs_run = len(result.history)
    result.train_seconds = train_seconds
    result.images_per_second = result.epochs_run * n_train / max(train_seconds, 1e-9)
    return result


def save_checkpoint(model: VisionTransformer, path: str | Path) -> Path:
    """Config and weights in one file, written under a temporary name and then renamed."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with replaced_atomically(path) as tmp_path:
        torch.save({"config": model.config.to_dict(), "state_dict": state}, tmp_path)
    return path


def load_checkpoint(path: str | Path, fused_attention: bool = True) -> VisionTransformer:
    """The model saved by `save_checkpoint`, in eval mode on the CPU."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = VisionTransformer(ViTConfig(**checkpoint["config"]), fused_attention)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
