"""How well the shipped models read digits drawn on the app's canvas at any size and place.

MNIST test digits are drawn again as the canvas would hold them: white ink on a transparent
280x280 RGBA canvas, the digit's box from 30 to 270 px, anywhere on the canvas, with the pen
thicker or thinner than MNIST's. Each is then read two ways: through `preprocess_image` (what
the app does) and by a plain resize to 28x28 (what a naive app would do). Prints a table:

    python benchmarks/canvas_digits.py --data-dir ../shared/data/mnist
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from custom_modules.contract import PIXEL_MAX
from custom_modules.serving.manifest import read_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.serving.preprocess import preprocess_image
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, load_mnist

CANVAS_SIZE = 280  # as in app.py
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


def redraw_on_canvas(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 MNIST digit as a random-size, random-place, random-pen canvas drawing (RGBA)."""
    ink = Image.fromarray(digit)
    ink = ink.crop(ink.getbbox() or (0, 0, 28, 28))
    side = int(rng.integers(30, CANVAS_SIZE - 9))  # the longer side of the digit's box
    scale = side / max(ink.size)
    ink = ink.resize(
        (max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.BILINEAR
    )
    pen = int(rng.integers(-1, 3)) * max(1, side // 40)  # thinner, as is, or thicker
    if pen > 0:
        ink = ink.filter(ImageFilter.MaxFilter(2 * pen + 1))
    elif pen < 0:
        ink = ink.filter(ImageFilter.MinFilter(2 * -pen + 1))
    alpha = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE))
    left = int(rng.integers(0, CANVAS_SIZE - ink.width + 1))
    top = int(rng.integers(0, CANVAS_SIZE - ink.height + 1))
    alpha.paste(ink, (left, top))
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE, 4), dtype=np.uint8)
    canvas[..., :3] = 255  # the canvas's white stroke colour; coverage is in alpha
    canvas[..., 3] = np.asarray(alpha)
    return canvas


def plain_resize(canvas: np.ndarray) -> np.ndarray:
    """The naive input: the whole canvas's ink, shrunk to 28x28 pixels in [0, 1]."""
    ink = Image.fromarray(canvas[..., 3]).resize((28, 28), Image.LANCZOS)
    return (np.asarray(ink, np.float32) / PIXEL_MAX)[None, None]


def accuracy(model: OnnxViT, inputs: list[np.ndarray | None], labels: np.ndarray) -> float:
    """Share of inputs read as their label; a drawing preprocessing calls blank counts as wrong."""
    correct = 0
    for x, label in zip(inputs, labels, strict=True):
        if x is not None:
            probabilities, _ = model.predict(x)
            correct += int(probabilities[0].argmax() == label)
    return correct / len(labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--n", type=int, default=2000, help="MNIST test digits to redraw")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    mnist = load_mnist(args.data_dir)
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(len(mnist.test_labels), args.n, replace=False)
    digits, labels = mnist.test_images[picked], mnist.test_labels[picked]
    started = time.perf_counter()
    canvases = [redraw_on_canvas(digit, rng) for digit in digits]
    as_mnist = [(d.astype(np.float32) / PIXEL_MAX)[None, None] for d in digits]
    preprocessed = [preprocess_image(canvas) for canvas in canvases]
    resized = [plain_resize(canvas) for canvas in canvases]
    print(
        f"{args.n} MNIST test digits (seed {args.seed}) redrawn on a {CANVAS_SIZE}x{CANVAS_SIZE} "
        f"canvas in {time.perf_counter() - started:.1f} s; accuracy:"
    )
    print(f"{'model':<12} {'MNIST as is':>12} {'canvas, app':>12} {'canvas, resize':>15}")
    for name, info in read_manifest(args.models_dir).models.items():
        model = OnnxViT(info.path)
        print(
            f"{name:<12} {accuracy(model, as_mnist, labels):>12.2%} "
            f"{accuracy(model, preprocessed, labels):>12.2%} "
            f"{accuracy(model, resized, labels):>15.2%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
