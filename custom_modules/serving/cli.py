"""`vit-digits-predict`: read digits from image files with a shipped model, no PyTorch needed.

    vit-digits-predict seven.png photo.jpg            # one line per file
    vit-digits-predict --json --model Large *.png     # a JSON list, one object per file

Each file goes the app's way: `read_upload` (PNG, JPEG or GIF; a GIF's first frame), then
`preprocess_image` (cropped, scaled and centred as MNIST was made), then the ONNX model named in
the models folder's manifest.json, with its calibration (the probability is the calibrated one).
The answer is *declined* exactly when the app declines it (serving/explain.py's `is_declined`):
by the model's rule in the manifest, or, until the model carries one, by the provisional
threshold of its error-analysis file. A file that cannot be read gets a one-line error on stderr
and the others are still read; the exit code is then 1 (2 for a command line that cannot be run).
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

PROG = "vit-digits-predict"
DEFAULT_MODEL = "Fast"
MODELS_DIR_ENV = "VIT_DIGITS_MODELS_DIR"
REPOSITORY_MODELS = Path(__file__).resolve().parents[2] / "models"


def default_models_dir() -> Path:
    """$VIT_DIGITS_MODELS_DIR when set (as for the app), else this checkout's models/."""
    return Path(os.environ.get(MODELS_DIR_ENV) or REPOSITORY_MODELS)


@dataclass(frozen=True)
class Answer:
    """What one file gave: a digit (with its probability and whether it was declined), or an
    error; `notes` are one-line caveats about the file (e.g. only a GIF's first frame)."""

    file: str
    digit: int | None = None
    probability: float | None = None
    declined: bool | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()
    decline_below: float = 0.0  # the threshold that declined it, for the text

    def as_json(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {
            "file": self.file,
            "digit": self.digit,
            "probability": round(self.probability, 6),
            "declined": self.declined,
            "notes": list(self.notes),
        }

    def as_text(self) -> str:
        if self.declined:
            return (
                f"{self.file}: declined (best guess {self.digit} at {self.probability:.1%}, "
                f"below the model's {self.decline_below:.0%})"
            )
        return f"{self.file}: {self.digit} ({self.probability:.1%})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0].replace("`", ""),
        epilog="Exit code: 0 when every file was read, 1 when any was not, 2 for a bad command.",
    )
    parser.add_argument(
        "files", nargs="+", type=Path, metavar="IMAGE", help="PNG, JPEG or GIF files of one digit"
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="a model named in the manifest, e.g. Fast, Large, Fast INT8 (default: %(default)s)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help=f"the folder with manifest.json and the ONNX files (default: ${MODELS_DIR_ENV} "
        f"when set, else {REPOSITORY_MODELS})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list, one object per file (file, digit, probability, declined, notes; "
        "or file, error) instead of one line per file",
    )
    return parser


@dataclass(frozen=True)
class Reader:
    """A model and the provisional threshold the app falls back on (NaN: none)."""

    model: object  # OnnxViT
    provisional_threshold: float = float("nan")

    @property
    def threshold(self) -> float:
        """The top probability below which an answer is declined."""
        rule = self.model.decline_below
        return rule if rule > 0 else self.provisional_threshold


def read_digit(path: Path, reader: Reader) -> Answer:
    """The model's answer for one image file, or its one-line error."""
    from custom_modules.messages import one_line
    from custom_modules.serving.explain import is_declined
    from custom_modules.serving.preprocess import preprocess_image
    from custom_modules.serving.upload import UploadError, read_upload

    name = str(path)
    try:
        upload = read_upload(path.read_bytes())
    except (OSError, UploadError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else one_line(err, 300)
        return Answer(name, error=f"cannot read: {reason}")
    x = preprocess_image(upload.pixels)
    if x is None:
        return Answer(name, error="no digit found: the image is blank, too faint or too small")
    prediction = reader.model.predict_with_rollout(x)
    probabilities = prediction.probabilities[0]
    digit = int(probabilities.argmax())
    return Answer(
        name,
        digit,
        float(probabilities[digit]),
        is_declined(prediction, reader.model, reader.provisional_threshold),
        notes=upload.warnings,
        decline_below=reader.threshold,
    )


def open_model(models_dir: Path, name: str) -> Reader:
    """The named model of the manifest, opened with its calibration and decline rule, and the
    app's provisional threshold; ModelFileError, or KeyError for a name the manifest lacks."""
    from custom_modules.serving.error_analysis import artifact_path, load_error_analysis
    from custom_modules.serving.manifest import read_manifest
    from custom_modules.serving.model import OnnxViT

    manifest = read_manifest(models_dir)
    if name not in manifest.models:
        raise KeyError(
            f"no model {name!r} in {manifest.path}; it has: {', '.join(manifest.models)}"
        )
    info = manifest.models[name]
    analysis = load_error_analysis(artifact_path(info.path.parent, info.name))
    threshold = analysis.decline_threshold if analysis is not None else float("nan")
    return Reader(OnnxViT.from_info(info), threshold)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from custom_modules.serving.errors import ModelFileError  # after parsing: --help stays quick

    models_dir = args.models_dir or default_models_dir()
    try:
        reader = open_model(models_dir, args.model)
    except (ModelFileError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) else str(err)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
    answers = [read_digit(path, reader) for path in args.files]
    for answer in answers:
        if answer.error is not None:
            print(f"{PROG}: error: {answer.file}: {answer.error}", file=sys.stderr)
        elif not args.json:
            print(answer.as_text())
            for note in answer.notes:
                print(f"  note: {note}")
    if args.json:
        print(json.dumps([answer.as_json() for answer in answers], indent=1))
    return 1 if any(answer.error is not None for answer in answers) else 0


if __name__ == "__main__":
    sys.exit(main())
