"""What each lever of the robust recipe does, on validation: one lever off at a time.

    python benchmarks/robust_levers.py --data-dir ../shared/data/mnist

Every variant fine-tunes the same start, Fast as it was before the robust recipe (BASELINE's
checkpoint), for the same short schedule, and is judged on the same validation check as the
recipe's epochs: clean and restyled validation digits, held-out non-digits declined when 2 % of
read digits would be. Each variant's state is saved after every epoch in --output-dir, so a
stopped run goes on; `--only` runs some variants (two processes can split the list).
"""

import argparse
import functools
import io
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from baseline import BASELINE, ROOT

from custom_modules.grid.robust import robust_inputs
from custom_modules.training.checkpoints import load_checkpoint
from custom_modules.training.data import split_mnist
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, MnistDataError, load_mnist
from custom_modules.training.robust import RobustConfig, finetune_robust, without_dropout
from custom_modules.training.style import StyleAugment
from custom_modules.vision_transformer import VisionTransformer

BASE = RobustConfig(epochs=2, lr=5e-4, ema_decay=0.999)
STYLE = StyleAugment()
LEVERS = {
    "all levers": BASE,
    "no serving frame": replace(BASE, style=replace(STYLE, reframe=False)),
    "no pen width": replace(BASE, style=replace(STYLE, pen_p=(0.0, 1.0, 0.0, 0.0))),
    "no elastic": replace(BASE, style=replace(STYLE, elastic_p=0.0)),
    "no blur": replace(BASE, style=replace(STYLE, blur_p=0.0)),
    "no geometry": replace(
        BASE, style=replace(STYLE, max_degrees=0.0, max_shear=0.0, aspect_range=(1.0, 1.0))
    ),
    "no Outlier Exposure": replace(BASE, outlier_weight=0.0),
    "no EMA": replace(BASE, ema_decay=0.0),
}
FIGURES = ("val_clean_accuracy", "val_styled_accuracy", "val_non_digits_declined")


def baseline_fast() -> VisionTransformer:
    """Fast as BASELINE shipped it, read from git, with dropout off as the recipe has it."""
    blob = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASELINE}:models/vit-fast.pt"],
        check=True,
        capture_output=True,
    ).stdout
    return without_dropout(load_checkpoint(io.BytesIO(blob)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="MNIST's files")
    parser.add_argument(
        "--output-dir", type=Path, default=Path("runs/levers"), help="each variant's saved state"
    )
    parser.add_argument("--only", nargs="+", choices=list(LEVERS), help="run these variants")
    parser.add_argument(
        "--non-digits", type=int, default=40000, help="non-digit images made for training"
    )
    args = parser.parse_args()
    try:
        data = split_mnist(load_mnist(args.data_dir), val_size=5000, seed=0)
    except MnistDataError as err:
        sys.exit(f"error: {err}")
    inputs = functools.cache(functools.partial(robust_inputs, data, args.non_digits))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.only or LEVERS:
        print(f"--- {name}", flush=True)
        _, history = finetune_robust(
            baseline_fast(),
            data,
            inputs,
            LEVERS[name],
            args.output_dir / f"{name.replace(' ', '-')}.pt",
            on_epoch=lambda record: print({k: round(v, 4) for k, v in record.items()}, flush=True),
        )
        results[name] = history[-1]

    print(f"\nFast from {BASELINE}, {BASE.epochs} epochs each; validation (n=5000 digits each)")
    print(f"{'variant':<22}{'clean':>9}{'restyled':>10}{'non-digits declined':>21}")
    for name, last in results.items():
        clean, styled, declined = (last[k] for k in FIGURES)
        print(f"{name:<22}{clean:>9.2%}{styled:>10.2%}{declined:>21.1%}")


if __name__ == "__main__":
    main()
