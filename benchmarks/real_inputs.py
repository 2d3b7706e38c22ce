"""How the shipped models read what people hand them, and whether they decline what is no digit.

One row per model of the manifest, on inputs made here from MNIST's *test* digits and from
held-out fonts and seeds (they report only: every choice was made on the validation split):

- MNIST test as it is: accuracy, expected calibration error (15 bins) and NLL;
- MNIST test as served: the same digits through `preprocess_image`, as an upload of them is read;
- drawn: each digit's centre line drawn again with a round brush, any size and place, a pen
  0.04-0.16 of the line's size (MNIST's widths and thinner);
- wide pens: the same digits drawn with a pen 0.25-0.5 of the line's size (0.2-0.33 of the
  drawn digit's; MNIST's 95th percentile is 0.22), as a small digit drawn with a wide brush;
- other hands: slant, proportions, wobble and pen width that MNIST's writers did not use;
- font shapes: digits from fonts the training never saw, with a random pen and wobble;
- photos: the drawn digits as JPEG photos of dark ink on paper, read through the upload path;
- non-digits: letters, signs, scribbles, shapes and digit pairs, from held-out fonts and seeds;
- real hands: the one set of real digits not MNIST's at hand, scikit-learn's copy of the UCI
  handwritten digits (1797 digits by 43 people, 8x8 px in 17 grey levels), each handed to the
  app as a tiny PNG upload. Coarse, but written by people, not made here; it only reports.

An input counts as read when the model's top digit is its label and it was not declined. Every
input goes through the app's own path: `read_upload` (photos, real hands), `preprocess_image`,
`OnnxViT`.

    python benchmarks/real_inputs.py --data-dir ../shared/data/mnist
    python benchmarks/real_inputs.py --models-dir /tmp/today/models   # another set of models
"""

import argparse
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from custom_modules.serving.calibration import expected_calibration_error, negative_log_likelihood
from custom_modules.serving.manifest import load_manifest_json, read_manifest, write_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.serving.preprocess import preprocess_image
from custom_modules.serving.upload import read_upload
from custom_modules.synthetic.handwriting import (
    draw_as_strokes,
    font_digit,
    other_hand,
    photo_of_paper,
)
from custom_modules.synthetic.non_digits import HELD_OUT_FONTS, make_non_digits
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, load_mnist

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
NON_DIGIT_SEED = 2  # training used seed 0, validation seed 1
DIGIT_SETS = (
    "MNIST as served",
    "drawn",
    "wide pens",
    "other hands",
    "font shapes",
    "photos",
    "real hands",
)


@dataclass(frozen=True)
class InputSet:
    """Model inputs (N, 1, 28, 28), their labels, and which were not blank to preprocessing."""

    pixels: np.ndarray
    labels: np.ndarray
    usable: np.ndarray


def as_set(images: list[np.ndarray], labels: np.ndarray) -> InputSet:
    """Preprocess each image as the app does; a blank one is kept as zeros and marked unusable."""
    frames = [preprocess_image(image) for image in images]
    blank = np.zeros((1, 1, 28, 28), np.float32)
    pixels = np.concatenate([blank if x is None else x for x in frames])
    return InputSet(pixels, labels, np.array([x is not None for x in frames]))


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 greyscale pixels as a PNG file, as a user would upload them."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def real_hands() -> tuple[list[np.ndarray], np.ndarray]:
    """The UCI digits (light ink on dark, 0..16) decoded from PNG uploads, and their labels."""
    digits = load_digits()
    uploads = [png_bytes(np.round(d * 255 / 16).astype(np.uint8)) for d in digits.images]
    return [read_upload(data).pixels for data in uploads], digits.target.astype(np.int64)


def make_sets(data_dir: Path, n: int, seed: int) -> dict[str, InputSet]:
    """The inputs, made once and read by every model."""
    mnist = load_mnist(data_dir)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(mnist.test_labels), n, replace=False)
    digits, labels = mnist.test_images[picked], mnist.test_labels[picked]
    test = mnist.test_images.astype(np.float32)[:, None] / 255
    drawn = [draw_as_strokes(d, rng) for d in digits]
    photos = [read_upload(photo_of_paper(canvas, rng)).pixels for canvas in drawn]
    # its own generator: the sets above and below are drawn as before it was added
    wide_rng = np.random.default_rng([seed, 1])
    wide = [draw_as_strokes(d, wide_rng, pen_range=(0.25, 0.5)) for d in digits]
    non_digits, _ = make_non_digits(n, NON_DIGIT_SEED, digits, labels, fonts=HELD_OUT_FONTS)
    return {
        "MNIST test": InputSet(test, mnist.test_labels.astype(np.int64), np.ones(len(test), bool)),
        "MNIST as served": as_set(list(mnist.test_images), mnist.test_labels.astype(np.int64)),
        "drawn": as_set(drawn, labels),
        "wide pens": as_set(wide, labels),
        "other hands": as_set([other_hand(d, rng) for d in digits], labels),
        "font shapes": as_set([font_digit(int(label), rng) for label in labels], labels),
        "photos": as_set(photos, labels),
        "real hands": as_set(*real_hands()),
        "non-digits": InputSet(
            non_digits.astype(np.float32)[:, None] / 255, np.full(n, -1), np.ones(n, bool)
        ),
    }


def measure(model: OnnxViT, sets: dict[str, InputSet]) -> dict[str, float]:
    """Every figure of the table for one model."""
    figures = {}
    test = sets["MNIST test"]
    probabilities = model.classify(test.pixels).probabilities
    figures["mnist_accuracy"] = float((probabilities.argmax(1) == test.labels).mean())
    figures["mnist_ece"] = expected_calibration_error(probabilities, test.labels)
    figures["mnist_nll"] = negative_log_likelihood(probabilities, test.labels)
    for name in DIGIT_SETS:
        inputs = sets[name]
        reading = model.classify(inputs.pixels)
        probabilities, declined = reading.probabilities, reading.declined
        right = (probabilities.argmax(1) == inputs.labels) & inputs.usable
        figures[f"{name}_accuracy"] = float((right & ~declined).mean())
        figures[f"{name}_top_digit"] = float(right.mean())
        figures[f"{name}_declined"] = float(declined.mean())
        if name == "drawn":
            figures["drawn_correct_declined"] = float(declined[right].mean())
    non_digits = model.classify(sets["non-digits"].pixels)
    figures["non_digits_declined"] = float(non_digits.declined.mean())
    figures["non_digits_sure"] = float((non_digits.probabilities.max(1) >= 0.9).mean())
    return figures


COLUMNS = {
    "mnist_accuracy": ("MNIST test", "{:.2%}"),
    "mnist_ece": ("ECE", "{:.2%}"),
    "mnist_nll": ("NLL", "{:.3f}"),
    "MNIST as served_top_digit": ("MNIST test as served", "{:.2%}"),
    "drawn_accuracy": ("drawn", "{:.2%}"),
    "wide pens_accuracy": ("wide pens", "{:.2%}"),
    "other hands_accuracy": ("other hands", "{:.2%}"),
    "font shapes_accuracy": ("font shapes", "{:.2%}"),
    "photos_accuracy": ("photos", "{:.2%}"),
    "real hands_accuracy": ("real hands (UCI 8x8)", "{:.2%}"),
    "non_digits_declined": ("non-digits declined", "{:.1%}"),
    "non_digits_sure": ("non-digits >= 90 % sure", "{:.1%}"),
    "drawn_correct_declined": ("read drawn digits declined", "{:.2%}"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="MNIST's files")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="models to measure")
    parser.add_argument("--n", type=int, default=2000, help="inputs in each made-up set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the made-up sets")
    parser.add_argument(
        "--write-manifest",
        action="store_true",
        help="record the figures in the models' manifest entries (key real_inputs)",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    sets = make_sets(args.data_dir, args.n, args.seed)
    print(f"inputs made in {time.perf_counter() - started:.0f} s, {args.n} in each made-up set")
    print("| model | " + " | ".join(label for label, _ in COLUMNS.values()) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    measured = {}
    for name, info in read_manifest(args.models_dir).models.items():
        figures = measured[name] = measure(OnnxViT.from_info(info), sets)
        cells = [fmt.format(figures[key]) for key, (_, fmt) in COLUMNS.items()]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print("\nThe same digits by the top digit alone, declines not counted (share declined):")
    print("| model | " + " | ".join(DIGIT_SETS) + " |")
    print("|---" * (len(DIGIT_SETS) + 1) + "|")
    for name, figures in measured.items():
        cells = [
            f"{figures[f'{s}_top_digit']:.2%} ({figures[f'{s}_declined']:.2%})" for s in DIGIT_SETS
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.write_manifest:
        manifest = load_manifest_json(args.models_dir)
        for name, figures in measured.items():
            manifest["models"][name]["real_inputs"] = {
                "n": args.n,
                "seed": args.seed,
                **{k: round(v, 5) for k, v in figures.items()},
            }
        write_manifest(args.models_dir, manifest)
        print(f"recorded in {args.models_dir / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
