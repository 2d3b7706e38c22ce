"""Turn a training state of the robust recipe's prototype script into `RobustState`.

The fine-tuning that made the shipped robust models started (2026-11-23) from a prototype of
`training/robust.py`: the same recipe, seeds and order of random draws, written before the
package's layout settled. Its per-epoch state holds the same things under other keys; this
writes them where `grid_search_mnist.py --robust` looks, so that the command goes on from the
prototype's last epoch (or, with --stop-after at that epoch, ships it) instead of starting over.

    python scripts/adopt_prototype_state.py PROTOTYPE_STATE.pt \
        runs/robust/train_state/robust-fast.pt \
        --checkpoint models/vit-fast.pt --epochs 8 --lr 5e-4 --ema-decay 0.999
"""

import argparse
from dataclasses import asdict, replace
from pathlib import Path

import torch

from custom_modules.training.checkpoints import load_checkpoint
from custom_modules.training.robust import RobustConfig, RobustState

RENAMED = {
    "val_clean_acc": "val_clean_accuracy",
    "val_styled_acc": "val_styled_accuracy",
    "nd_declined_at_2pct": "val_non_digits_declined",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prototype_state", type=Path, help="the prototype's state.pt")
    parser.add_argument("target", type=Path, help="where --robust keeps this model's state")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the model it started from")
    parser.add_argument("--epochs", type=int, required=True, help="the schedule's length")
    parser.add_argument("--lr", type=float, required=True, help="its peak learning rate")
    parser.add_argument("--ema-decay", type=float, required=True, help="its EMA decay")
    parser.add_argument("--n-train", type=int, default=55000, help="training images")
    args = parser.parse_args()

    old = torch.load(args.prototype_state, map_location="cpu", weights_only=False)
    config = RobustConfig(epochs=args.epochs, lr=args.lr, ema_decay=args.ema_decay)
    start = load_checkpoint(args.checkpoint).config
    model_config = replace(start, dropout=0.0, attn_dropout=0.0).to_dict()
    history = [
        {RENAMED.get(k, k): v for k, v in record.items() if k != "threshold_2pct"}
        for record in old["history"]
    ]
    state = RobustState(
        setup={"recipe": asdict(config), "model": model_config, "n_train": args.n_train},
        model=old["model"],
        ema=old["ema"],
        optimizer=old["optimizer"],
        scheduler=old["scheduler"],
        generator=old["generator"],
        history=history,
    )
    args.target.parent.mkdir(parents=True, exist_ok=True)
    state.save(args.target)
    print(f"{args.target}: {len(history)} epochs adopted from {args.prototype_state}")


if __name__ == "__main__":
    main()
