"""Ship the chosen models: copy them into models/, add INT8 variants, write the manifest."""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from custom_modules.atomic_file import replaced_atomically
from custom_modules.inference import INPUT_NAME
from custom_modules.latency import onnx_session, time_interleaved, torch_threads
from custom_modules.onnx_export import ExportedViT, export_onnx
from custom_modules.onnx_variants import onnx_accuracy, onnx_predictions, quantize_int8
from custom_modules.training import DataSplits, classification_metrics, load_checkpoint

# an INT8 variant is shipped only if it loses at most this much validation accuracy
INT8_MAX_ACCURACY_LOSS = 0.002
CONFIG_KEYS = ("emb_dim", "num_heads", "n_layers", "mlp_ratio")
TEST_METRICS = ("accuracy", "precision", "recall", "f1")


def _copy_atomically(source: Path, target: Path) -> None:
    with replaced_atomically(target) as tmp_path:
        shutil.copyfile(source, tmp_path)


def _write_json_atomically(data: dict, path: Path) -> None:
    with replaced_atomically(path) as tmp_path:
        tmp_path.write_text(json.dumps(data, indent=2) + "\n")


def time_shipped_models(models: dict[str, dict], models_dir: Path, n_calls: int = 2000) -> None:
    """Set every entry's batch-1 p50 latencies (1 thread), all models timed in one sitting.

    The grid's figures were taken right after each run, at other moments; here PyTorch eager and
    ONNX Runtime of every shipped file take turns, so their ratios hold.
    """
    image = np.random.default_rng(0).standard_normal((1, 1, 28, 28), dtype=np.float32)
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


def retime_shipped(models_dir: Path, n_calls: int = 2000) -> dict:
    """Time every model of `<models_dir>/manifest.json` again in one sitting; rewrite its latencies.

    For a manifest whose figures were taken while the machine was busy (say, beside a training run).
    """
    manifest = _read_manifest(models_dir)
    if not manifest["models"]:
        raise ValueError(
            f"{_manifest_path(models_dir)}: no manifest, or no models in it: ship models first"
        )
    _require_files(
        models_dir, [e[key] for e in manifest["models"].values() for key in ("file", "checkpoint")]
    )
    time_shipped_models(manifest["models"], models_dir, n_calls)
    _write_json_atomically(manifest, _manifest_path(models_dir))
    return manifest


def manifest_entry(row: dict, file: str, checkpoint: str, command: str) -> dict:
    """One model's manifest entry from its results-table row."""
    return {
        "file": file,
        "checkpoint": checkpoint,
        "config": {key: int(row[key]) for key in CONFIG_KEYS},
        "params": int(row["params"]),
        "val_accuracy": float(row["val_accuracy"]),
        **{f"test_{m}": float(row[f"test_{m}"]) for m in TEST_METRICS},
        "onnx_p50_us": float(row["onnx_p50_us"]),
        "torch_p50_us": float(row["torch_p50_us"]),
        "bench_threads": int(row["bench_threads"]),
        "size_bytes": int(row["onnx_size_bytes"]),
        "command": command,
    }


def _as_uint8(images: torch.Tensor) -> np.ndarray:
    """Split tensors `(N, 1, 28, 28)` in [0, 1] back to the loader's uint8 `(N, 28, 28)`."""
    return images.mul(255).round().to(torch.uint8).squeeze(1).cpu().numpy()


def _manifest_path(models_dir: Path) -> Path:
    return models_dir / "manifest.json"


def _read_manifest(models_dir: Path) -> dict:
    """The whole `<models_dir>/manifest.json`; no models when nothing is shipped yet."""
    path = _manifest_path(models_dir)
    if not path.exists():
        return {"models": {}}
    try:
        manifest = json.loads(path.read_text())
        manifest["models"].items()  # a manifest without a models mapping is corrupt
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: cannot read the manifest ({err})") from None
    return manifest


def _require_files(models_dir: Path, files: list[str]) -> None:
    """Raise a ValueError naming every one of `files` (manifest names) not in `models_dir`."""
    if missing := sorted({str(models_dir / f) for f in files if not (models_dir / f).is_file()}):
        path = _manifest_path(models_dir)
        raise ValueError(f"{path} names files that are not there: {', '.join(missing)}")


def read_shipped(models_dir: Path) -> dict[str, dict]:
    """The entries of `<models_dir>/manifest.json` by name; {} when nothing is shipped yet."""
    return _read_manifest(models_dir)["models"]


def shipped_entry(models_dir: Path, config: dict[str, int]) -> dict:
    """The manifest entry of the shipped fp32 model with this configuration."""
    for entry in read_shipped(models_dir).values():
        if "int8_of" not in entry and entry["config"] == config:
            return entry
    raise ValueError(f"{_manifest_path(models_dir)}: no shipped model has the config {config}")


def ship_models(
    trained: dict[str, dict],
    run_dir: Path,
    models_dir: Path,
    data: DataSplits,
    grid_results: str,
    commands: dict[str, str],
) -> dict:
    """Copy each trained run (name -> results row) into `models_dir` and write the manifest.

    Each model gets `vit-<name>.onnx` and `.pt`; its INT8 variant is added as `<name> INT8`
    only when it keeps the validation accuracy within INT8_MAX_ACCURACY_LOSS (the test set
    is reported, never used to decide). Entries of models not in `trained` stay as they were.
    """
    val = (_as_uint8(data.val_images), data.val_labels.cpu().numpy())
    test_images, test_labels = _as_uint8(data.test_images), data.test_labels.cpu().numpy()
    models_dir.mkdir(parents=True, exist_ok=True)
    replaced = set(trained) | {f"{name} INT8" for name in trained}
    models = {k: v for k, v in read_shipped(models_dir).items() if k not in replaced}
    for name, row in trained.items():
        stem = f"vit-{name.lower()}"
        onnx_file, checkpoint_file = f"{stem}.onnx", f"{stem}.pt"
        _copy_atomically(run_dir / row["onnx_file"], models_dir / onnx_file)
        _copy_atomically(run_dir / row["checkpoint_file"], models_dir / checkpoint_file)
        entry = manifest_entry(row, onnx_file, checkpoint_file, commands[name])
        models[name] = entry

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
            models[f"{name} INT8"] = int8_entry
        else:
            int8_path.unlink()
        print(
            f"{name}: test accuracy {entry['test_accuracy']:.4f}; INT8 validation "
            f"{int8_val:.4f} vs {entry['val_accuracy']:.4f}, test {int8_test['accuracy']:.4f} "
            f"({'shipped' if shipped else 'not shipped'})"
        )
    models = dict(sorted(models.items()))  # each model followed by its INT8 variant
    time_shipped_models(models, models_dir)
    manifest = {"models": models, "grid_results": grid_results}
    _write_json_atomically(manifest, _manifest_path(models_dir))
    return manifest


def reexport_shipped(models_dir: Path, data: DataSplits) -> dict:
    """Export every shipped model again from its checkpoint with the current export code.

    The weights, and so the PyTorch figures (validation and test metrics), stay; the ONNX files,
    their INT8 variants (accuracy measured again) and all latencies are new.
    """
    manifest = _read_manifest(models_dir)
    fp32 = {name: e for name, e in manifest["models"].items() if "int8_of" not in e}
    if not fp32:
        raise ValueError(f"{_manifest_path(models_dir)}: no shipped models to export again")
    _require_files(models_dir, [entry["checkpoint"] for entry in fp32.values()])
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, rows = Path(tmp), {}
        for name, entry in fp32.items():
            onnx_file, checkpoint_file = f"{name}.onnx", f"{name}.pt"
            export_onnx(load_checkpoint(models_dir / entry["checkpoint"]), run_dir / onnx_file)
            shutil.copyfile(models_dir / entry["checkpoint"], run_dir / checkpoint_file)
            rows[name] = {
                **entry["config"],
                "params": entry["params"],
                "val_accuracy": entry["val_accuracy"],
                **{f"test_{m}": entry[f"test_{m}"] for m in TEST_METRICS},
                "onnx_p50_us": entry["onnx_p50_us"],
                "torch_p50_us": entry["torch_p50_us"],
                "bench_threads": entry["bench_threads"],
                "onnx_size_bytes": (run_dir / onnx_file).stat().st_size,
                "onnx_file": onnx_file,
                "checkpoint_file": checkpoint_file,
            }
        commands = {name: entry["command"] for name, entry in fp32.items()}
        return ship_models(rows, run_dir, models_dir, data, manifest["grid_results"], commands)
