"""`vit-digits-error-analysis`: write models/error_analysis-<name>.npz for each shipped model.

Run after shipping (or after any change to the shipped models), from the repository root:

    vit-digits-error-analysis --data-dir ../shared/data/mnist
    python -m custom_modules.grid.error_analysis --data-dir ../shared/data/mnist --models Fast

Each file holds the model's confusion matrix on the MNIST test set, its wrong test digits with
their occlusion maps, the reliability bins of its calibrated probabilities and the
provisional decline threshold set on the validation split (custom_modules/serving/
error_analysis.py). The app's "Error analysis" tab reads them; it needs no MNIST files.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from custom_modules.serving.error_analysis import artifact_path, build_error_analysis
from custom_modules.serving.manifest import read_manifest
from custom_modules.serving.model import OnnxViT
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, load_mnist, split_indices


def validation_images(mnist, val_size: int, seed: int) -> np.ndarray:
    """The validation split's digits (uint8), the same ones `split_mnist` holds out.

    Raises ValueError for a `val_size` that leaves no training or no validation digits."""
    held_out, _ = split_indices(len(mnist.train_labels), val_size, seed)
    return mnist.train_images[held_out]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vit-digits-error-analysis", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with MNIST's IDX files"
    )
    parser.add_argument(
        "--models-dir", type=Path, default=Path("models"), help="the shipped models' folder"
    )
    parser.add_argument("--models", nargs="*", help="model names (default: every shipped model)")
    parser.add_argument(
        "--val-size", type=int, default=5000, help="validation digits (as the grid's --val-size)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the split's seed (as the grid's)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    infos = read_manifest(args.models_dir).models
    names = args.models or list(infos)
    unknown = sorted(set(names) - set(infos))
    if unknown:
        print(f"error: no model {', '.join(unknown)} in {args.models_dir}", file=sys.stderr)
        return 2
    mnist = load_mnist(args.data_dir)
    try:
        val_images = validation_images(mnist, args.val_size, args.seed)
    except ValueError as err:
        print(f"error: --val-size: {err}", file=sys.stderr)
        return 2
    for name in names:
        started = time.perf_counter()
        model = OnnxViT.from_info(infos[name])  # its calibration, as the app serves it
        analysis = build_error_analysis(
            model, name, mnist.test_images, mnist.test_labels, val_images
        )
        path = analysis.save(artifact_path(args.models_dir, name))
        print(
            f"{name}: test accuracy {analysis.accuracy:.2%}, {len(analysis.wrong_index)} mistakes "
            f"kept, provisional decline threshold {analysis.decline_threshold:.3f}; "
            f"{path} ({path.stat().st_size / 1024:.0f} KB, {time.perf_counter() - started:.0f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
