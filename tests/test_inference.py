"""Tests for custom_modules.serving: MNIST-style preprocessing, the ONNX model, the manifest."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from PIL import Image, ImageDraw

from custom_modules.serving import preprocess
from custom_modules.serving.errors import ModelFileError
from custom_modules.serving.manifest import read_manifest
from custom_modules.serving.model import RUN_BATCH, OnnxViT, softmax
from custom_modules.serving.overlay import as_uint8, attention_overlay, upscale_nearest
from custom_modules.serving.preprocess import MIN_PEN_RATIO, pen_ratio, preprocess_image
from custom_modules.serving.upload import WORKING_PIXELS, UploadError, read_upload
from tests.conftest import encode, seven, sixteen_bit_png

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
SERVING_MODULES = ("errors", "manifest", "model", "overlay", "preprocess", "upload")
CANVAS = 280
# a "4" in unit coordinates: the open diagonal-and-bar stroke, then the vertical stroke
FOUR = [[(0.35, 0.1), (0.15, 0.6), (0.8, 0.6)], [(0.6, 0.2), (0.6, 0.95)]]


def draw(strokes=FOUR, box=(0, 0, CANVAS, CANVAS), width=20, size=CANVAS) -> np.ndarray:
    """White strokes on black, (size, size) uint8; unit-square strokes are mapped into `box`."""
    left, top, right, bottom = box
    image = Image.new("L", (size, size), 0)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        points = [(left + x * (right - left), top + y * (bottom - top)) for x, y in stroke]
        pen.line(points, fill=255, width=width, joint="curve")
    return np.asarray(image)


def pixels_of(image: np.ndarray) -> np.ndarray:
    x = preprocess_image(image)
    assert x is not None and x.shape == (1, 1, 28, 28) and x.dtype == np.float32
    return as_uint8(x).astype(np.float64)


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(pixels.shape)
    return (rows * pixels).sum() / pixels.sum(), (cols * pixels).sum() / pixels.sum()


def ink_box_size(pixels: np.ndarray) -> int:
    rows, cols = np.nonzero(pixels > 0)
    return max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def correlation_within_a_pixel(a: np.ndarray, b: np.ndarray) -> float:
    """The best correlation over shifts of up to 1 px: two centres of mass may differ by a pixel."""
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return max(correlation(np.roll(a, shift, axis=(0, 1)), b) for shift in shifts)


# ---------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("box", [(190, 10, 250, 90), (10, 200, 40, 270), (100, 100, 180, 180)])
def test_small_off_centre_digit_is_centred_at_mnist_size(box):
    pixels = pixels_of(draw(box=box, width=6))
    row, col = centre_of_mass(pixels)
    assert abs(row - 14) <= 1 and abs(col - 14) <= 1
    assert ink_box_size(pixels) in (19, 20, 21)


def test_thick_and_thin_strokes_both_look_like_the_digit():
    thin, thick = pixels_of(draw(width=4)), pixels_of(draw(width=40))
    for pixels in (thin, thick):
        assert ink_box_size(pixels) in (19, 20, 21)
        assert all(abs(c - 14) <= 1 for c in centre_of_mass(pixels))
        assert 0.03 < (pixels > 64).mean() < 0.5  # strokes, not a blob and not a dust of dots
    assert correlation(thin, thick) > 0.6


@pytest.mark.parametrize("width", [3, 8, 16])
def test_pen_ratio_measures_a_bars_width(width):
    bar = np.zeros((200, 200), np.float32)
    bar[20:180, 100 : 100 + width] = 1.0  # 160 px long: the ends count for little
    assert pen_ratio(bar) * 200 == pytest.approx(width, rel=0.1)


def box_pen_ratio(x: np.ndarray) -> float:
    """The model input's pen width as a share of its ink box (20 px when MNIST-framed)."""
    is_ink = x[0, 0] >= 0.5
    rows, cols = np.nonzero(is_ink)
    return pen_ratio(is_ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1])


def test_a_thin_pen_is_widened_to_mnists_and_a_usual_one_is_left_alone(monkeypatch):
    thin, usual = draw(width=3), draw(width=30)  # the app's pen is 28 px of 280
    widened, kept = preprocess_image(thin), preprocess_image(usual)
    monkeypatch.setattr(preprocess, "MIN_PEN_RATIO", 0.0)  # no widening
    assert widened.sum() > 3 * preprocess_image(thin).sum()
    assert box_pen_ratio(widened) >= 0.8 * MIN_PEN_RATIO
    np.testing.assert_array_equal(preprocess_image(usual), kept)
    assert correlation(pixels_of(thin), pixels_of(usual)) < correlation(
        as_uint8(widened).astype(np.float64), pixels_of(usual)
    )


def test_grey_rgb_and_rgba_of_one_drawing_give_the_same_input():
    grey = draw()
    rgb = np.dstack([grey] * 3)
    opaque = np.dstack([grey] * 3 + [np.full_like(grey, 255)])
    white_ink_on_transparent = np.dstack([np.full_like(grey, 255)] * 3 + [grey])
    expected = preprocess_image(grey)
    for image in (grey[..., None], rgb, opaque, white_ink_on_transparent):
        np.testing.assert_allclose(preprocess_image(image), expected, atol=1e-5)


def test_dark_ink_on_light_paper_is_inverted():
    light_on_dark = draw()
    np.testing.assert_allclose(
        preprocess_image(255 - light_on_dark), preprocess_image(light_on_dark), atol=1e-5
    )
    black_ink_on_transparent = np.dstack([np.zeros_like(light_on_dark)] * 3 + [light_on_dark])
    np.testing.assert_allclose(
        preprocess_image(black_ink_on_transparent), preprocess_image(light_on_dark), atol=1e-5
    )


def test_grey_paper_and_noise_do_not_matter():
    clean = draw()
    rng = np.random.default_rng(0)
    paper = 200 - clean.astype(np.float64) * 0.7 + rng.normal(0, 4, clean.shape)  # photo-like
    photo = np.clip(paper, 0, 255).astype(np.uint8)
    assert correlation_within_a_pixel(pixels_of(photo), pixels_of(clean)) > 0.95


def test_a_faint_paper_edge_does_not_widen_a_photos_box():
    clean = draw(box=(60, 60, 220, 220))
    photo = 235 - clean.astype(np.float64) * 0.8  # dark ink on light paper
    photo[:, :12] -= 70  # the paper's shaded edge: fainter than the ink, narrower than the light
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    pixels = pixels_of(photo)
    assert ink_box_size(pixels) in (19, 20, 21)
    assert correlation_within_a_pixel(pixels, pixels_of(clean)) > 0.9


def test_a_hard_shadow_over_most_of_the_page_is_paper_not_ink():
    """A phone's shadow with a sharp edge across most of the border: the page's grey part is
    still paper, not light ink on a dark page."""
    clean = draw(box=(60, 60, 220, 220))
    photo = 235 - clean.astype(np.float64) * 0.8  # dark ink on light paper
    photo[:, :200] *= 0.45  # most of the border in the shadow, its sharp edge across the digit
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    pixels = pixels_of(photo)
    assert ink_box_size(pixels) in (19, 20, 21)
    assert correlation_within_a_pixel(pixels, pixels_of(clean)) > 0.9


def test_ink_in_a_shadow_across_the_digit_keeps_most_of_its_brightness():
    """A shadow over the page's left part, its edge across the digit, the border mostly lit: the
    strokes in the shadow come out nearly as bright as in the light, and the digit whole."""
    clean = draw(box=(60, 60, 220, 220))
    photo = 235 - clean.astype(np.float64) * 0.8
    photo[:, :120] *= 0.55
    pixels, expected = pixels_of(np.clip(photo, 0, 255).astype(np.uint8)), pixels_of(clean)
    assert correlation_within_a_pixel(pixels, expected) > 0.95

    def left_share(image: np.ndarray) -> float:
        return image[:, :14].sum() / image.sum()

    assert left_share(pixels) > 0.9 * left_share(expected)


def test_float_and_bool_inputs_match_uint8():
    image = draw()
    expected = preprocess_image(image)
    np.testing.assert_allclose(preprocess_image(image / 255.0), expected, atol=1e-5)
    for dtype in (np.float16, np.float32):
        scaled = (image / 255.0).astype(dtype)
        np.testing.assert_allclose(preprocess_image(scaled), expected, atol=2e-3)
    assert preprocess_image(image > 127) is not None


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((CANVAS, CANVAS), np.uint8),
        np.full((CANVAS, CANVAS), 255, np.uint8),
        np.full((CANVAS, CANVAS, 4), 128, np.uint8),
        np.zeros((CANVAS, CANVAS, 4), np.uint8),  # the untouched transparent canvas
        np.zeros((28, 28), bool),
    ],
    ids=["black", "white", "grey-rgba", "transparent", "bool"],
)
def test_blank_images_give_none(image):
    assert preprocess_image(image) is None


@pytest.mark.parametrize("value", [10, 255])
def test_a_single_pixel_is_not_a_digit(value):
    image = np.zeros((CANVAS, CANVAS), np.uint8)
    image[100, 120] = value
    assert preprocess_image(image) is None


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros(28, np.uint8), "shape"),
        (np.zeros((1, 28, 28, 1), np.uint8), "shape"),
        (np.zeros((28, 28, 2), np.uint8), "shape"),
        (np.zeros((0, 28), np.uint8), "empty"),
        (np.zeros((28, 28), np.int64), "dtype"),
        (np.zeros((28, 28), np.complex64), "dtype"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.full((28, 28), np.inf, np.float32), "NaN"),
        (np.full((28, 28), 2.0), r"\[0, 1\]"),
        ([[0, 1], [1, 0]], "numpy array"),
    ],
)
def test_bad_images_raise_value_error(image, message):
    with pytest.raises(ValueError, match=message):
        preprocess_image(image)


@pytest.fixture(scope="module")
def mnist_digits() -> np.ndarray:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"real MNIST not found in {MNIST_DIR}")
    from custom_modules.training.mnist_data import load_mnist

    return load_mnist(MNIST_DIR, download=False).test_images[:12]


@pytest.mark.parametrize(("scale", "left", "top"), [(10, 0, 0), (6, 100, 20), (4, 20, 150)])
def test_real_mnist_digits_survive_a_trip_through_the_canvas(mnist_digits, scale, left, top):
    """A real digit blown up onto the canvas, anywhere and at any size, comes back as training
    frames it (centre of mass placed to the sub-pixel, where MNIST placed it to the pixel)."""
    import torch

    from custom_modules.training.style import reframe_like_serving

    framed = reframe_like_serving(torch.from_numpy(mnist_digits).float().div(255)[:, None])
    for digit, trained in zip(mnist_digits, framed[:, 0].numpy() * 255, strict=True):
        canvas = np.zeros((CANVAS, CANVAS), np.uint8)
        big = upscale_nearest(digit, scale)
        canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
        rgba = np.dstack([canvas] * 3 + [np.full_like(canvas, 255)])
        pixels = pixels_of(rgba)
        assert correlation(pixels, trained) > 0.97
        assert np.abs(pixels - trained).mean() < 0.04 * 255
        assert correlation_within_a_pixel(pixels, digit.astype(np.float64)) > 0.9


# -------------------------------------------------------------------------------- uploads


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not-an-image.png", "^not a PNG, JPEG or GIF image"),
        ("empty.png", "^not a PNG, JPEG or GIF image"),
        ("bitmap.png", "^not a PNG, JPEG or GIF image"),
        ("truncated.png", "^the file is damaged or truncated"),
        ("bomb-20000x20000.png", "89,478,485 pixels, refused as a possible decompression bomb"),
        ("bomb-10000x10000.png", "89,478,485 pixels, refused as a possible decompression bomb"),
        ("huge-6000x6000.png", "^6000×6000 px is more than the 16.8 megapixels"),
    ],
)
def test_unusable_uploads_raise_one_line_upload_errors(uploads, name, message):
    with pytest.raises(UploadError, match=message) as info:
        read_upload(uploads[name])
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


def test_the_bomb_check_leaves_pillows_limit_and_the_warning_filters_as_they_were(uploads):
    filters = list(warnings.filters)
    for name in ("bomb-10000x10000.png", "bomb-20000x20000.png"):
        with pytest.raises(UploadError):
            read_upload(uploads[name])
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default: on, never disabled
    assert warnings.filters == filters


def test_a_bomb_is_refused_even_if_its_warning_is_not_an_error(uploads, monkeypatch):
    """What another thread leaving its warnings.catch_warnings() block could do to ours."""
    monkeypatch.setattr(warnings, "simplefilter", lambda *args, **kwargs: None)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(UploadError, match="10000×"):
        read_upload(uploads["bomb-10000x10000.png"])


@pytest.mark.parametrize(
    "name", ["sixteen-bit.png", "palette.png", "palette-transparent.png", "animated.gif"]
)
def test_odd_but_lossless_uploads_give_exactly_the_sevens_input(uploads, name):
    expected = preprocess_image(np.asarray(seven()))
    np.testing.assert_allclose(preprocess_image(read_upload(uploads[name]).pixels), expected)


def test_cmyk_jpeg_gives_the_sevens_input(uploads):
    pixels = pixels_of(read_upload(uploads["cmyk.jpg"]).pixels)
    assert correlation(pixels, pixels_of(np.asarray(seven()))) > 0.98


def test_sixteen_bit_levels_are_scaled_to_8_bits_not_clipped():
    faint_ink = read_upload(sixteen_bit_png(scale=120)).pixels  # ink at 30600 of 65535
    assert faint_ink.dtype == np.uint8 and set(np.unique(faint_ink)) == {0, 119}
    np.testing.assert_array_equal(read_upload(sixteen_bit_png()).pixels, np.asarray(seven()))


@pytest.mark.parametrize(
    ("name", "description", "warning"),
    [
        ("animated.gif", "GIF, palette, 200×240 px", "an animation of 3 frames; only the first"),
        ("sixteen-bit.png", "PNG, 16-bit greyscale, 200×240 px", None),
        ("cmyk.jpg", "JPEG, CMYK, 200×240 px", None),
        ("palette-transparent.png", "PNG, palette with transparency, 200×240 px", None),
        ("one-pixel.png", "PNG, greyscale, 1×1 px", None),
        ("wide-10000x10.png", "PNG, greyscale, 10000×10 px", "10000×10 px is far more elongated"),
    ],
)
def test_uploads_are_described_in_one_line(uploads, name, description, warning):
    upload = read_upload(uploads[name])
    assert upload.description == description
    assert [w.startswith(warning) for w in upload.warnings] == ([True] if warning else [])


def test_one_pixel_is_blank_and_a_long_thin_image_is_read_whole(uploads):
    assert preprocess_image(read_upload(uploads["one-pixel.png"]).pixels) is None
    wide = read_upload(uploads["wide-10000x10.png"]).pixels
    assert wide.shape == (10, 10000)  # not shrunk to 1024x1: only the area counts
    assert preprocess_image(wide) is not None


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_big_photos_are_shrunk_to_about_a_megapixel(image_format):
    photo = seven((3000, 2000)).resize((3000, 2000))
    upload = read_upload(encode(photo, image_format))
    height, width = upload.pixels.shape
    assert width * height <= WORKING_PIXELS and abs(width / height - 1.5) < 0.01
    assert upload.description.endswith(f", shrunk to {width}×{height}")


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    upload = read_upload(encode(seven(), "JPEG", exif=exif))
    assert upload.pixels.shape == (200, 240)


# -------------------------------------------------------------------------------- OnnxViT


@pytest.fixture(scope="module")
def model(tiny_model_path) -> OnnxViT:
    return OnnxViT(tiny_model_path)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 1, 28, 28), dtype=np.float32)


def test_model_reads_its_shape_from_the_file(model, tiny_model_path):
    assert (model.n_layers, model.num_heads, model.path) == (2, 2, tiny_model_path)


def test_predict_shapes_and_probabilities(model, batch):
    probabilities, attentions = model.predict(batch)
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()
    assert [a.shape for a in attentions] == [(3, 2, 7, 7)] * 2
    assert model.predict_with_rollout(batch).rollout.shape == (3, 7, 7)


def test_predict_matches_onnxruntime_directly(model, batch, tiny_model_path):
    session = ort.InferenceSession(str(tiny_model_path), providers=["CPUExecutionProvider"])
    logits, *attentions, rollout = session.run(None, {"input": batch})
    prediction = model.predict_with_rollout(batch)
    np.testing.assert_allclose(prediction.probabilities, softmax(logits), atol=1e-6)
    for got, expected in zip(prediction.cls_attentions, attentions, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(prediction.rollout, rollout, atol=1e-6)
    probabilities, cls_attentions = model.predict(batch)
    np.testing.assert_array_equal(probabilities, prediction.probabilities)


def test_many_inputs_are_run_in_batches_with_the_same_logits(model, tiny_model_path):
    session = ort.InferenceSession(str(tiny_model_path), providers=["CPUExecutionProvider"])
    many = np.random.default_rng(0).random((RUN_BATCH * 2 + 7, 1, 28, 28), dtype=np.float32)
    expected = np.concatenate([session.run(None, {"input": row[None]})[0] for row in many])
    np.testing.assert_allclose(model.predict_logits(many), expected, atol=1e-5)
    classified = model.classify(many)
    assert classified.probabilities.shape == (len(many), 10) and classified.declined.shape == (
        len(many),
    )
    with pytest.raises(ValueError, match="expected a"):
        model.predict_logits(many[:, 0])


def test_softmax_is_stable_for_huge_logits():
    probabilities = softmax(np.array([[1000.0, 0.0, -1000.0]]))
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities, [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "x", [np.zeros((1, 28, 28), np.float32), np.zeros((1, 1, 28, 28), np.int32), [0.0]]
)
def test_predict_rejects_bad_inputs(model, x):
    with pytest.raises(ValueError):
        model.predict(x)


def foreign_model(path: Path, input_name: str, output_names: list[str]) -> Path:
    """A valid ONNX model that is not ours: `input_name` copied to each of `output_names`."""
    shape = ["batch", 1, 28, 28]
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], [name]) for name in output_names],
        "foreign",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in output_names],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "make_file",
    [
        lambda folder, real: folder / "missing.onnx",
        lambda folder, real: folder,  # a directory
        lambda folder, real: _write(folder / "truncated.onnx", real.read_bytes()[:100]),
        lambda folder, real: _write(folder / "random.onnx", np.random.bytes(5000)),
        lambda folder, real: _write(folder / "empty.onnx", b""),
        lambda folder, real: foreign_model(folder / "foreign.onnx", "x", ["y"]),
        lambda folder, real: foreign_model(folder / "our-input.onnx", "input", ["logits"]),
        lambda folder, real: foreign_model(
            folder / "wrong-shapes.onnx",
            "input",
            ["logits", "cls_attention_0", "attention_rollout"],
        ),
    ],
    ids=["missing", "directory", "truncated", "random", "empty", "foreign", "partial", "shapes"],
)
def test_bad_model_files_raise_model_file_error(tmp_path, tiny_model_path, make_file):
    path = make_file(tmp_path, tiny_model_path)
    with pytest.raises(ModelFileError) as info:
        OnnxViT(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -------------------------------------------------------------------------------- display


def test_upscale_nearest_repeats_each_pixel():
    image = np.arange(4).reshape(2, 2)
    np.testing.assert_array_equal(
        upscale_nearest(image, 2), [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    )
    assert upscale_nearest(np.zeros((28, 28, 3)), 8).shape == (224, 224, 3)


def test_attention_overlay_greens_the_attended_patch():
    pixels = np.zeros((28, 28), np.uint8)
    attention = np.zeros((7, 7), np.float32)
    attention[2, 5] = 0.3
    overlay = attention_overlay(pixels, attention, size=112)
    assert overlay.shape == (112, 112, 3) and overlay.dtype == np.uint8
    patch = overlay[2 * 16 : 3 * 16, 5 * 16 : 6 * 16]
    assert (patch[..., 1] > 100).all() and (patch[..., 1] > patch[..., 0]).all()
    assert (overlay[:32] == 0).all()  # rows above the patch: untouched black input
    np.testing.assert_array_equal(attention_overlay(pixels + 200, attention * 0)[..., 0], 200)


# ------------------------------------------------------------------------------- manifest


def test_read_manifest(tiny_models_dir):
    manifest = read_manifest(tiny_models_dir)
    assert list(manifest.models) == ["Fast", "Large"]
    fast = manifest.models["Fast"]
    assert fast.path == tiny_models_dir / "vit-fast.onnx"
    assert fast.config == TINY_FAST
    assert isinstance(fast.params, int) and 0 < fast.test_accuracy <= 1
    assert manifest.grid_results == tiny_models_dir / "grid_results.csv"


def test_a_patch_overlap_in_the_manifest_is_kept(tmp_path, tiny_models_dir):
    spec = json.loads((tiny_models_dir / "manifest.json").read_text())
    spec = with_fast(spec, config={**TINY_FAST, "patch_overlap": 2})
    (tmp_path / "manifest.json").write_text(json.dumps(spec))
    assert read_manifest(tmp_path).models["Fast"].config == {**TINY_FAST, "patch_overlap": 2}


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(ModelFileError, match="manifest.json.*grid_search_mnist.py --ship"):
        read_manifest(tmp_path)


TINY_FAST = {"emb_dim": 16, "num_heads": 2, "n_layers": 2, "mlp_ratio": 2}


def with_fast(spec: dict, **changes) -> dict:
    """The manifest with only the Fast model, some of its keys changed."""
    return {**spec, "models": {"Fast": {**spec["models"]["Fast"], **changes}}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda spec: "not json", "cannot read"),
        (lambda spec: {**spec, "models": {}}, "at least one model"),
        (lambda spec: {**spec, "models": {"Fast": 3}}, "JSON object"),
        (lambda spec: {**spec, "grid_results": 5}, "grid_results"),
        (lambda spec: with_fast(spec, params="many"), "params"),
        (lambda spec: with_fast(spec, test_accuracy=float("nan")), "test_accuracy"),
        (lambda spec: with_fast(spec, file="../elsewhere.onnx"), "file"),
        (lambda spec: with_fast(spec, config={"emb_dim": 16}), "config"),
        (lambda spec: with_fast(spec, config={**TINY_FAST, "patch_overlap": -2}), "pixel count"),
        (lambda spec: with_fast(spec, command=None), "command"),
    ],
)
def test_bad_manifests_raise_model_file_error(tmp_path, tiny_models_dir, change, message):
    spec = json.loads((tiny_models_dir / "manifest.json").read_text())
    changed = change(spec)
    text = changed if isinstance(changed, str) else json.dumps(changed)
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ModelFileError, match=message) as info:
        read_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(info.value)


# ------------------------------------------------------------------------------ torch-free


def test_serving_code_does_not_import_torch():
    modules = ["contract", *(f"serving.{m}" for m in SERVING_MODULES)]
    imports = ", ".join(f"custom_modules.{module}" for module in modules)
    code = f"import {imports}, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
