"""Inference latency: PyTorch eager vs ONNX Runtime (plain, transformer-fused, INT8), one run.

For each model (the shipped ones in models/manifest.json, or any --onnx/--checkpoint pair) it
prints batch-1 p50/p90 latency at 1 thread and at all threads, batch-256 throughput, the ONNX
Runtime / PyTorch speed-ups, and the app's full path for a drawing, two ways taking turns: as
before the explanations (preprocess + predict + attention overlays) and as now (preprocess +
prediction and occlusion in one batch + every map the app draws), with their ratio:

    python benchmarks/inference.py
    python benchmarks/inference.py --app-path-only     # only the app path, every shipped model
    python benchmarks/inference.py --onnx runs/grid/onnx/vit-e64-h4-l2-m2.onnx \
        --checkpoint runs/grid/checkpoints/vit-e64-h4-l2-m2.pt
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from baseline import BASELINE, baseline_worktree

from custom_modules.contract import INPUT_NAME
from custom_modules.export.latency import random_pixels, time_calls, time_interleaved, torch_threads
from custom_modules.export.onnx_export import ExportedViT
from custom_modules.export.variants import fuse_transformer_ops, max_difference, quantize_int8
from custom_modules.serving.errors import ModelFileError
from custom_modules.serving.explain import explain, inked_patches, occlusion_by_default
from custom_modules.serving.manifest import read_manifest
from custom_modules.serving.model import OnnxViT, onnx_session
from custom_modules.serving.overlay import (
    as_uint8,
    attention_overlay,
    signed_overlay,
    upscale_nearest,
)
from custom_modules.serving.preprocess import preprocess_image
from custom_modules.training.checkpoints import load_checkpoint

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", type=Path, help="an exported model (default: models/)")
    parser.add_argument("--checkpoint", type=Path, help="its PyTorch checkpoint (.pt)")
    parser.add_argument("--calls", type=int, default=1000, help="timed batch-1 calls per row")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--rounds", type=int, default=10, help="the runtimes take turns, calls/rounds at a time"
    )
    parser.add_argument("--throughput-batch", type=int, default=256)
    parser.add_argument(
        "--app-path-only", action="store_true", help="time only the app path, for every model"
    )
    return parser.parse_args()


def model_pairs(args: argparse.Namespace) -> list[tuple[str, Path, Path, Path | None]]:
    """(name, onnx, checkpoint, shipped INT8 variant or None) for each model to measure."""
    if args.onnx or args.checkpoint:
        if not (args.onnx and args.checkpoint):
            raise SystemExit("error: give both --onnx and --checkpoint")
        return [(args.onnx.stem, args.onnx, args.checkpoint, None)]
    try:
        models = read_manifest(MODELS_DIR).models
    except ModelFileError as err:
        raise SystemExit(f"error: {err}; or pass --onnx and --checkpoint") from None
    int8_files = {info.int8_of: info.path for info in models.values() if info.int8_of}
    return [
        (name, info.path, info.checkpoint, int8_files.get(name))
        for name, info in models.items()
        if info.int8_of is None and info.checkpoint is not None  # INT8: a row of its model's
    ]


def stats(times: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 90) * 1e6)


Runner = tuple[Callable[[], object], Callable[[], object]]  # (batch 1, throughput batch)


def runners(
    checkpoint: Path, onnx_path: Path, variants: dict[str, Path], threads: int, one, many
) -> dict[str, Runner]:
    """Every runtime to compare, each computing the same outputs on `threads` threads."""
    graph = ExportedViT(load_checkpoint(checkpoint)).eval()  # the same outputs as the ONNX file
    result = {
        "PyTorch eager": (
            lambda: graph(torch.from_numpy(one)),
            lambda: graph(torch.from_numpy(many)),
        )
    }

    def onnx(path: Path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> Runner:
        session = onnx_session(path, threads, level)
        return (
            lambda: session.run(None, {INPUT_NAME: one}),
            lambda: session.run(None, {INPUT_NAME: many}),
        )

    for label, level in LEVELS.items():
        result[f"ONNX Runtime, {label} optimisations"] = onnx(onnx_path, level)
    for label, path in variants.items():
        result[label] = onnx(path)
    return result


def measure_interleaved(
    runs: dict[str, Runner], calls: int, warmup: int, rounds: int, batch_size: int
) -> dict[str, dict[str, float]]:
    """Time the runtimes in turn, `rounds` times, so that drift of the machine hits all alike."""
    batch_1 = {label: run for label, (run, _) in runs.items()}
    single = time_interleaved(batch_1, calls, rounds, warmup)
    return {
        label: summarize(single[label], time_calls(batch, 10, 2), batch_size)
        for label, (_, batch) in runs.items()
    }


def summarize(single: np.ndarray, batch: np.ndarray, batch_size: int) -> dict[str, float]:
    p50, p90 = stats(single)
    return {"p50": p50, "p90": p90, "images_per_s": batch_size / float(np.median(batch))}


def sample_drawing() -> np.ndarray:
    """A 280x280 RGBA canvas with a two-stroke '4', as the app receives it."""
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    canvas[40:160, 90:110] = 255  # left stroke
    canvas[150:170, 90:200] = 255  # bar
    canvas[40:250, 170:190] = 255  # right stroke
    return canvas


# the sizes app.py and explain_view.py draw at (px)
INPUT_SIZE, MAP_SIZE, HEAD_SIZE, DIGIT_MAP_SIZE = 224, 168, 112, 84


def app_path_now(model: OnnxViT, drawing: np.ndarray, occlude: bool) -> None:
    """The app now: the prediction, every map it draws and, when `occlude`, the occlusions in
    one batch with their maps."""
    x = preprocess_image(drawing)
    prediction = model.predict_with_rollout(x)
    pixels = as_uint8(x)
    upscale_nearest(pixels, INPUT_SIZE // 28)
    attention_overlay(pixels, prediction.rollout[0], MAP_SIZE)
    if occlude:
        explanation = explain(model, x, prediction)
        first, second = explanation.ranked[:2]
        signed_overlay(pixels, explanation.occlusion(first), MAP_SIZE)
        signed_overlay(pixels, explanation.contrast(first, second), MAP_SIZE)
        for digit in range(10):
            signed_overlay(pixels, explanation.occlusion(digit), DIGIT_MAP_SIZE)
    for attention in prediction.cls_attentions:
        for head_map in attention[0]:
            attention_overlay(pixels, head_map, HEAD_SIZE)


# The app path at BASELINE, run by that commit's own code and model files in a second
# interpreter (its package has the same name as this one): preprocess, predict with the
# rollout, the input blown up, the rollout and every head's map as overlays.
BASELINE_PATH = """
import json, sys, time
import numpy as np
sys.path.insert(0, ".")
from custom_modules.inference import (
    OnnxViT, attention_overlay, preprocess_image, to_pixels, upscale_nearest)

model, drawing = OnnxViT(sys.argv[1]), np.load(sys.argv[2])

def app_path():
    x = preprocess_image(drawing)
    prediction = model.predict_with_rollout(x)
    pixels = to_pixels(x)
    upscale_nearest(pixels, 224 // 28)
    attention_overlay(pixels, prediction.rollout[0], 168)
    for attention in prediction.cls_attentions:
        for head_map in attention[0]:
            attention_overlay(pixels, head_map, 112)

for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        start = time.perf_counter()
        app_path()
        times.append(time.perf_counter() - start)
    print(json.dumps(times), flush=True)
"""


class BaselineAppPath:
    """BASELINE's app path for one of its model files, timed in its own interpreter."""

    def __init__(self, tree: Path, model_file: str, drawing_file: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", BASELINE_PATH, str(tree / "models" / model_file), drawing_file],
            cwd=tree,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def time_calls(self, n_calls: int) -> np.ndarray:
        self.process.stdin.write(f"{n_calls}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {BASELINE} app path stopped (exit {self.process.wait()})")
        return np.array(json.loads(line))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def measure_app_path(
    path: Path, baseline: BaselineAppPath, drawing: np.ndarray, args
) -> dict[str, float]:
    """p50 (µs) of the app path at BASELINE and now, with and without the occlusions, the three
    taking turns `args.rounds` times."""
    model = OnnxViT(path)
    runs = {
        "before": baseline.time_calls,
        "occlusion": lambda n: time_calls(lambda: app_path_now(model, drawing, True), n, 0),
        "no occlusion": lambda n: time_calls(lambda: app_path_now(model, drawing, False), n, 0),
    }
    for run in runs.values():
        run(args.warmup)  # warm-up, not kept
    times: dict[str, list[np.ndarray]] = {label: [] for label in runs}
    per_round = max(1, args.calls // args.rounds)
    for round_index in range(args.rounds):
        for label in np.roll(list(runs), round_index):
            times[label].append(runs[label](per_round))
    return {label: stats(np.concatenate(chunks))[0] for label, chunks in times.items()}


def print_app_paths(models: list[tuple[str, Path, bool]], args) -> None:
    """The app path now against BASELINE's, for each (name, file, occluded unasked) model that
    BASELINE also shipped."""
    drawing = sample_drawing()
    patches = len(inked_patches(preprocess_image(drawing)))
    with baseline_worktree() as tree, tempfile.TemporaryDirectory() as tmp:
        drawing_file = Path(tmp) / "drawing.npy"
        np.save(drawing_file, drawing)
        old_files = read_manifest(tree / "models").models
        for name, path, occluded_unasked in models:
            if name not in old_files:
                print(f"{name}: no app path to compare with ({BASELINE} shipped no {name})")
                continue
            baseline = BaselineAppPath(tree, old_files[name].path.name, drawing_file)
            try:
                p50 = measure_app_path(path, baseline, drawing, args)
            finally:
                baseline.close()
            served = "occlusion" if occluded_unasked else "no occlusion"
            print(
                f"{name}: app path p50 at {BASELINE} {p50['before'] / 1000:.2f} ms (preprocess + "
                f"predict + attention overlays, its own code); now, as served "
                f"({'occlusion on' if occluded_unasked else 'occlusion off until asked'}) "
                f"{p50[served] / 1000:.2f} ms: {p50[served] / p50['before']:.2f}x; with "
                f"{patches} occluded inputs in one batch and their maps "
                f"{p50['occlusion'] / 1000:.2f} ms: {p50['occlusion'] / p50['before']:.2f}x"
            )


def main() -> int:
    args = parse_args()
    all_threads = os.cpu_count() or 1
    if args.app_path_only:
        print(f"onnxruntime {ort.__version__}; {args.calls} calls each, in {args.rounds} turns")
        models = read_manifest(MODELS_DIR).models
        print_app_paths(
            [(n, info.path, occlusion_by_default(info.params)) for n, info in models.items()],
            args,
        )
        return 0
    one, many = random_pixels(1), random_pixels(args.throughput_batch, seed=1)
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"{all_threads} CPU threads; batch-1 latency over {args.calls} calls after "
        f"{args.warmup} warm-up calls, the runtimes taking turns in {args.rounds} rounds; "
        f"throughput at batch {args.throughput_batch}"
    )
    header = (
        f"{'runtime':<40} {'threads':>7} {'p50 µs':>8} {'p90 µs':>8} {'img/s':>8} {'speed-up':>8}"
    )
    for name, onnx_path, checkpoint, shipped_int8 in model_pairs(args):
        config = load_checkpoint(checkpoint).config
        with tempfile.TemporaryDirectory() as tmp:
            fused = fuse_transformer_ops(
                onnx_path, Path(tmp) / "fused.onnx", config.num_heads, config.emb_dim
            )
            # the shipped INT8 file, or one made here the same way (quantize_int8) for a pair
            int8 = shipped_int8 or quantize_int8(onnx_path, Path(tmp) / "int8.onnx")
            fused_diff = max_difference(onnx_path, fused, one)
            int8_diff = max_difference(onnx_path, int8, one)
            print(
                f"\n{name}: {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB); "
                f"max |output diff| fused {fused_diff:.1e}, INT8 {int8_diff:.1e}"
            )
            print(header)
            print("-" * len(header))
            variants = {
                "ONNX Runtime + transformer fusions": fused,
                "ONNX Runtime INT8 (dynamic quantisation)": int8,
            }
            for threads in sorted({1, all_threads}):
                runs = runners(checkpoint, onnx_path, variants, threads, one, many)
                with torch_threads(threads), torch.inference_mode():
                    rows = measure_interleaved(
                        runs, args.calls, args.warmup, args.rounds, len(many)
                    )
                base = rows["PyTorch eager"]
                for runtime, r in rows.items():
                    print(
                        f"{runtime:<40} {threads:>7} {r['p50']:>8.0f} {r['p90']:>8.0f} "
                        f"{r['images_per_s']:>8.0f} {base['p50'] / r['p50']:>7.2f}x"
                    )
        print_app_paths([(name, onnx_path, True)], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
