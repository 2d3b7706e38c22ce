"""Latency and throughput of PyTorch eager vs ONNX Runtime on the CPU, measured the same way."""

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from custom_modules.inference import INPUT_NAME
from custom_modules.onnx_export import ExportedViT
from custom_modules.vision_transformer import VisionTransformer


def time_calls(fn: Callable[[], object], n_calls: int, n_warmup: int) -> np.ndarray:
    """Seconds taken by each of `n_calls` calls of `fn`, after `n_warmup` untimed ones."""
    for _ in range(n_warmup):
        fn()
    times = np.empty(n_calls)
    for i in range(n_calls):
        start = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - start
    return times


def onnx_session(
    path: str | Path,
    threads: int,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
) -> ort.InferenceSession:
    """A CPU session with all graph optimisations (by default) and a fixed thread count."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def benchmark_latency(
    model: VisionTransformer,
    onnx_path: str | Path,
    threads: int = 1,
    n_calls: int = 500,
    n_warmup: int = 50,
    throughput_batch: int = 256,
) -> dict[str, float]:
    """Batch-1 p50/p90 latency (µs) and batch-`throughput_batch` images/s, PyTorch vs ONNX.

    Both sides compute the same outputs (logits and all attention maps) on `threads` threads.
    """
    config = model.config
    graph = ExportedViT(model).to("cpu").eval()
    session = onnx_session(onnx_path, threads)
    shape = (config.in_channels, config.image_size, config.image_size)
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *shape), dtype=np.float32)
    many = rng.standard_normal((throughput_batch, *shape), dtype=np.float32)
    one_t, many_t = torch.from_numpy(one), torch.from_numpy(many)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            torch_single = time_calls(lambda: graph(one_t), n_calls, n_warmup)
            torch_batch = time_calls(lambda: graph(many_t), 10, 2)
    finally:
        torch.set_num_threads(previous_threads)
    onnx_single = time_calls(lambda: session.run(None, {INPUT_NAME: one}), n_calls, n_warmup)
    onnx_batch = time_calls(lambda: session.run(None, {INPUT_NAME: many}), 10, 2)

    results = {"bench_threads": threads}
    for name, single, batch in (
        ("torch", torch_single, torch_batch),
        ("onnx", onnx_single, onnx_batch),
    ):
        results[f"{name}_p50_us"] = float(np.percentile(single, 50) * 1e6)
        results[f"{name}_p90_us"] = float(np.percentile(single, 90) * 1e6)
        results[f"{name}_images_per_s"] = float(throughput_batch / np.median(batch))
    return results
