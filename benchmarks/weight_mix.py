"""Weight-space mixes of two checkpoints of one model (WiSE-FT), each calibrated and read on
validation: which share of the fine-tuned weights reads best, and what it gives up.

    git worktree add /tmp/start c7212eb    # the start of day's checkpoints
    python benchmarks/weight_mix.py --start /tmp/start/models/vit-large.pt \\
        --tuned models/vit-large.pt --data-dir ../shared/data/mnist

For each share alpha of the tuned weights, the mix (dropout off) is calibrated as
`--calibrate-shipped` calibrates a shipped model (`calibrate_logits`: temperature on the MNIST
kind of the validation inputs, decline rule at 1 % of the digits read right), then read on the same
validation inputs (top digit right, per kind), the held-out validation non-digits (share
declined) and the robust recipe's check (clean, restyled, continental 1s and 7s). Validation
data only: nothing here reads the test set.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from custom_modules.export.calibrate import calibrate_logits
from custom_modules.grid.robust import calibration_inputs
from custom_modules.training.checkpoints import load_checkpoint
from custom_modules.training.data import split_mnist
from custom_modules.training.metrics import predict_logits
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, MnistDataError, load_mnist
from custom_modules.training.robust import RobustCheck, interpolated, without_dropout
from custom_modules.training.widen import overlapped_patches, widened_mlp

KINDS = ("mnist", "drawn", "other hand", "photo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", type=Path, required=True, help="checkpoint at alpha 0")
    parser.add_argument("--tuned", type=Path, required=True, help="checkpoint at alpha 1")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="MNIST's files")
    parser.add_argument("--made-from", type=int, default=2000, help="digits drawn, etc., per kind")
    args = parser.parse_args()

    try:
        data = split_mnist(load_mnist(args.data_dir))  # the grid's split: 5000 held out, seed 0
    except MnistDataError as err:
        print(err, file=sys.stderr)
        return 2
    started = time.perf_counter()
    digits, non_digits = calibration_inputs(data, args.made_from)
    check = RobustCheck.make(data, torch.from_numpy(non_digits))
    print(f"validation inputs made in {time.perf_counter() - started:.0f} s")
    start, tuned = load_checkpoint(args.start), load_checkpoint(args.tuned)
    if start.config.mlp_ratio < tuned.config.mlp_ratio:  # tuned with --widen-mlp
        start = widened_mlp(start, tuned.config.mlp_ratio)  # reads as before, now mixable
    if start.config.patch_overlap < tuned.config.patch_overlap:  # tuned with --patch-overlap
        start = overlapped_patches(start, tuned.config.patch_overlap)
    start, tuned = without_dropout(start), without_dropout(tuned)

    print("| alpha | " + " | ".join(KINDS) + " | mean | non-digits declined | T | declines "
          "below | check: clean / restyled / continental |")  # fmt: skip
    print("|---" * (len(KINDS) + 6) + "|")
    for alpha in args.alphas:
        mixed = interpolated(start, tuned, alpha)
        logits = predict_logits(mixed, torch.from_numpy(digits.pixels)).numpy()  # read once
        non_digit_logits = predict_logits(mixed, torch.from_numpy(non_digits)).numpy()
        fit = calibrate_logits(logits, digits, non_digit_logits)
        right = logits.argmax(1) == digits.labels
        accuracies = [right[digits.kinds == kind].mean() for kind in KINDS]
        figures = check.evaluate(mixed)
        cells = [f"{a:.2%}" for a in accuracies] + [
            f"{np.mean(accuracies):.2%}",
            f"{fit.val_non_digits_declined:.1%}",
            f"{fit.temperature:.3f}",
            f"{fit.decline_below:.3f}",
            f"{figures['val_clean_accuracy']:.2%} / {figures['val_styled_accuracy']:.2%} / "
            f"{figures['val_continental_accuracy']:.2%}",
        ]
        print(f"| {alpha:g} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
