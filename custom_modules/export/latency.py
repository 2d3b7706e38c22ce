"""Latency and throughput of PyTorch eager vs ONNX Runtime on the CPU, measured the same way."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from custom_modules.contract import CHANNELS, IMAGE_SIZE, INPUT_NAME
from custom_modules.export.onnx_export import ExportedViT
from custom_modules.serving.model import onnx_session
from custom_modules.vision_transformer import VisionTransformer


def random_pixels(batch: int, seed: int = 0) -> np.ndarray:
    """A seeded batch of random model inputs `(batch, 1, 28, 28)` in [0, 1], for timing."""
    shape = (batch, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to `threads` inside the block, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    graph = ExportedViT(model).to("cpu").eval()
    session = onnx_session(onnx_path, threads)
    one, many = random_pixels(1), random_pixels(throughput_batch, seed=1)
    one_t, many_t = torch.from_numpy(one), torch.from_numpy(many)

    with torch_threads(threads), torch.inference_mode():
        torch_single = time_calls(lambda: graph(one_t), n_calls, n_warmup)
        torch_batch = time_calls(lambda: graph(many_t), 10, 2)
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


def time_interleaved(
    runs: dict[str, Callable[[], object]], n_calls: int, rounds: int = 10, n_warmup: int = 100
) -> dict[str, np.ndarray]:
    """Seconds per call of each runner, timed in turns so that drift of the machine hits all alike.

    Each of `rounds` rounds times `n_calls // rounds` calls of every runner, the order rotating.
    """
    for run in runs.values():
        time_calls(run, 0, n_warmup)  # warm-up only
    labels = list(runs)
    times: dict[str, list[np.ndarray]] = {label: [] for label in labels}
    for round_index in range(rounds):
        for label in np.roll(labels, round_index):
            times[label].append(time_calls(runs[label], max(1, n_calls // rounds), 0))
    return {label: np.concatenate(chunks) for label, chunks in times.items()}


def onnx_latencies_interleaved(
    paths: list[Path], threads: int = 1, n_calls: int = 1000, rounds: int = 10
) -> list[dict[str, float]]:
    """Batch-1 p50/p90 (µs) of several ONNX files, timed in turns (`time_interleaved`)."""
    image = random_pixels(1)
    runs = {}
    for i, path in enumerate(paths):
        session = onnx_session(path, threads)
        runs[str(i)] = lambda session=session: session.run(None, {INPUT_NAME: image})
    times = time_interleaved(runs, n_calls, rounds)
    return [
        {
            "onnx_p50_us": float(np.percentile(times[str(i)], 50) * 1e6),
            "onnx_p90_us": float(np.percentile(times[str(i)], 90) * 1e6),
        }
        for i in range(len(paths))
    ]
