"""Ship the chosen models: copy them into models/, add INT8 variants, write the manifest.

A model to ship is one typed `ShippedModel`, made from a results row (`--ship`) or from a
manifest entry (`--reexport-shipped`). The manifest itself is read and written only through
`custom_modules.serving.manifest`.
"""

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from custom_modules.atomic_file import replaced_atomically
from custom_modules.contract import INPUT_NAME, config_of
from custom_modules.export.latency import random_pixels, time_interleaved, torch_threads
from custom_modules.export.onnx_export import ExportedViT, export_onnx
from custom_modules.export.variants import onnx_accuracy, onnx_predictions, quantize_int8
from custom_modules.serving.manifest import load_manifest_json, manifest_path, write_manifest
from custom_modules.serving.model import onnx_session
from custom_modules.training.checkpoints import load_checkpoint
from custom_modules.training.data import DataSplits
from custom_modules.training.metrics import classification_metrics

# an INT8 variant is shipped only if it loses at most this much validation accuracy
INT8_MAX_ACCURACY_LOSS = 0.002
TEST_METRICS = ("accuracy", "precision", "recall", "f1")
LATENCY_KEYS = ("onnx_p50_us", "torch_p50_us", "bench_threads")


@dataclass(frozen=True)
class ShippedModel:
    """One model to ship: where its two files are now, and what its manifest entry records."""

    onnx_path: Path
    checkpoint_path: Path
    config: dict[str, int]
    params: int
    val_accuracy: float
    test_metrics: dict[str, float]  # accuracy, precision, recall, f1 on the test set
    onnx_p50_us: float
    torch_p50_us: float
    bench_threads: int
    command: str
    history: list[dict] | None = None  # per-epoch figures of the training that made it
    interpolation: dict | None = None  # the weight mix chosen on validation (--interpolate)
    teacher: dict | None = None  # the CNN it was distilled from (--distill): recipe, history

    @classmethod
    def from_row(cls, row: dict, run_dir: Path, command: str) -> "ShippedModel":
        """A run of the grid, from its results row (as written, or as read back: strings)."""
        return cls(
            onnx_path=run_dir / row["onnx_file"],
            checkpoint_path=run_dir / row["checkpoint_file"],
            config=config_of(row),
            params=int(row["params"]),
            val_accuracy=float(row["val_accuracy"]),
            test_metrics={m: float(row[f"test_{m}"]) for m in TEST_METRICS},
            onnx_p50_us=float(row["onnx_p50_us"]),
            torch_p50_us=float(row["torch_p50_us"]),
            bench_threads=int(row["bench_threads"]),
            command=command,
        )

    @classmethod
    def from_entry(cls, entry: dict, models_dir: Path) -> "ShippedModel":
        """A shipped fp32 model, from its manifest entry."""
        return cls(
            onnx_path=models_dir / entry["file"],
            checkpoint_path=models_dir / entry["checkpoint"],
            config=config_of(entry["config"]),
            params=int(entry["params"]),
            val_accuracy=float(entry["val_accuracy"]),
            test_metrics={m: float(entry[f"test_{m}"]) for m in TEST_METRICS},
            onnx_p50_us=float(entry["onnx_p50_us"]),
            torch_p50_us=float(entry["torch_p50_us"]),
            bench_threads=int(entry["bench_threads"]),
            command=entry["command"],
        )

    def manifest_entry(self, file: str, checkpoint: str, size_bytes: int) -> dict:
        """Its manifest entry, its files named `file` and `checkpoint` in the models folder."""
        return {
            "file": file,
            "checkpoint": checkpoint,
            "config": dict(self.config),
            "params": self.params,
            "val_accuracy": self.val_accuracy,
            **{f"test_{m}": self.test_metrics[m] for m in TEST_METRICS},
            "onnx_p50_us": self.onnx_p50_us,
            "torch_p50_us": self.torch_p50_us,
            "bench_threads": self.bench_threads,
            "size_bytes": size_bytes,
            "command": self.command,
            **({"history": self.history} if self.history else {}),
            **({"interpolation": self.interpolation} if self.interpolation else {}),
            **({"teacher": self.teacher} if self.teacher else {}),
        }


def _copy_atomically(source: Path, target: Path) -> None:
    if source.resolve() == target.resolve():
        return  # already in place (--reexport-shipped keeps the checkpoints)
    with replaced_atomically(target) as tmp_path:
        shutil.copyfile(source, tmp_path)


def time_shipped_models(models: dict[str, dict], models_dir: Path, n_calls: int = 2000) -> None:
    """Set every entry's batch-1 p50 latencies (1 thread), all models timed in one sitting.

    The grid's figures were taken right after each run, at other moments; here PyTorch eager and
    ONNX Runtime of every shipped file take turns, so their ratios hold.
    """
    image = random_pixels(1)
    runs = {}
    for name, entry in models.items():
        session = onnx_session(models_dir / entry["file"], threads=1)
        runs[f"{name} onnx"] = lambda s=session: s.run(None, {INPUT_NAME: image})
        if "int8_of" not in entry:
            graph = ExportedViT(load_checkpoint(models_dir / entry["checkpoint"])).eval()
            runs[f"{name} torch"] = lambda g=graph: g(torch.from_numpy(image))
    with torch_threads(1), torch.inference_mode():
        times = time_interleaved(runs, n_calls)
    for name, entry in models.items():
        entry["onnx_p50_us"] = round(float(np.median(times[f"{name} onnx"])) * 1e6, 1)
        source = entry.get("int8_of", name)  # an INT8 entry is compared with its fp32 PyTorch
        entry["torch_p50_us"] = round(float(np.median(times[f"{source} torch"])) * 1e6, 1)
        entry["bench_threads"] = 1


def _require_files(models_dir: Path, files: list[str]) -> None:
    """Raise a ValueError naming every one of `files` (manifest names) not in `models_dir`."""
    if missing := sorted({str(models_dir / f) for f in files if not (models_dir / f).is_file()}):
        path = manifest_path(models_dir)
        raise ValueError(f"{path} names files that are not there: {', '.join(missing)}")


def retime_shipped(models_dir: Path, n_calls: int = 2000) -> dict:
    """Time every model of `<models_dir>/manifest.json` again in one sitting; rewrite its latencies.

    For a manifest whose figures were taken while the machine was busy (say, beside a training run).
    """
    manifest = load_manifest_json(models_dir, missing_ok=True)
    if not manifest["models"]:
        raise ValueError(
            f"{manifest_path(models_dir)}: no manifest, or no models in it: ship models first"
        )
    _require_files(
        models_dir, [e[key] for e in manifest["models"].values() for key in ("file", "checkpoint")]
    )
    time_shipped_models(manifest["models"], models_dir, n_calls)
    write_manifest(models_dir, manifest)
    return manifest


def read_shipped(models_dir: Path) -> dict[str, dict]:
    """The entries of `<models_dir>/manifest.json` by name; {} when nothing is shipped yet."""
    return load_manifest_json(models_dir, missing_ok=True)["models"]


def shipped_entry(models_dir: Path, config: dict[str, int]) -> dict:
    """The manifest entry of the shipped fp32 model with this configuration."""
    for entry in read_shipped(models_dir).values():
        if "int8_of" not in entry and entry["config"] == config:
            return entry
    raise ValueError(f"{manifest_path(models_dir)}: no shipped model has the config {config}")


def ship_models(
    models: dict[str, ShippedModel],
    models_dir: Path,
    data: DataSplits,
    grid_results: str | None,
    retime: bool = True,
) -> dict:
    """Copy each model (name -> ShippedModel) into `models_dir` and write the manifest.

    Each model gets `vit-<name>.onnx` and `.pt`; its INT8 variant is added as `<name> INT8`
    only when it keeps the validation accuracy within INT8_MAX_ACCURACY_LOSS (the test set
    is reported, never used to decide). Entries of other models stay as they were. Every model
    is then timed in one sitting; with `retime=False` the manifest's latencies are kept instead.
    """
    val = (data.val_images.cpu().numpy(), data.val_labels.cpu().numpy())
    test_images, test_labels = data.test_images.cpu().numpy(), data.test_labels.cpu().numpy()
    models_dir.mkdir(parents=True, exist_ok=True)
    previous = read_shipped(models_dir)
    replaced = set(models) | {f"{name} INT8" for name in models}
    entries = {k: v for k, v in previous.items() if k not in replaced}
    for name, model in models.items():
        stem = f"vit-{name.lower()}"
        onnx_file, checkpoint_file = f"{stem}.onnx", f"{stem}.pt"
        _copy_atomically(model.onnx_path, models_dir / onnx_file)
        _copy_atomically(model.checkpoint_path, models_dir / checkpoint_file)
        size = (models_dir / onnx_file).stat().st_size
        entry = entries[name] = model.manifest_entry(onnx_file, checkpoint_file, size)

        int8_path = quantize_int8(models_dir / onnx_file, models_dir / f"{stem}-int8.onnx")
        int8_val = onnx_accuracy(int8_path, *val)
        int8_test = classification_metrics(test_labels, onnx_predictions(int8_path, test_images))
        shipped = entry["val_accuracy"] - int8_val <= INT8_MAX_ACCURACY_LOSS
        entry["int8"] = {
            "val_accuracy": int8_val,
            "test_accuracy": int8_test["accuracy"],
            "shipped": shipped,
        }
        if shipped:
            int8_entry = {
                **entry,
                "file": int8_path.name,
                "val_accuracy": int8_val,
                **{f"test_{metric}": round(v, 5) for metric, v in int8_test.items()},
                "size_bytes": int8_path.stat().st_size,
                "int8_of": name,
            }
            del int8_entry["int8"]
            entries[f"{name} INT8"] = int8_entry
        else:
            int8_path.unlink()
        print(
            f"{name}: test accuracy {entry['test_accuracy']:.4f}; INT8 validation "
            f"{int8_val:.4f} vs {entry['val_accuracy']:.4f}, test {int8_test['accuracy']:.4f} "
            f"({'shipped' if shipped else 'not shipped'})"
        )
    entries = dict(sorted(entries.items()))  # each model followed by its INT8 variant
    if retime:
        time_shipped_models(entries, models_dir)
    else:
        for name, entry in entries.items():
            entry.update(
                {k: previous[name][k] for k in LATENCY_KEYS if k in previous.get(name, {})}
            )
    manifest = {"models": entries, "grid_results": grid_results}
    write_manifest(models_dir, manifest)
    return manifest


def reexport_shipped(models_dir: Path, data: DataSplits, retime: bool = True) -> dict:
    """Export every shipped model again from its checkpoint with the current export code.

    The weights, and so the PyTorch figures (validation and test metrics), stay; the ONNX files
    and their INT8 variants (accuracy measured again) are new, and so are all latencies unless
    `retime` is False (then the manifest's are kept: for a busy machine).
    """
    manifest = load_manifest_json(models_dir, missing_ok=True)
    fp32 = {name: e for name, e in manifest["models"].items() if "int8_of" not in e}
    if not fp32:
        raise ValueError(f"{manifest_path(models_dir)}: no shipped models to export again")
    _require_files(models_dir, [entry["checkpoint"] for entry in fp32.values()])
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, entry in fp32.items():
            model = ShippedModel.from_entry(entry, models_dir)
            onnx_path = export_onnx(
                load_checkpoint(model.checkpoint_path), Path(tmp) / f"{name}.onnx"
            )
            models[name] = dataclasses.replace(model, onnx_path=onnx_path)
        return ship_models(models, models_dir, data, manifest.get("grid_results"), retime)


def lineage(init_from: Path | None, config: dict[str, int], command: str) -> str:
    """The commands that make a model: with --init-from, the shipped one's, then this."""
    if init_from is None:
        return command
    return followed_by(shipped_entry(init_from, config)["command"], command)


def followed_by(previous: str, command: str) -> str:
    """`previous && command`; a rerun after shipping into the same folder finds this command
    already there, and names it once."""
    return previous if previous.endswith(f" && {command}") else f"{previous} && {command}"


def improved_on_start(trained: dict[str, dict], init_from: Path) -> dict[str, dict]:
    """The runs whose validation accuracy is at least that of the model they started from."""
    kept = {}
    for name, row in trained.items():
        config = config_of(row)
        start, end = shipped_entry(init_from, config)["val_accuracy"], float(row["val_accuracy"])
        if end >= start:
            kept[name] = row
        else:
            print(f"{name}: val acc {end:.4f}, below the {start:.4f} it started from: not shipped")
    return kept
