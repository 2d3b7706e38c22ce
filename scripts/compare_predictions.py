"""Do two models folders predict the same? Every model of the first folder's manifest against
the model of the same name in the second, on MNIST test images and on drawn digits.

Written to check a re-export (e.g. the MNIST normalisation moved into the graph): same argmax on
every image and probabilities within --atol, on the 10k test images fed as the graph expects
them and on digits drawn on the app's canvas, read through `preprocess_image` as the app does.

    python scripts/compare_predictions.py OLD_MODELS_DIR models --old-takes-normalised \
        --data-dir ../shared/data/mnist

`--old-takes-normalised`: the first folder's graphs take normalised inputs, (pixels - 0.1307) /
0.3081, as exports before the normalisation moved into the graph did. Exit code 1 on a difference.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from custom_modules.contract import MNIST_MEAN, MNIST_STD, PIXEL_MAX
from custom_modules.serving.manifest import read_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.serving.preprocess import preprocess_image
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, load_mnist


@dataclass(frozen=True)
class Comparison:
    name: str
    source: str  # "MNIST test" or "drawn"
    images: int
    argmax_differences: int
    max_probability_difference: float
    max_attention_difference: float

    def ok(self, atol: float) -> bool:
        return self.argmax_differences == 0 and self.max_probability_difference <= atol

    def line(self) -> str:
        return (
            f"{self.name:<11} {self.source:<11} {self.images:>6} images: "
            f"{self.argmax_differences} argmax differences, max |Δp| "
            f"{self.max_probability_difference:.2e}, max |Δ attention| "
            f"{self.max_attention_difference:.2e}"
        )


def drawn_digits(images: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Each 28x28 digit drawn on a 280x280 RGBA canvas as the app gets it (white ink in alpha),
    at a seeded size and place."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    canvases = []
    for digit in images:
        side = int(rng.integers(120, 260))
        ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR))
        top, left = (int(rng.integers(0, 280 - side + 1)) for _ in range(2))
        canvas = np.zeros((280, 280, 4), dtype=np.uint8)
        canvas[..., :3] = 255
        canvas[top : top + side, left : left + side, 3] = ink
        canvases.append(canvas)
    return canvases


def compare(
    old: OnnxViT, new: OnnxViT, pixels: np.ndarray, old_takes_normalised: bool, batch: int = 500
) -> tuple[int, float, float]:
    """(argmax differences, max |Δ probability|, max |Δ attention|) over pixels (N, 1, 28, 28)."""
    argmax, probability, attention = 0, 0.0, 0.0
    for start in range(0, len(pixels), batch):
        x = pixels[start : start + batch]
        old_x = ((x - MNIST_MEAN) / MNIST_STD).astype(np.float32) if old_takes_normalised else x
        a, b = old.predict_with_rollout(old_x), new.predict_with_rollout(x)
        argmax += int((a.probabilities.argmax(1) != b.probabilities.argmax(1)).sum())
        probability = max(probability, float(np.abs(a.probabilities - b.probabilities).max()))
        maps = [*zip(a.cls_attentions, b.cls_attentions, strict=True), (a.rollout, b.rollout)]
        attention = max(attention, *(float(np.abs(p - q).max()) for p, q in maps))
    return argmax, probability, attention


def compare_folders(
    old_dir: Path,
    new_dir: Path,
    test_images: np.ndarray,
    drawings: list[np.ndarray],
    old_takes_normalised: bool,
) -> list[Comparison]:
    """Every model of `old_dir`'s manifest against its namesake in `new_dir`."""
    new_models = read_manifest(new_dir).models
    test_pixels = (test_images.astype(np.float32) / PIXEL_MAX)[:, None]
    inputs = [preprocess_image(drawing) for drawing in drawings]
    drawn_pixels = np.concatenate([x for x in inputs if x is not None])
    comparisons = []
    for name, info in read_manifest(old_dir).models.items():
        old, new = OnnxViT(info.path), OnnxViT(new_models[name].path)
        for source, pixels in (("MNIST test", test_pixels), ("drawn", drawn_pixels)):
            differences = compare(old, new, pixels, old_takes_normalised)
            comparisons.append(Comparison(name, source, len(pixels), *differences))
    return comparisons


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old_dir", type=Path, help="the models folder before the change")
    parser.add_argument("new_dir", type=Path, help="the models folder after it")
    parser.add_argument(
        "--old-takes-normalised",
        action="store_true",
        help="the old graphs take (pixels - mean) / std, not pixels in [0, 1]",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the MNIST files (test set used)"
    )
    parser.add_argument("--drawn", type=int, default=1000, help="test digits drawn on a canvas")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest |Δ probability| allowed")
    args = parser.parse_args()

    mnist = load_mnist(args.data_dir, download=False)
    drawings = drawn_digits(mnist.test_images[: args.drawn])
    comparisons = compare_folders(
        args.old_dir, args.new_dir, mnist.test_images, drawings, args.old_takes_normalised
    )
    for comparison in comparisons:
        print(comparison.line())
    ok = all(c.ok(args.atol) for c in comparisons)
    print("same predictions" if ok else f"DIFFERENT predictions (atol {args.atol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
