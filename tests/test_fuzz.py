"""Property tests with hypothesis: preprocess_image and read_upload on arbitrary inputs.

preprocess_image returns a finite (1, 1, 28, 28) float32 input, None, or raises ValueError, and
never changes its argument; read_upload returns uint8 pixels that preprocess_image accepts, or
raises UploadError. Seeded (derandomize) and with no example database, so the same pytest
command tries the same inputs every time (Hypothesis also mixes in literals of the local modules
loaded, so this file alone tries a slightly different, equally fixed, set). How many inputs, and
what came of them, is printed in pytest's summary under "fuzzing".
"""

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from custom_modules.serving.preprocess import preprocess_image
from custom_modules.serving.upload import UploadError, read_upload
from tests.conftest import animated_gif, encode, seven

PREPROCESS_EXAMPLES = 500
UPLOAD_EXAMPLES = 200
FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# repeated entries are drawn more often: most inputs should get past the checks of the input
DTYPES = ["uint8"] * 6 + ["bool", "float16"] * 2 + ["float32", "float64"] * 3 + [">f8"]
DTYPES += ["int16", "int32", "int64", "complex64", "complex128", "object"]  # >f8: big-endian
PATTERNS = ["strokes"] * 3 + ["noise", "constant", "dots", "gradient"]
# values a pattern in [0, 1] is stretched to, (offset, scale); None: the dtype's own range
VALUE_RANGES = {
    "natural": None,
    "natural ": None,
    "natural  ": None,
    "bytes": (0.0, 255.0),
    "negative": (-1.0, 1.0),
    "above-one": (0.5, 1.0),
    "huge": (-1e30, 3e30),
    "tiny": (0.0, 1e-30),
}
SPECIAL_VALUES = [np.nan, np.inf, -np.inf]
LOWEST_INPUT, HIGHEST_INPUT = 0.0, 1.0  # pixels: the exported graph normalises them


# ----------------------------------------------------------------------- preprocess_image


@st.composite
def shapes(draw: st.DrawFn) -> tuple[int, ...]:
    """Mostly images, (H, W) or (H, W, 1|3|4) with sides of 1..64 px; else anything from 0-d to
    4-d, with sides of 0..64 and a last axis of 0..5 channels."""
    kind = draw(st.sampled_from(["HxW", "HxWxC", "HxWxC", "anything"]))
    side = st.integers(0 if kind == "anything" else 1, 64)
    ndim = {"HxW": 2, "HxWxC": 3}.get(kind) or draw(st.integers(0, 4))
    sides = [draw(side) for _ in range(min(ndim, 2))]
    if ndim >= 3:
        channels = draw(st.sampled_from([1, 3, 4]) if kind == "HxWxC" else st.integers(0, 5))
        sides = [draw(st.integers(0, 3))] * (ndim == 4) + sides + [channels]
    return tuple(sides)


def pattern_values(pattern: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values in [0, 1] of the given shape: strokes on black, noise, a flat page, ..."""
    if pattern == "noise":
        return rng.random(shape)
    if pattern == "constant":
        return np.full(shape, rng.random())
    if pattern == "dots":
        return (rng.random(shape) > 0.995).astype(np.float64)
    if pattern == "gradient":
        return np.linspace(0.0, 1.0, int(np.prod(shape))).reshape(shape)
    return strokes(shape, rng)


def strokes(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random scribble of 1-3 strokes, repeated along every axis beyond the first two."""
    if len(shape) < 2 or 0 in shape[:2]:
        return rng.random(shape)
    height, width = shape[:2]
    image = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        points = [tuple(p) for p in rng.random((rng.integers(2, 6), 2)) * (width, height)]
        pen.line(points, fill=255, width=int(rng.integers(1, 6)))
    grey = np.asarray(image) / 255.0
    return np.broadcast_to(grey.reshape(grey.shape + (1,) * (len(shape) - 2)), shape).copy()


def with_specials(values: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """`values` with `count` NaN / inf / -inf put at random places (float arrays only)."""
    if values.size:
        flat = values.reshape(-1)
        for index in rng.integers(0, values.size, count):
            flat[index] = SPECIAL_VALUES[rng.integers(len(SPECIAL_VALUES))]
    return values


def as_dtype(values: np.ndarray, dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Cast as numpy would be asked to (ints wrap around, floats overflow to inf, quietly)."""
    if dtype == "object":
        choices = np.array([0, 1, 255, 0.5, None, "ink", 1j], dtype=object)
        objects = np.empty(values.shape, dtype=object)
        objects[...] = choices[rng.integers(len(choices), size=values.shape)]
        return objects
    with np.errstate(all="ignore"):
        if np.dtype(dtype).kind in "iub":
            return np.asarray(np.nan_to_num(values, posinf=0, neginf=0)).astype(dtype)
        return values.astype(dtype)


def in_layout(image: np.ndarray, layout: str) -> np.ndarray:
    """The same array, or a Fortran-ordered copy, a reversed view, a read-only view."""
    if layout == "fortran":
        return np.asfortranarray(image)
    if layout == "reversed" and image.ndim:
        return image[::-1]
    if layout == "read-only":
        view = image.view()
        view.flags.writeable = False
        return view
    return image


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    """An array of any shape, dtype, value range and memory layout; NaN/inf in some floats."""
    shape, dtype = draw(shapes()), draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    natural = (0.0, 1.0) if np.dtype(dtype).kind in "fc" else (0.0, 255.0)
    offset, scale = VALUE_RANGES[draw(st.sampled_from(list(VALUE_RANGES)))] or natural
    pattern = pattern_values(draw(st.sampled_from(PATTERNS)), shape, rng)
    values = np.asarray(offset + scale * pattern)  # 0-d stays an array, not a scalar
    if np.dtype(dtype).kind in "fc" and draw(st.sampled_from([False, False, False, True])):
        values = with_specials(values, rng, draw(st.integers(1, 3)))
    image = as_dtype(values, dtype, rng)
    return in_layout(image, draw(st.sampled_from(["c", "fortran", "reversed", "read-only"])))


def outcome_of_preprocessing(image: np.ndarray) -> str:
    """'input', 'None' or 'ValueError', after checking the result and that `image` is intact."""
    before = image.copy()
    try:
        x = preprocess_image(image)
    except ValueError:
        outcome = "ValueError"
    else:
        outcome = "None" if x is None else "input"
        if x is not None:
            assert isinstance(x, np.ndarray) and x.shape == (1, 1, 28, 28)
            assert x.dtype == np.float32 and np.isfinite(x).all()
            assert x.min() >= LOWEST_INPUT - 1e-5 and x.max() <= HIGHEST_INPUT + 1e-5
    assert image.dtype == before.dtype and image.shape == before.shape
    unchanged = before.dtype == object or np.array_equal(image, before, equal_nan=True)
    assert unchanged, "preprocess_image changed its argument"
    return outcome


def record(request: pytest.FixtureRequest, what: str, outcomes: Counter) -> None:
    """Put '<what>: N inputs tried (...)' in the terminal summary and print it."""
    counts = ", ".join(f"{count} {outcome}" for outcome, count in outcomes.most_common())
    line = f"{what}: {outcomes.total()} inputs tried ({counts})"
    request.node.user_properties.append(("fuzz", line))
    print(line)


def test_preprocess_image_gives_an_input_none_or_value_error(request):
    outcomes: Counter[str] = Counter()

    @settings(FUZZ_SETTINGS, max_examples=PREPROCESS_EXAMPLES)
    @given(images())
    def check(image: np.ndarray) -> None:
        outcomes[outcome_of_preprocessing(image)] += 1

    check()
    record(request, "preprocess_image", outcomes)
    assert outcomes.total() >= PREPROCESS_EXAMPLES
    assert min(outcomes[kind] for kind in ("input", "None", "ValueError")) >= 20, outcomes


# ----------------------------------------------------------------------------- read_upload


def sample_files() -> dict[str, bytes]:
    """Small valid files of each accepted kind, to be damaged."""
    small = seven((40, 48))
    return {
        "png": encode(small, "PNG"),
        "png-16-bit": encode(Image.fromarray(np.asarray(small).astype(np.uint16) * 257), "PNG"),
        "png-palette-transparent": encode(small.convert("P"), "PNG", transparency=0),
        "jpeg": encode(small, "JPEG"),
        "jpeg-cmyk": encode(Image.merge("CMYK", [small] * 4), "JPEG"),
        "gif-animated": animated_gif(),
    }


@st.composite
def damaged_files(draw: st.DrawFn, samples: dict[str, bytes]) -> bytes:
    """A sample file cut short, with bytes overwritten, or with bytes inserted (or intact)."""
    data = bytearray(samples[draw(st.sampled_from(sorted(samples)))])
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["cut", "overwrite", "insert"]))
        if kind == "cut":
            del data[at:]
        elif kind == "overwrite":
            data[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def outcome_of_reading(data: bytes) -> str:
    """'input', 'None' or 'UploadError': read_upload, then preprocess_image on its pixels."""
    try:
        upload = read_upload(data)
    except UploadError as err:
        assert "\n" not in str(err)
        return "UploadError"
    assert upload.pixels.dtype == np.uint8 and upload.pixels.ndim in (2, 3)
    assert upload.pixels.ndim == 2 or upload.pixels.shape[2] in (3, 4)
    return "None" if preprocess_image(upload.pixels) is None else "input"


def test_read_upload_gives_pixels_or_an_upload_error(request):
    outcomes: Counter[str] = Counter()
    samples = sample_files()

    @settings(FUZZ_SETTINGS, max_examples=UPLOAD_EXAMPLES)
    @given(damaged_files(samples))
    def check(data: bytes) -> None:
        outcomes[outcome_of_reading(data)] += 1

    check()
    record(request, "read_upload on damaged files", outcomes)
    assert outcomes.total() >= UPLOAD_EXAMPLES
    assert outcomes["UploadError"] >= 20 and outcomes["input"] >= 20, outcomes
