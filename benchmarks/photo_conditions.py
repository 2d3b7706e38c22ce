"""How the shipped models read photos of paper taken in harder conditions than the plain ones.

The photos of `benchmarks/real_inputs.py` (MNIST test digits drawn as strokes, then
photographed: tilt, uneven light, blur, noise, JPEG), each also made again with one condition
more, and read through the app's own path (`read_upload`, `preprocess_image`, `OnnxViT`):

- ruled: blue lines across the page, as on a school pad;
- squared: a grid of faint lines, as on squared paper;
- pencil: the ink only 35-55 % as dark against the paper;
- small in a big photo: the sheet a third to a half of a 1600 px photo, the rest plain paper;
- hard shadow: a phone's or a hand's shadow with a sharp edge, 30-50 % darker, at any angle.

Per model: the share whose top digit is right, and the share read (right and not declined); and
how many the preprocessing found blank. On the test digits (the default) it only reports;
`--split validation` makes the same photos of the held-out training digits, where the
preprocessing's choices are made (docs/serving.md).

    python benchmarks/photo_conditions.py --data-dir ../shared/data/mnist
    python benchmarks/photo_conditions.py --data-dir ../shared/data/mnist --split validation
"""

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from real_inputs import as_set

from custom_modules.serving.manifest import read_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.serving.upload import read_upload
from custom_modules.synthetic.handwriting import draw_as_strokes, photo_of_paper
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, load_mnist, split_indices

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
BLUE_LINE = np.array([120, 140, 200], np.float32)
GRID_LINE = np.array([150, 170, 200], np.float32)

Condition = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # RGB float (H, W, 3)


def ruled(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    step = int(rng.uniform(28, 45))
    for y in range(int(rng.integers(0, step)), photo.shape[0], step):
        photo[y : y + 2] = photo[y : y + 2] * 0.55 + BLUE_LINE * 0.45
    return photo


def squared(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    step = int(rng.uniform(20, 35))
    for at in range(0, photo.shape[0], step):
        photo[at : at + 1] = photo[at : at + 1] * 0.6 + GRID_LINE * 0.4
        photo[:, at : at + 1] = photo[:, at : at + 1] * 0.6 + GRID_LINE * 0.4
    return photo


def pencil(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    paper = np.median(photo.reshape(-1, 3), axis=0)
    return paper - (paper - photo) * rng.uniform(0.35, 0.55)


def small_in_big(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = photo.shape[0]
    big = int(side * rng.uniform(2.0, 3.0))
    paper = np.median(photo.reshape(-1, 3), axis=0)
    page = np.broadcast_to(paper, (big, big, 3)).copy()
    top, left = rng.integers(0, big - side, size=2)
    page[top : top + side, left : left + side] = photo
    resized = Image.fromarray(page.astype(np.uint8)).resize((1600, 1600), Image.Resampling.BILINEAR)
    return np.asarray(resized, np.float32)


def hard_shadow(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = photo.shape[:2]
    ys, xs = np.indices((height, width), dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    across = (xs - width / 2) * np.cos(angle) + (ys - height / 2) * np.sin(angle)
    edge = rng.uniform(-0.3, 0.3) * width
    shade = 1 / (1 + np.exp(-(across - edge) / rng.uniform(3, 20)))  # (H, W) in [0, 1]
    return photo * (1 - rng.uniform(0.3, 0.5) * shade[..., None])


CONDITIONS: dict[str, Condition | None] = {
    "plain": None,
    "ruled": ruled,
    "squared": squared,
    "pencil": pencil,
    "small in a big photo": small_in_big,
    "hard shadow": hard_shadow,
}


def with_condition(jpeg: bytes, condition: Condition | None, rng: np.random.Generator) -> bytes:
    """The photo again with `condition` applied, saved as a JPEG as a phone would."""
    if condition is None:
        return jpeg
    photo = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)
    out = io.BytesIO()
    image = Image.fromarray(np.clip(condition(photo, rng), 0, 255).astype(np.uint8))
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--n", type=int, default=500, help="photos per condition")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    args = parser.parse_args()

    mnist = load_mnist(args.data_dir)
    if args.split == "test":
        digits, digit_labels = mnist.test_images, mnist.test_labels
    else:
        held_out, _ = split_indices(len(mnist.train_labels))
        digits, digit_labels = mnist.train_images[held_out], mnist.train_labels[held_out]
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(len(digit_labels), args.n, replace=False)
    labels = digit_labels[picked]
    photos = [photo_of_paper(draw_as_strokes(d, rng), rng) for d in digits[picked]]
    models = {
        name: OnnxViT.from_info(info)
        for name, info in read_manifest(args.models_dir).models.items()
    }
    print(
        f"{args.n} photos of {args.split} digits per condition; per model: "
        "top digit right / read (right, not declined)"
    )
    print("| condition | " + " | ".join(models) + " | blank |")
    print("|---" * (len(models) + 2) + "|")
    for name, condition in CONDITIONS.items():
        condition_rng = np.random.default_rng(args.seed + 1)  # the same draws for every condition
        uploads = [read_upload(with_condition(p, condition, condition_rng)) for p in photos]
        inputs = as_set([upload.pixels for upload in uploads], labels)  # the app's own path
        pixels, usable = inputs.pixels, inputs.usable
        cells = []
        for model in models.values():
            reading = model.classify(pixels)
            right = (reading.probabilities.argmax(1) == labels) & usable
            cells.append(f"{right.mean():.1%} / {(right & ~reading.declined).mean():.1%}")
        print(f"| {name} | " + " | ".join(cells) + f" | {int((~usable).sum())} |", flush=True)


if __name__ == "__main__":
    main()
