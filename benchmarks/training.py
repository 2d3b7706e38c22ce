"""Training throughput: the fp32 written-out-attention baseline against the faster paths.

For the smallest and the largest configuration of the grid, each path trains the same
initial weights on the same MNIST batches for the same number of steps, so the ratio of images
per second and the final losses are compared in one run:

    python benchmarks/training.py --data-dir ../shared/data/mnist
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from custom_modules.training.data import split_mnist
from custom_modules.training.loop import TrainingPath, cpu_has_bf16
from custom_modules.training.metrics import evaluate
from custom_modules.training.mnist_data import DEFAULT_DATA_DIR, MnistDataError, load_mnist
from custom_modules.vision_transformer import VisionTransformer, ViTConfig

# the grid's smallest and largest configuration, and the training steps timed for each
CONFIGS = {
    "smallest": (ViTConfig(emb_dim=64, num_heads=2, n_layers=1, mlp_ratio=2), 200),
    "largest": (ViTConfig(emb_dim=256, num_heads=4, n_layers=3, mlp_ratio=4), 40),
}


@dataclass
class Measurement:
    images_per_s: float
    final_loss: float
    held_out_accuracy: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--steps-scale", type=float, default=1.0, help="multiply every configuration's steps"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--held-out", type=int, default=2000, help="images the accuracy afterwards is measured on"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def measure(
    config: ViTConfig,
    path: TrainingPath,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    held_out: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    compile_model: bool = False,
) -> Measurement:
    """Train fresh weights (seeded, so every path starts equal) and time the steps."""
    torch.manual_seed(seed)
    model = VisionTransformer(config, fused_attention=path.fused_attention)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    forward = torch.compile(model) if compile_model else model
    model.train()

    def step(images: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=path.bf16):
            logits = forward(images)  # pixels in [0, 1]: the model normalises them
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    warmup = 3 if not compile_model else 5
    losses = [step(*batch) for batch in batches[:warmup]]
    start = time.perf_counter()
    losses += [step(*batch) for batch in batches[warmup:]]
    seconds = time.perf_counter() - start
    n_images = sum(len(labels) for _, labels in batches[warmup:])
    accuracy = evaluate(model, *held_out)["accuracy"]
    return Measurement(n_images / seconds, sum(losses[-5:]) / 5, accuracy)


def main() -> int:
    args = parse_args()
    try:
        mnist = load_mnist(args.data_dir)
    except MnistDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    max_steps = max(round(steps * args.steps_scale) for _, steps in CONFIGS.values())
    n_train = (max_steps + 5) * args.batch_size
    data = split_mnist(mnist, val_size=args.held_out, seed=args.seed, train_subset=n_train)
    all_batches = [
        (data.train_images[i : i + args.batch_size], data.train_labels[i : i + args.batch_size])
        for i in range(0, n_train, args.batch_size)
    ]
    held_out = (data.val_images, data.val_labels)

    cpu = torch.device("cpu")
    paths = {
        "baseline: fp32, written-out attention": TrainingPath.baseline(),
        "fp32, fused attention": TrainingPath(bf16=False, fused_attention=True),
    }
    if cpu_has_bf16():
        paths["bf16 autocast, fused attention"] = TrainingPath(bf16=True, fused_attention=True)
        paths["bf16 autocast, written-out attention"] = TrainingPath(
            bf16=True, fused_attention=False
        )
    fast = TrainingPath.fast(cpu)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU bf16: {cpu_has_bf16()}; batch {args.batch_size}; "
        f"the grid's default (fast) path: {fast}"
    )
    header = (
        f"{'config':<9} {'path':<42} {'img/s':>7} {'ratio':>6} {'loss':>7} {'Δloss':>7} {'acc':>6}"
    )
    print(header)
    print("-" * len(header))
    for config_name, (config, steps) in CONFIGS.items():
        batches = all_batches[: 3 + round(steps * args.steps_scale)]
        print(f"{config_name}: {len(batches) - 3} timed steps after 3 untimed ones")
        results = {}
        runs = list(paths.items())
        if args.compile:
            runs.append(("torch.compile + the fast path", fast))
        for label, path in runs:
            compile_model = label.startswith("torch.compile")
            results[label] = result = measure(
                config, path, batches, held_out, args.seed, compile_model
            )
            base = results[next(iter(paths))]
            marker = " (fast)" if path == fast and not compile_model else ""
            print(
                f"{config_name:<9} {label + marker:<42} {result.images_per_s:>7.0f} "
                f"{result.images_per_s / base.images_per_s:>5.2f}x {result.final_loss:>7.3f} "
                f"{result.final_loss - base.final_loss:>+7.3f} {result.held_out_accuracy:>6.3f}"
            )
        fast_result = results[next(label for label, path in paths.items() if path == fast)]
        print(
            f"{config_name}: fast path {fast_result.images_per_s / base.images_per_s:.2f}x the "
            f"baseline's images/s; final loss {fast_result.final_loss:.3f} vs "
            f"{base.final_loss:.3f}; held-out accuracy {fast_result.held_out_accuracy:.3f} vs "
            f"{base.held_out_accuracy:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
