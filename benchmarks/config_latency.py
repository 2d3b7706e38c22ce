"""ONNX batch-1 latency of other configurations beside a shipped model, timed in one run.

Each variant is the shipped model's configuration with some fields changed (wider MLPs, more
blocks, a wider embedding, overlapping patch kernels), freshly initialised (the weights do not
change the time), exported as shipping exports it, and timed in turns with the shipped file and
the shipped configuration exported again (the control: about 1.00x). How the latency budget of a
new configuration is checked before training it:

    python benchmarks/config_latency.py --model Large \\
        --variant mlp_ratio=3 --variant mlp_ratio=4 --variant n_layers=3
"""

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from custom_modules.export.latency import onnx_latencies_interleaved
from custom_modules.export.onnx_export import export_onnx
from custom_modules.serving.errors import ModelFileError
from custom_modules.serving.manifest import read_manifest
from custom_modules.vision_transformer import VisionTransformer, ViTConfig

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
FIELDS = ("emb_dim", "num_heads", "n_layers", "mlp_ratio", "patch_overlap")


def parse_variant(text: str) -> dict[str, int]:
    """'mlp_ratio=4,n_layers=3' as {'mlp_ratio': 4, 'n_layers': 3}."""
    variant = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in FIELDS or not value.isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: FIELD=N with FIELD one of {FIELDS}")
        variant[key] = int(value)
    return variant


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--model", default="Large", help="the shipped model to compare with")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per file")
    parser.add_argument("--rounds", type=int, default=20, help="turns the calls are timed in")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    try:
        models = read_manifest(args.models_dir).models
    except ModelFileError as err:
        print(err, file=sys.stderr)
        return 2
    if args.model not in models:
        print(f"no model {args.model!r} in {args.models_dir}: {', '.join(models)}", file=sys.stderr)
        return 2
    shipped = models[args.model]
    base = ViTConfig(**shipped.config)
    configs = {"as shipped, exported again": base}
    for variant in args.variant:
        label = ", ".join(f"{key} {value}" for key, value in variant.items())
        configs[label] = replace(base, **variant)
    with tempfile.TemporaryDirectory() as folder:
        paths, params = [shipped.path], [shipped.params]
        for i, config in enumerate(configs.values()):
            torch.manual_seed(0)
            model = VisionTransformer(config).eval()
            paths.append(export_onnx(model, Path(folder) / f"variant-{i}.onnx"))
            params.append(model.num_parameters())
        timings = onnx_latencies_interleaved(paths, args.threads, args.calls, args.rounds)
    shipped_p50 = timings[0]["onnx_p50_us"]
    print(
        f"{args.model} ({shipped.path.name}) and its variants, batch 1, {args.threads} "
        f"thread(s), {args.calls} calls each in {args.rounds} turns"
    )
    print("| configuration | params | ONNX p50 | p90 | x shipped |\n|---|---|---|---|---|")
    for label, count, timing in zip(
        [f"{args.model} as shipped", *configs], params, timings, strict=True
    ):
        p50 = timing["onnx_p50_us"]
        print(
            f"| {label} | {count:,} | {p50:.0f} µs | {timing['onnx_p90_us']:.0f} µs "
            f"| {p50 / shipped_p50:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
