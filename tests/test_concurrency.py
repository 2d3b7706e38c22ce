"""Many sessions at once: the app shares one OnnxViT (st.cache_resource) between all its browser
tabs, each tab's script run on its own thread. Threads must get bitwise the single-thread results.
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageDraw

from custom_modules.serving.model import OnnxViT
from custom_modules.serving.preprocess import preprocess_image
from custom_modules.serving.upload import UploadError, read_upload
from tests.conftest import encode, seven

THREADS = 8
PREDICTIONS_PER_THREAD = 200
DRAWING_SIZE = 96


def random_drawing(rng: np.random.Generator) -> np.ndarray:
    """1-3 random strokes of random width, white on black, as the canvas gives them (RGBA)."""
    image = Image.new("L", (DRAWING_SIZE, DRAWING_SIZE), 0)
    pen = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        points = [tuple(p) for p in rng.uniform(8, DRAWING_SIZE - 8, (rng.integers(2, 6), 2))]
        pen.line(points, fill=255, width=int(rng.integers(3, 12)), joint="curve")
    grey = np.asarray(image)
    return np.dstack([grey, grey, grey, np.full_like(grey, 255)])


@pytest.fixture(scope="module")
def drawings() -> list[np.ndarray]:
    """PREDICTIONS_PER_THREAD different drawings (seeded)."""
    rng = np.random.default_rng(7)
    return [random_drawing(rng) for _ in range(PREDICTIONS_PER_THREAD)]


def prediction_arrays(model: OnnxViT, drawing: np.ndarray) -> list[np.ndarray]:
    """What the app computes for one drawing: the input, probabilities, attentions, rollout."""
    x = preprocess_image(drawing)
    prediction = model.predict_with_rollout(x)
    return [x, prediction.probabilities, *prediction.cls_attentions, prediction.rollout]


def run_in_threads(work: Callable[[int], list]) -> list[list]:
    """`work(thread_index)` on THREADS threads released at the same moment; their results."""
    start = threading.Barrier(THREADS)

    def started_together(thread_index: int) -> list:
        start.wait()
        return work(thread_index)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(started_together, range(THREADS)))


def test_one_shared_model_gives_every_thread_bitwise_the_single_thread_results(
    tiny_model_path, drawings
):
    model = OnnxViT(tiny_model_path)  # one session for all, as st.cache_resource shares it
    expected = [prediction_arrays(model, drawing) for drawing in drawings]

    def predict_all(thread_index: int) -> list[tuple[int, list[np.ndarray]]]:
        """Every drawing once, each thread starting at another one so the inputs overlap."""
        offset = thread_index * len(drawings) // THREADS
        order = [(offset + step) % len(drawings) for step in range(len(drawings))]
        return [(i, prediction_arrays(model, drawings[i])) for i in order]

    started = time.perf_counter()
    results = run_in_threads(predict_all)
    seconds = time.perf_counter() - started
    mismatches = [
        (thread, i)
        for thread, outputs in enumerate(results)
        for i, arrays in outputs
        if not all(np.array_equal(a, b) for a, b in zip(arrays, expected[i], strict=True))
    ]
    total = sum(len(outputs) for outputs in results)
    print(f"{total} predictions on {THREADS} threads in {seconds:.2f} s, {len(mismatches)} differ")
    assert total == THREADS * PREDICTIONS_PER_THREAD
    assert not mismatches, f"{len(mismatches)} of {total} differ, e.g. {mismatches[:5]}"


def test_bomb_checks_hold_while_other_threads_decode(uploads):
    """read_upload turns Pillow's bomb warning into an error in a warnings.catch_warnings()
    block, which is process-wide: threads entering and leaving it must not let a bomb through
    (MAX_DECODED_PIXELS backs the warning up) nor fail a good file."""
    seven_png = encode(seven(), "PNG")
    expected = np.asarray(seven())
    bomb = uploads["bomb-10000x10000.png"]  # over MAX_IMAGE_PIXELS: Pillow only warns

    def decode_mixed(thread_index: int) -> list[str]:
        outcomes = []
        for step in range(25):
            try:
                pixels = read_upload(bomb if (thread_index + step) % 2 else seven_png).pixels
                outcomes.append("seven" if np.array_equal(pixels, expected) else "wrong pixels")
            except UploadError as err:
                outcomes.append("bomb refused" if "bomb" in str(err) else str(err))
        return outcomes

    outcomes = [outcome for thread in run_in_threads(decode_mixed) for outcome in thread]
    assert sorted(set(outcomes)) == ["bomb refused", "seven"]
    assert outcomes.count("bomb refused") == outcomes.count("seven") == THREADS * 25 // 2
