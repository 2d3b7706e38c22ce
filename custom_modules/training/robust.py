"""Fine-tuning for real handwriting and "not a digit": style augmentation, Outlier Exposure, EMA.

Each batch of MNIST digits is drawn again in another writer's style and framed as served inputs
are (`training.style`); a batch of non-digit images rides along and is pushed towards the
uniform distribution (Outlier Exposure, Hendrycks et al. 2019). The weights that ship are an
exponential moving average of the trained ones. The state is saved after every epoch and a rerun
of the same setup goes on from there.
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from custom_modules.training.data import DataSplits
from custom_modules.training.loop import param_groups, warmup_cosine
from custom_modules.training.metrics import predict_logits
from custom_modules.training.resumable import load_state, save_state
from custom_modules.training.style import StyleAugment, augment_batch, reframe_like_serving
from custom_modules.training.teacher import distillation_loss
from custom_modules.vision_transformer import VisionTransformer, ViTConfig

DECLINE_CHECK_RATE = 0.02  # the epoch report: non-digits declined when 2 % of digits would be


@dataclass(frozen=True)
class RobustConfig:
    """The fine-tuning recipe; the defaults are what the shipped models used (models/README.md)."""

    epochs: int = 12
    lr: float = 5e-4
    batch_size: int = 128
    non_digit_batch: int = 32  # non-digit images beside each batch of digits
    outlier_weight: float = 0.5  # Hendrycks et al.'s lambda
    ema_decay: float = 0.999
    weight_decay: float = 0.05
    warmup_epochs: float = 0.25  # a fine-tune's; training from scratch wants a longer one
    seed: int = 0
    distill_weight: float = 0.0  # share of the digits' loss taken from a teacher's outputs
    distill_temperature: float = 2.0
    style: StyleAugment = StyleAugment()  # how far each training digit is restyled

    def setup(self) -> dict:
        """The recipe as saved states record it; with the defaults of the fields added since
        the shipped models trained left out, so that states saved then still resume."""
        recipe = asdict(self)
        if self.warmup_epochs == RobustConfig.warmup_epochs:
            del recipe["warmup_epochs"]
        if self.distill_weight == 0:
            del recipe["distill_weight"], recipe["distill_temperature"]
        if self.style == StyleAugment():
            del recipe["style"]
        else:
            for added in ("plain_p", "thick_p"):
                if getattr(self.style, added) == 0:
                    del recipe["style"][added]
        return recipe


@dataclass
class RobustState:
    """Everything needed to go on after a finished epoch; saved and loaded as a whole."""

    setup: dict
    model: dict = field(default_factory=dict)
    ema: dict = field(default_factory=dict)
    optimizer: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)
    generator: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)

    def save(self, path: Path) -> None:
        save_state(path, vars(self))

    @classmethod
    def load(cls, path: Path, setup: dict) -> "RobustState | None":
        return load_state(path, setup, "robust training state", lambda saved: cls(**saved))


@dataclass(frozen=True)
class RobustCheck:
    """Fixed validation inputs the epochs are judged on: clean and restyled digits, the 1s and 7s
    restyled in their continental forms, non-digits."""

    clean: torch.Tensor
    styled: torch.Tensor
    labels: torch.Tensor
    non_digits: torch.Tensor
    continental: torch.Tensor
    continental_labels: torch.Tensor

    @classmethod
    def make(cls, data: DataSplits, non_digits: torch.Tensor, seed: int = 123) -> "RobustCheck":
        generator = torch.Generator().manual_seed(seed)
        style = StyleAugment()
        ones_and_sevens = (data.val_labels == 1) | (data.val_labels == 7)
        continental_labels = data.val_labels[ones_and_sevens]
        return cls(
            clean=reframe_like_serving(data.val_images),
            styled=augment_batch(data.val_images, style, generator),
            labels=data.val_labels,
            non_digits=augment_batch(non_digits, style, generator),
            continental=augment_batch(
                data.val_images[ones_and_sevens],
                replace(style, continental_p=1.0),
                torch.Generator().manual_seed(seed + 1),  # leaves the figures above as they were
                continental_labels,
            ),
            continental_labels=continental_labels,
        )

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Validation loss and accuracy (clean, restyled) and the non-digits a 2 % rule declines."""
        report, logits = {}, {}
        for name, images in (("clean", self.clean), ("styled", self.styled)):
            logits[name] = predict_logits(model, images)
            report[f"val_{name}_loss"] = F.cross_entropy(logits[name], self.labels).item()
            right = logits[name].argmax(1) == self.labels
            report[f"val_{name}_accuracy"] = right.float().mean().item()
        continental = predict_logits(model, self.continental).argmax(1)
        report["val_continental_accuracy"] = (
            (continental == self.continental_labels).float().mean().item()
        )
        styled = logits["styled"].softmax(1)
        confident = styled.max(1).values[styled.argmax(1) == self.labels]
        threshold = torch.quantile(confident, DECLINE_CHECK_RATE).item()
        non_digit = predict_logits(model, self.non_digits).softmax(1).max(1).values
        report["val_non_digits_declined"] = (non_digit < threshold).float().mean().item()
        return report


def dropout_free(config: ViTConfig, fused_attention: bool = True) -> VisionTransformer:
    """A freshly initialised model of `config` with dropout off: the augmentation regularises
    enough."""
    return VisionTransformer(replace(config, dropout=0.0, attn_dropout=0.0), fused_attention)


def without_dropout(model: VisionTransformer, fused_attention: bool = True) -> VisionTransformer:
    """The same weights in a model with dropout off."""
    fresh = dropout_free(model.config, fused_attention)
    fresh.load_state_dict(model.state_dict())
    return fresh


def finetune_robust(
    model: VisionTransformer,
    data: DataSplits,
    inputs: Callable[[], tuple[torch.Tensor, RobustCheck]],
    config: RobustConfig,
    state_path: Path,
    on_epoch: Callable[[dict], None] = print,
    stop_after: int | None = None,
    teacher: torch.nn.Module | None = None,
    bf16: bool = False,
) -> tuple[VisionTransformer, list[dict]]:
    """Fine-tune `model` (pixels in [0, 1]); return the averaged weights and the epoch history.

    With `bf16`, the forward pass runs under bf16 autocast (fast only where the hardware does
    bf16: `TrainingPath.fast`); the weights, the EMA and the validation stay fp32.

    With `config.distill_weight` > 0, that share of the digits' loss is the distillation loss
    towards `teacher` (in eval mode) on the same restyled digits.

    `inputs` gives the training non-digits and the validation check; it is called only when an
    epoch is left to run (making them takes minutes).

    With `stop_after`, stop after that epoch of the schedule (to ship what a short session
    made); the same call without it goes on from there.
    """
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    n_train = len(data.train_labels)
    steps = math.ceil(n_train / config.batch_size)
    total = config.epochs * steps
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(round(steps * config.warmup_epochs), total)
    )
    if (teacher is None) != (config.distill_weight == 0):
        raise ValueError("a distillation weight needs a teacher, and a teacher a weight")
    setup = {"recipe": config.setup(), "model": model.config.to_dict(), "n_train": n_train}
    state = RobustState.load(state_path, setup) or RobustState(setup)
    if state.history:
        model.load_state_dict(state.model)
        ema.load_state_dict(state.ema)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        generator.set_state(state.generator)
        print(f"{state_path}: resuming after epoch {len(state.history)}")

    last = config.epochs if stop_after is None else min(stop_after, config.epochs)
    if len(state.history) < last:
        non_digits, check = inputs()
    for epoch in range(len(state.history) + 1, last + 1):
        model.train()
        started, running = time.perf_counter(), 0.0
        order = torch.randperm(n_train, generator=generator)
        for step in range(steps):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            extra = torch.randint(len(non_digits), (config.non_digit_batch,), generator=generator)
            images = augment_batch(
                torch.cat([data.train_images[batch], non_digits[extra]]),
                config.style,
                generator,
                torch.cat([data.train_labels[batch], torch.full_like(extra, -1)]),
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(images).float()  # (B + non-digits, 10)
            n = len(batch)
            loss = F.cross_entropy(logits[:n], data.train_labels[batch])
            if teacher is not None:
                with torch.no_grad():
                    taught = teacher(images[:n])
                loss = (1 - config.distill_weight) * loss + config.distill_weight * (
                    distillation_loss(logits[:n], taught, config.distill_temperature)
                )
            # cross-entropy of the non-digits against the uniform distribution
            loss = loss - config.outlier_weight * F.log_softmax(logits[n:], dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
            running += loss.item()
        record = {
            "epoch": epoch,
            "train_loss": running / steps,
            "seconds": time.perf_counter() - started,
            "bf16": bf16,
            **check.evaluate(ema.module),
        }
        state.history.append(record)
        state.model, state.ema = model.state_dict(), ema.state_dict()
        state.optimizer, state.scheduler = optimizer.state_dict(), scheduler.state_dict()
        state.generator = generator.get_state()
        state.save(state_path)
        on_epoch(record)
    ema.load_state_dict(state.ema)
    return ema.module.eval(), state.history


INTERPOLATION_ALPHAS = (0.25, 0.5, 0.75, 1.0)
CLEAN_TOLERANCE = 0.001  # the clean validation accuracy a mix may give up against its start


def interpolated(start: VisionTransformer, tuned: VisionTransformer, alpha: float):
    """The weight-space mix (1 - alpha) * start + alpha * tuned (WiSE-FT, Wortsman et al. 2022):
    fine-tuned models keep much of their start's accuracy at a small cost in robustness."""
    mixed = VisionTransformer(tuned.config)
    start_weights = start.state_dict()
    mixed.load_state_dict(
        {k: torch.lerp(start_weights[k], v, alpha) for k, v in tuned.state_dict().items()}
    )
    return mixed.eval()


def choose_interpolation(
    start: VisionTransformer,
    tuned: VisionTransformer,
    check: RobustCheck,
    given_alpha: float | None = None,
) -> tuple[VisionTransformer, dict]:
    """The most fine-tuned mix of INTERPOLATION_ALPHAS whose clean validation accuracy is within
    CLEAN_TOLERANCE of the start's (the start itself, alpha 0, if none is), or the mix at
    `given_alpha` when one was chosen on validation otherwise; with every mix's figures."""
    start_clean = check.evaluate(start.eval())["val_clean_accuracy"]
    figures = {
        alpha: check.evaluate(interpolated(start, tuned, alpha)) for alpha in INTERPOLATION_ALPHAS
    }
    floor = start_clean - CLEAN_TOLERANCE
    alpha = max((a for a, f in figures.items() if f["val_clean_accuracy"] >= floor), default=0.0)
    record = {"alpha": alpha, "start_val_clean_accuracy": start_clean, "mixes": figures}
    if given_alpha is not None:
        record |= {"alpha": given_alpha, "alpha_by_clean_rule": alpha}
        alpha = given_alpha
    return interpolated(start, tuned, alpha), record


@dataclass(frozen=True)
class HeadRefitConfig:
    """Refitting only the final norm and head on the frozen network's CLS features."""

    digits: int = 10000  # training digits, each taken as served and in another style
    non_digits: int = 8000
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    outlier_weight: float = 0.5
    seed: int = 0


@torch.no_grad()
def _features(model: VisionTransformer, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [model.cls_feature(images[i : i + batch]) for i in range(0, len(images), batch)]
    )


def refit_head(
    model: VisionTransformer,
    data: DataSplits,
    non_digits: torch.Tensor,
    check: RobustCheck,
    config: HeadRefitConfig,
) -> tuple[VisionTransformer, list[dict]]:
    """Outlier Exposure for a network too big to fine-tune in the time there is: the blocks stay,
    the final norm and head learn from the CLS features of restyled digits and non-digits."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    style = StyleAugment()
    started = time.perf_counter()
    digits = data.train_images[: config.digits]
    labels = data.train_labels[: config.digits].repeat(2)
    outliers = non_digits[: config.non_digits]
    digit_features = torch.cat(
        [
            _features(model, reframe_like_serving(digits)),
            _features(model, augment_batch(digits, style, generator)),
        ]
    )
    outlier_features = _features(model, augment_batch(outliers, style, generator))
    head = torch.nn.Sequential(model.norm, model.head)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=0.01)
    n, steps = len(labels), math.ceil(len(labels) / config.batch_size)
    per_step = math.ceil(len(outlier_features) / steps)
    for _ in range(config.epochs):
        head.train()
        order = torch.randperm(n, generator=generator)
        outlier_order = torch.randperm(len(outlier_features), generator=generator)
        for step in range(steps):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            extra = outlier_order[step * per_step : (step + 1) * per_step]
            loss = F.cross_entropy(head(digit_features[batch]), labels[batch])
            loss = (
                loss
                - config.outlier_weight * F.log_softmax(head(outlier_features[extra]), dim=1).mean()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    record = {
        "epoch": config.epochs,
        "seconds": time.perf_counter() - started,
        **check.evaluate(model),
    }
    return model.eval(), [record]
