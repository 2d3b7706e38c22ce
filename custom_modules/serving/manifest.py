"""`models/manifest.json`: the shipped models and their figures. This module alone reads and
writes the file: `read_manifest` gives the app's typed, checked view; `load_manifest_json` and
`write_manifest` give the shipping code the whole file as JSON, entries it does not know kept.
"""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from custom_modules.atomic_file import replaced_atomically
from custom_modules.contract import CONFIG_KEYS, PATCH_OVERLAP_KEY, config_of
from custom_modules.messages import one_line
from custom_modules.serving.errors import ModelFileError, model_file_error

MANIFEST_FILE = "manifest.json"
MODEL_NUMBERS = {
    "params": int,
    "size_bytes": int,
    "test_accuracy": float,
    "test_precision": float,
    "test_recall": float,
    "test_f1": float,
    "onnx_p50_us": float,
    "torch_p50_us": float,
}


KNOWN_KEYS = {"file", "config", "command", "checkpoint", "int8_of", "temperature", "decline_below"}
KNOWN_KEYS |= set(MODEL_NUMBERS)


@dataclass(frozen=True)
class ModelInfo:
    """One model of the manifest; `path` is its ONNX file inside the models folder.

    `checkpoint` is its PyTorch checkpoint there (None when not shipped), `int8_of` the model an
    INT8 variant was quantised from (None for an fp32 model).
    """

    name: str
    path: Path
    config: dict[str, int]
    params: int
    size_bytes: int
    test_accuracy: float
    test_precision: float
    test_recall: float
    test_f1: float
    onnx_p50_us: float
    torch_p50_us: float
    command: str
    checkpoint: Path | None = None
    int8_of: str | None = None
    temperature: float = 1.0  # softmax(logits / temperature): fitted on validation data
    decline_below: float = 0.0  # declined when the largest probability is below; 0: never
    extra: dict = field(default_factory=dict)  # the entry's other figures, as written


@dataclass(frozen=True)
class Manifest:
    """The served models by name, in the file's order, and the grid's results table."""

    path: Path
    models: dict[str, ModelInfo]
    grid_results: Path | None


def manifest_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / MANIFEST_FILE


def load_manifest_json(models_dir: str | Path, missing_ok: bool = False) -> dict:
    """The whole manifest as JSON, with at least a `models` object (entries not checked).

    A missing file is `{"models": {}}` with `missing_ok`, else an error; an unreadable one, or
    one without a `models` object, raises ModelFileError naming the file.
    """
    path = manifest_path(models_dir)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        if missing_ok:
            return {"models": {}}
        raise model_file_error(path, "not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise model_file_error(path, f"cannot read the manifest ({one_line(err, 200)})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("models"), dict):
        raise model_file_error(path, "expected a 'models' object with at least one model")
    return spec


def write_manifest(models_dir: str | Path, spec: dict) -> Path:
    """Write the whole manifest (`{"models": ..., "grid_results": ...}`) atomically."""
    path = manifest_path(models_dir)
    with replaced_atomically(path) as tmp_path:
        tmp_path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def _is_number(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    return ok and math.isfinite(value)


def _file_name(entry: dict, key: str) -> str | None:
    """A file name inside the models folder, or None when it is not one."""
    file = entry.get(key)
    return file if isinstance(file, str) and re.fullmatch(r"[\w.-]+", file) else None


def _model_info(path: Path, name: str, entry: object) -> ModelInfo:
    def bad(what: str) -> ModelFileError:
        return model_file_error(path, f"model '{name}' {what}")

    if not isinstance(entry, dict):
        raise bad("is not a JSON object")
    file = entry.get("file")
    if not isinstance(file, str) or not re.fullmatch(r"[\w.-]+\.onnx", file):
        raise bad(f"has no valid 'file' (a .onnx name inside the models folder), got {file!r}")
    config = entry.get("config")
    if not isinstance(config, dict) or not all(
        _is_number(config.get(key), int) for key in CONFIG_KEYS
    ):
        raise bad(f"needs a 'config' with integer {', '.join(CONFIG_KEYS)}")
    overlap = config.get(PATCH_OVERLAP_KEY, 0)
    if not _is_number(overlap, int) or overlap < 0:
        raise bad(f"has a '{PATCH_OVERLAP_KEY}' that is no pixel count: {overlap!r}")
    for key, kind in MODEL_NUMBERS.items():
        if not _is_number(entry.get(key), kind):
            raise bad(f"needs a numeric '{key}', got {entry.get(key)!r}")
    if not isinstance(entry.get("command"), str):
        raise bad("needs a 'command' string")
    numbers = {key: kind(entry[key]) for key, kind in MODEL_NUMBERS.items()}
    temperature, decline_below = entry.get("temperature", 1.0), entry.get("decline_below", 0.0)
    if not _is_number(temperature, float) or temperature <= 0:
        raise bad(f"needs a positive 'temperature', got {temperature!r}")
    if not _is_number(decline_below, float) or not 0 <= decline_below <= 1:
        raise bad(f"needs a 'decline_below' between 0 and 1, got {decline_below!r}")
    checkpoint = _file_name(entry, "checkpoint")
    int8_of = entry.get("int8_of")
    return ModelInfo(
        name=name,
        path=path.parent / file,
        config=config_of(config),
        command=entry["command"],
        checkpoint=None if checkpoint is None else path.parent / checkpoint,
        int8_of=int8_of if isinstance(int8_of, str) else None,
        temperature=float(temperature),
        decline_below=float(decline_below),
        extra={k: v for k, v in entry.items() if k not in KNOWN_KEYS},
        **numbers,
    )


def read_manifest(models_dir: str | Path) -> Manifest:
    """Read `<models_dir>/manifest.json`; raise ModelFileError naming the file if it is unusable."""
    spec = load_manifest_json(models_dir)
    path = manifest_path(models_dir)
    models = spec["models"]
    if not models:
        raise model_file_error(path, "expected a 'models' object with at least one model")
    grid_results = spec.get("grid_results")
    if grid_results is not None and not isinstance(grid_results, str):
        raise model_file_error(path, f"'grid_results' must be a file name, got {grid_results!r}")
    return Manifest(
        path=path,
        models={name: _model_info(path, name, entry) for name, entry in models.items()},
        grid_results=path.parent / grid_results if grid_results else None,
    )
