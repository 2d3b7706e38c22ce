"""A small CNN teacher for distillation (DeiT, Touvron et al. 2021), trained here on MNIST.

A convolution's locality is the prior a from-scratch ViT lacks on 55k digits; the student
learns it from the teacher's soft outputs on the same restyled digits it trains on. The teacher
is trained on those restyled digits too (`training.style`), resumably, epoch by epoch.
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from custom_modules.training.data import DataSplits
from custom_modules.training.loop import param_groups, warmup_cosine
from custom_modules.training.metrics import predict_logits
from custom_modules.training.resumable import load_state, save_state
from custom_modules.training.style import StyleAugment, augment_batch, reframe_like_serving

DISTILL_WEIGHT = 0.5  # --distill: the share of the digits' loss taken from the teacher


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class DigitCNN(nn.Module):
    """Three 3x3 convolutions, two poolings, a two-layer head: about 0.46 M parameters."""

    def __init__(self, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv(1, width),  # (B, 32, 28, 28)
            nn.MaxPool2d(2),  # (B, 32, 14, 14)
            _conv(width, 2 * width),
            nn.MaxPool2d(2),  # (B, 64, 7, 7)
            _conv(2 * width, 2 * width),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(2 * width * 49, hidden), nn.ReLU(),
            nn.Linear(hidden, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 10)


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher is trained; the defaults made step 9's 4-epoch teacher (models/README.md)."""

    epochs: int = 4
    lr: float = 2e-3
    batch_size: int = 128
    weight_decay: float = 0.01
    seed: int = 0
    style: StyleAugment = StyleAugment()  # the student's: the teacher sees the digits it sees

    def setup(self) -> dict:
        """The recipe as saved states record it; the style left out at its default, so that
        states saved before it was a field still resume."""
        recipe = asdict(self)
        if self.style == StyleAugment():
            del recipe["style"]
        return recipe


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) at `temperature`, times its square so gradients keep their size
    (Hinton et al. 2015)."""
    return (
        F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.log_softmax(teacher_logits / temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )


def train_teacher(
    data: DataSplits,
    config: TeacherConfig,
    state_path: Path,
    on_epoch: Callable[[dict], None] = print,
) -> tuple[DigitCNN, list[dict]]:
    """Train (or go on training, or just load) the teacher saved at `state_path`; in eval mode.

    Each epoch ends with the state saved; a state for another recipe or data is not resumed.
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = DigitCNN()
    n_train = len(data.train_labels)
    steps = math.ceil(n_train / config.batch_size)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps // 4, config.epochs * steps)
    )
    setup = {"recipe": config.setup(), "n_train": n_train}
    history: list[dict] = []
    state = load_state(state_path, setup, "teacher", lambda saved: saved)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history = state["history"]
        print(f"{state_path}: teacher trained for {len(history)} epochs; going on from there")
    val_images = reframe_like_serving(data.val_images)
    for epoch in range(len(history) + 1, config.epochs + 1):
        model.train()
        started, running = time.perf_counter(), 0.0
        order = torch.randperm(n_train, generator=generator)
        for step in range(steps):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            labels = data.train_labels[batch]
            images = augment_batch(data.train_images[batch], config.style, generator, labels)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += loss.item()
        logits = predict_logits(model, val_images)
        history.append(
            {
                "epoch": epoch,
                "train_loss": running / steps,
                "seconds": time.perf_counter() - started,
                "val_clean_loss": F.cross_entropy(logits, data.val_labels).item(),
                "val_clean_accuracy": (logits.argmax(1) == data.val_labels).float().mean().item(),
            }
        )
        state = {
            "setup": setup,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "history": history,
        }
        save_state(state_path, state)
        on_epoch(history[-1])
    return model.eval(), history
