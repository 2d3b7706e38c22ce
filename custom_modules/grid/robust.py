"""Make the shipped models read real handwriting and decline what is no digit, then ship them.

`--robust`: each shipped model is fine-tuned from its checkpoint with `training.robust`, shipped
(INT8 variant too, when it holds), and calibrated. `--calibrate-shipped`: the calibration alone,
for every model of the manifest: the temperature and the decline rule set on validation inputs,
their error before and after, on validation and (reported only) on MNIST's test set.
"""

import functools
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from custom_modules.contract import config_of
from custom_modules.export.calibrate import Calibration, ValidationInputs, calibrate
from custom_modules.export.onnx_export import export_onnx
from custom_modules.grid.shipping import ShippedModel, followed_by, read_shipped, ship_models
from custom_modules.serving.calibration import expected_calibration_error, negative_log_likelihood
from custom_modules.serving.manifest import load_manifest_json, write_manifest
from custom_modules.serving.model import OnnxViT, softmax
from custom_modules.synthetic.non_digits import HELD_OUT_FONTS, make_non_digits
from custom_modules.training.checkpoints import load_checkpoint, save_checkpoint
from custom_modules.training.data import DataSplits
from custom_modules.training.loop import TrainingPath
from custom_modules.training.metrics import evaluate
from custom_modules.training.robust import (
    HeadRefitConfig,
    RobustCheck,
    RobustConfig,
    choose_interpolation,
    dropout_free,
    finetune_robust,
    refit_head,
    without_dropout,
)
from custom_modules.training.teacher import TeacherConfig, train_teacher
from custom_modules.training.widen import overlapped_patches, widened_mlp
from custom_modules.vision_transformer import VisionTransformer, ViTConfig

TRAIN_NON_DIGITS_SEED = 0
VAL_NON_DIGITS_SEED = 1
VAL_NON_DIGITS = 2000


def _uint8(images: torch.Tensor) -> np.ndarray:
    return (images[:, 0] * 255).round().to(torch.uint8).numpy()


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div_(255).unsqueeze(1)


def validation_non_digits(data: DataSplits) -> np.ndarray:
    """Held-out non-digits (other fonts and seed, validation digits' pairs): (N, 28, 28) uint8."""
    images, _ = make_non_digits(
        VAL_NON_DIGITS,
        VAL_NON_DIGITS_SEED,
        _uint8(data.val_images),
        data.val_labels.numpy(),
        fonts=HELD_OUT_FONTS,
    )
    return images


def calibration_inputs(
    data: DataSplits, made_from: int = 2000
) -> tuple[ValidationInputs, np.ndarray]:
    """What a model's temperature and decline rule are fitted on: the validation digits as the
    app meets them (the first `made_from` also drawn, in another hand, photographed), and
    held-out non-digits as model inputs (N, 1, 28, 28)."""
    digits = ValidationInputs.make(
        _uint8(data.val_images), data.val_labels.numpy(), made_from=made_from
    )
    return digits, _pixels(validation_non_digits(data)).numpy()


def robust_inputs(data: DataSplits, non_digit_count: int) -> tuple[torch.Tensor, RobustCheck]:
    """The non-digits made for training, and the validation check every epoch is judged on."""
    train_non_digits, _ = make_non_digits(
        non_digit_count, TRAIN_NON_DIGITS_SEED, _uint8(data.train_images), data.train_labels.numpy()
    )
    check = RobustCheck.make(data, _pixels(validation_non_digits(data)))
    return _pixels(train_non_digits), check


@dataclass(frozen=True)
class RobustJob:
    """What `--robust` is asked to do: which shipped models, with what recipe, written where."""

    names: list[str]
    models_dir: Path
    output_dir: Path
    config: RobustConfig
    non_digit_count: int
    command: str
    stop_after: int | None = None  # ship after this epoch of the schedule
    head_only: bool = False  # refit the final norm and head alone
    interpolate: bool = False  # ship the WiSE-FT mix of the start and the fine-tuned weights
    interpolate_at: float | None = None  # ... at this share of the fine-tuned weights
    from_scratch: bool = False  # train each model's configuration from fresh weights
    widen_mlp: int | None = None  # the MLPs this ratio wide: the checkpoint's widened, or fresh
    patch_overlap: int | None = None  # the patch kernels this many pixels larger on every side
    teacher: TeacherConfig | None = None  # distil from a CNN trained here with this recipe
    path: TrainingPath = TrainingPath.baseline()  # bf16 autocast and attention kernel


def robust_models(job: RobustJob, data: DataSplits) -> dict[str, ShippedModel]:
    """Fine-tune each of the job's shipped models; what to ship, by name."""
    config, models_dir, output_dir = job.config, job.models_dir, job.output_dir
    shipped = read_shipped(models_dir)

    inputs = functools.cache(functools.partial(robust_inputs, data, job.non_digit_count))

    teacher, teacher_record = None, None
    if job.teacher is not None:
        teacher_path = output_dir / "train_state" / "teacher.pt"
        teacher_path.parent.mkdir(parents=True, exist_ok=True)
        teacher, teacher_history = train_teacher(data, job.teacher, teacher_path, _report_teacher)
        teacher_record = {"recipe": asdict(job.teacher), "history": teacher_history}

    models = {}
    for name in job.names:
        entry = shipped[name]
        if job.from_scratch:
            torch.manual_seed(config.seed)
            start = dropout_free(_configuration(job, entry), job.path.fused_attention)
        else:
            start = without_dropout(_start_weights(job, entry), job.path.fused_attention)
        state_path = output_dir / "train_state" / f"robust-{name.lower()}.pt"
        state_path.parent.mkdir(parents=True, exist_ok=True)

        def report(record: dict, name: str = name) -> None:
            print(
                f"{name} epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
                + _check_line(record)
                + f" ({record['seconds']:.0f} s of training)",
                flush=True,
            )

        if job.head_only:
            train_non_digits, check = inputs()
            model, history = refit_head(start, data, train_non_digits, check, HeadRefitConfig())
            report({"train_loss": float("nan"), **history[-1]})
        else:
            model, history = finetune_robust(
                start,
                data,
                inputs,
                config,
                state_path,
                report,
                job.stop_after,
                teacher,
                job.path.bf16,
            )
        interpolation = None
        if job.interpolate or job.interpolate_at is not None:
            # from the checkpoint again: fine-tuning changed `start` in place
            start = without_dropout(_start_weights(job, entry))
            model, interpolation = choose_interpolation(
                start, model, inputs()[1], job.interpolate_at
            )
            for alpha, figures in interpolation["mixes"].items():
                print(
                    f"{name} mixed at alpha {alpha} (start's clean val acc "
                    f"{interpolation['start_val_clean_accuracy']:.4f}): " + _check_line(figures),
                    flush=True,
                )
            print(f"{name}: shipping the mix at alpha {interpolation['alpha']}", flush=True)
        stem = f"robust-{name.lower()}"
        checkpoint = save_checkpoint(model, output_dir / "checkpoints" / f"{stem}.pt")
        onnx_path = export_onnx(model, output_dir / "onnx" / f"{stem}.onnx")
        val = evaluate(model, data.val_images, data.val_labels)
        test = evaluate(model, data.test_images, data.test_labels)
        models[name] = ShippedModel(
            onnx_path=onnx_path,
            checkpoint_path=checkpoint,
            config=config_of(model.config.to_dict()),
            params=model.num_parameters(),
            val_accuracy=round(val["accuracy"], 5),
            test_metrics={k: round(test[k], 5) for k in ("accuracy", "precision", "recall", "f1")},
            onnx_p50_us=entry["onnx_p50_us"],
            torch_p50_us=entry["torch_p50_us"],
            bench_threads=entry["bench_threads"],
            # fresh weights owe nothing to the commands that made the shipped ones
            command=job.command if job.from_scratch else followed_by(entry["command"], job.command),
            history=history,
            interpolation=interpolation,
            teacher=teacher_record,
        )
    return models


def _configuration(job: RobustJob, entry: dict) -> ViTConfig:
    """The shipped model's configuration, its MLPs as wide and its patches as overlapping as
    the job asks."""
    config = ViTConfig(**entry["config"])
    if job.widen_mlp is not None:
        config = replace(config, mlp_ratio=job.widen_mlp)
    if job.patch_overlap is not None:
        config = replace(config, patch_overlap=job.patch_overlap)
    return config


def _start_weights(job: RobustJob, entry: dict) -> VisionTransformer:
    """The shipped checkpoint fine-tuning starts from, its MLPs widened and its patch kernels
    grown if the job asks (both reading as before)."""
    model = load_checkpoint(job.models_dir / entry["checkpoint"])
    if job.widen_mlp is not None:
        model = widened_mlp(model, job.widen_mlp, job.config.seed)
    if job.patch_overlap is not None:
        model = overlapped_patches(model, job.patch_overlap)
    return model


def _report_teacher(record: dict) -> None:
    print(
        f"teacher epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
        f"val acc {record['val_clean_accuracy']:.4f} clean ({record['seconds']:.0f} s)",
        flush=True,
    )


def test_calibration(model: OnnxViT, data: DataSplits, temperature: float) -> dict[str, float]:
    """ECE and NLL on MNIST's test set as it is, before and after the temperature (reported)."""
    logits = model.predict_logits(data.test_images.numpy())
    labels = data.test_labels.numpy()
    before, after = softmax(logits), softmax(logits / temperature)
    return {
        "test_ece_before": expected_calibration_error(before, labels),
        "test_ece_after": expected_calibration_error(after, labels),
        "test_nll_before": negative_log_likelihood(before, labels),
        "test_nll_after": negative_log_likelihood(after, labels),
    }


def calibrate_shipped(
    models_dir: Path, data: DataSplits, names: list[str] | None = None
) -> dict[str, Calibration]:
    """Fit the shipped models' (or the named ones') temperature and decline rule; write them
    into the manifest."""
    manifest = load_manifest_json(models_dir)
    digits, non_digits = calibration_inputs(data)
    fitted = {}
    for name, entry in manifest["models"].items():
        if names is not None and name not in names:
            continue
        model = OnnxViT(models_dir / entry["file"])
        fit = fitted[name] = calibrate(model, digits, non_digits)
        entry["temperature"] = round(fit.temperature, 4)
        entry["decline_below"] = round(fit.decline_below, 4)
        entry["calibration"] = {
            **{k: round(v, 5) for k, v in asdict(fit).items()},
            **{k: round(v, 5) for k, v in test_calibration(model, data, fit.temperature).items()},
        }
        print(
            f"{name}: temperature {fit.temperature:.3f}, declines below {fit.decline_below:.3f}; "
            f"validation ECE {fit.val_ece_before:.2%} -> {fit.val_ece_after:.2%}, digits declined "
            f"{fit.val_digits_declined:.2%}, non-digits declined {fit.val_non_digits_declined:.1%}"
        )
    write_manifest(models_dir, manifest)
    return fitted


def _check_line(figures: dict) -> str:
    """One line of a RobustCheck's figures (the continental forms: where the check had them)."""
    continental = figures.get("val_continental_accuracy")
    return (
        f"val acc {figures['val_clean_accuracy']:.4f} clean, "
        f"{figures['val_styled_accuracy']:.4f} restyled"
        + ("" if continental is None else f", {continental:.4f} continental 1s and 7s")
        + f"; non-digits declined {figures['val_non_digits_declined']:.1%}"
    )


def robust_ship(job: RobustJob, data: DataSplits) -> None:
    """Fine-tune, ship (timings kept: measure them with --retime-shipped) and calibrate."""
    manifest = load_manifest_json(job.models_dir)
    models = robust_models(job, data)
    ship_models(models, job.models_dir, data, manifest.get("grid_results"), retime=False)
    calibrate_shipped(job.models_dir, data)
