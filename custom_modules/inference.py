"""Torch-free serving: MNIST-style preprocessing, the exported ONNX ViT, the models manifest.

Imports only numpy, Pillow, onnxruntime and the standard library, so the app runs without PyTorch.
"""

import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps, UnidentifiedImageError

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28
DIGIT_SIZE = 20  # MNIST scales each digit's box so its longer side is 20 px
GRID_SIZE = 7  # 28 px / 4 px patches
NUM_CLASSES = 10
INPUT_NAME = "input"

MIN_CONTRAST = 0.2  # ink minus background, on a 0..1 scale; less is an empty page
INK_LEVEL = 0.2  # a pixel at least this far above the background is ink
NOISE_FLOOR = 0.08  # fainter than this after the contrast stretch: paper texture, JPEG noise
MIN_INK_FRACTION = 5e-4  # a digit covers more than a few stray pixels
MIN_INK_PIXELS = 3

PRODUCE_MODELS = (
    "restore it from git, or make the models with `python grid_search_mnist.py --ship` "
    "(see models/README.md)"
)


class ModelFileError(RuntimeError):
    """A model file or manifest that is missing, corrupt, or not one written by the export."""


def _model_file_error(path: Path, problem: str) -> ModelFileError:
    """The one-line error for an unusable file: which file, what is wrong, how to remake it."""
    return ModelFileError(f"{path}: {problem}; {PRODUCE_MODELS}")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


# ---------------------------------------------------------------------------- preprocessing


def _as_float_image(image: np.ndarray) -> np.ndarray:
    """Any accepted input as float32 in [0, 1], shape (H, W) or (H, W, C)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"the image is empty (shape {image.shape})")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("the image contains NaN or infinite values")
        if image.min() < 0.0 or image.max() > 1.0:
            raise ValueError("a float image must have values in [0, 1]")
        return image.astype(np.float32)
    raise ValueError(f"expected a uint8, bool or float image, got dtype {image.dtype}")


def _to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W) grey levels; RGBA is composited on black, the way the canvas' strokes show."""
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 1:
        return image[..., 0]
    grey = image[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if channels == 3:
        return grey
    alpha = image[..., 3]
    composited = grey * alpha
    if np.ptp(composited) < MIN_CONTRAST <= np.ptp(alpha):
        return alpha  # dark ink on a transparent page: the shape is in the alpha channel
    return composited


def _ink_map(grey: np.ndarray) -> np.ndarray | None:
    """Light ink on a zero background, stretched to [0, 1]; None when there is no contrast."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on light paper
        grey, background = 1.0 - grey, 1.0 - background
    contrast = float(grey.max()) - background
    if contrast < MIN_CONTRAST:
        return None
    ink = np.clip((grey - background) / contrast, 0.0, 1.0)
    ink[ink < NOISE_FLOOR] = 0.0
    return ink


def _crop_to_ink(ink: np.ndarray) -> np.ndarray | None:
    """The ink's bounding box, or None when there is too little ink to be a digit."""
    if (ink >= INK_LEVEL).sum() < max(MIN_INK_PIXELS, MIN_INK_FRACTION * ink.size):
        return None
    is_ink = ink >= INK_LEVEL
    rows, cols = np.flatnonzero(is_ink.any(axis=1)), np.flatnonzero(is_ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit_digit_box(digit: np.ndarray) -> np.ndarray:
    """Anti-aliased resize so that the longer side is DIGIT_SIZE px, keeping the aspect ratio."""
    height, width = digit.shape
    scale = DIGIT_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste into a 28x28 frame with the centre of mass at the centre (shift clipped to fit)."""
    height, width = digit.shape
    mass = digit.sum()
    centre = IMAGE_SIZE / 2  # MNIST's centres of mass sit at index 14.0 (13.5 would be symmetric)
    if mass > 0:
        rows, cols = np.indices(digit.shape)
        top = round(centre - (rows * digit).sum() / mass)
        left = round(centre - (cols * digit).sum() / mass)
    else:
        top, left = (IMAGE_SIZE - height) // 2, (IMAGE_SIZE - width) // 2
    top = min(max(top, 0), IMAGE_SIZE - height)
    left = min(max(left, 0), IMAGE_SIZE - width)
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    frame[top : top + height, left : left + width] = digit
    return frame


def preprocess_image(image: np.ndarray) -> np.ndarray | None:
    """Turn a drawing or photo of a digit into the model's input, as MNIST was made.

    Accepts an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array that is uint8 (0..255), bool, or
    float (any width) in [0, 1]; anything else raises ValueError. Light ink on a dark or transparent
    background and dark ink on light paper both work. Returns a normalised (1, 1, 28, 28) float32
    array, or None when the image is blank (no contrast, or only a few stray pixels of ink).
    """
    ink = _ink_map(_to_grey(_as_float_image(image)))
    if ink is None:
        return None
    digit = _crop_to_ink(ink)
    if digit is None:
        return None
    frame = _centre_by_mass(_fit_digit_box(digit))
    return ((frame - MNIST_MEAN) / MNIST_STD)[None, None].astype(np.float32)


def to_pixels(x: np.ndarray) -> np.ndarray:
    """A normalised (1, 1, 28, 28) or (28, 28) model input back to a (28, 28) uint8 image."""
    image = np.asarray(x, dtype=np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE)
    return np.clip(np.rint((image * MNIST_STD + MNIST_MEAN) * 255), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------- uploads

UPLOAD_FORMATS = ("PNG", "JPEG", "GIF")
WORKING_PIXELS = 1024 * 1024  # bigger uploads are shrunk to about this: a digit needs no more
MAX_DECODED_PIXELS = 4096 * 4096  # refused above this (JPEGs count after their 1/8..1/2 draft)
MAX_ASPECT_RATIO = 10  # longer than this times the short side: nothing like a digit's shape
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
MODE_NAMES = {
    "1": "1-bit",
    "L": "greyscale",
    "LA": "greyscale with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "RGB": "RGB",
    "RGBA": "RGBA",
    "CMYK": "CMYK",
    **dict.fromkeys(SIXTEEN_BIT_MODES, "16-bit greyscale"),
}


class UploadError(ValueError):
    """An uploaded file that cannot be used; the message is one line, for the user."""


@dataclass(frozen=True)
class Upload:
    """A decoded upload: uint8 pixels (H, W), (H, W, 3) or (H, W, 4), and what was done to them.

    `description` is one line on the file and its conversion; `warnings` are one-line caveats.
    """

    pixels: np.ndarray
    description: str
    warnings: tuple[str, ...]


def _working_size(width: int, height: int) -> tuple[int, int]:
    """The same shape with at most about WORKING_PIXELS pixels (never a side under 1 px)."""
    scale = min(1.0, math.sqrt(WORKING_PIXELS / (width * height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _describe(image: Image.Image) -> str:
    """e.g. "PNG, palette with transparency, 200×240 px"."""
    mode = MODE_NAMES.get(image.mode, image.mode)
    if image.mode in ("P", "L", "RGB") and "transparency" in image.info:
        mode += " with transparency"
    return f"{image.format}, {mode}, {image.width}×{image.height} px"


def _caveats(image: Image.Image) -> list[str]:
    """One-line warnings about an opened image: animation, a shape unlike a digit."""
    caveats = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        caveats.append(f"an animation of {frames} frames; only the first frame is classified.")
    long_side, short_side = max(image.size), min(image.size)
    if long_side > MAX_ASPECT_RATIO * short_side:
        caveats.append(
            f"{image.width}×{image.height} px is far more elongated than a digit; "
            "the prediction may mean little."
        )
    return caveats


def _sixteen_bit_to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grey scaled (not clipped) to 8 bits; its transparent level, if any, as alpha."""
    levels = np.asarray(image).astype(np.int64)
    grey = np.rint(np.clip(levels, 0, 65535) / 257).astype(np.uint8)
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return Image.fromarray(grey)
    alpha = np.where(levels == transparent, 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([grey, grey, grey, alpha]))


def _to_8_bit(image: Image.Image) -> Image.Image:
    """Mode L, RGB or RGBA: what preprocess_image reads (transparency kept as alpha)."""
    if image.mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_8_bit(image)
    if image.has_transparency_data:
        return image.convert("RGBA")
    return image.convert("L" if image.mode in ("1", "L") else "RGB")


def _decode(image: Image.Image) -> tuple[Image.Image, str]:
    """The first frame, upright, 8-bit, shrunk to WORKING_PIXELS; and the one-line description."""
    description = _describe(image)
    if image.format == "JPEG":
        image.draft(None, _working_size(*image.size))  # decode at 1/2..1/8 scale when enough
    if image.width * image.height > MAX_DECODED_PIXELS:
        raise UploadError(
            f"{image.width}×{image.height} px is more than the "
            f"{MAX_DECODED_PIXELS / 1e6:.1f} megapixels read here; shrink it first."
        )
    converted = _to_8_bit(ImageOps.exif_transpose(image))
    size = _working_size(*converted.size)
    if size != converted.size:
        converted = converted.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        description += f", shrunk to {size[0]}×{size[1]}"
    return converted, description


def read_upload(data: bytes) -> Upload:
    """Decode an uploaded PNG, JPEG or GIF (first frame) into uint8 pixels for preprocess_image.

    Raises UploadError with a one-line reason for anything else: not an image, damaged or
    truncated, a decompression bomb (Pillow's MAX_IMAGE_PIXELS, whose warning is an error here),
    or more than MAX_DECODED_PIXELS.
    """
    try:
        # The warning filters are process-wide: a thread leaving its own block may drop this one
        # while we decode, but then MAX_DECODED_PIXELS, far below Pillow's limit, still refuses.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
                caveats = _caveats(image)
                decoded, description = _decode(image)
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError("not a PNG, JPEG or GIF image.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        limit = Image.MAX_IMAGE_PIXELS or 0
        raise UploadError(
            f"more than {limit:,} pixels, refused as a possible decompression bomb."
        ) from None
    except MemoryError:
        raise UploadError("too large to decode in the memory available.") from None
    except Exception as err:  # a damaged file: Pillow raises OSError, SyntaxError, ValueError...
        raise UploadError(f"the file is damaged or truncated ({_one_line(err)}).") from None
    return Upload(np.asarray(decoded), description, tuple(caveats))


# ---------------------------------------------------------------------------------- the model


def output_names(n_layers: int) -> list[str]:
    """The export's outputs: `logits`, one `cls_attention_i` per block, `attention_rollout`."""
    return ["logits", *(f"cls_attention_{i}" for i in range(n_layers)), "attention_rollout"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    """Probabilities (N, 10), each block's CLS attention (N, heads, 7, 7), the rollout (N, 7, 7)."""

    probabilities: np.ndarray
    cls_attentions: list[np.ndarray]
    rollout: np.ndarray


def _open_session(path: Path, threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise _model_file_error(path, "model file not found")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT's errors (InvalidProtobuf, Fail, ...) share no narrower base
        raise _model_file_error(path, f"not a readable ONNX model ({_one_line(err)})") from None


def _count_blocks(path: Path, session: ort.InferenceSession) -> int:
    """Check the graph's signature against the export; return its number of blocks."""
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    n_layers = len(outputs) - 2
    expected_input = (INPUT_NAME, [1, IMAGE_SIZE, IMAGE_SIZE], "tensor(float)")
    signature_ok = (
        len(inputs) == 1
        and (inputs[0].name, inputs[0].shape[1:], inputs[0].type) == expected_input
        and len(inputs[0].shape) == 4
        and n_layers >= 1
        and outputs == output_names(n_layers)
    )
    if not signature_ok:
        found = ", ".join(f"{i.name}{i.shape}" for i in inputs) + " -> " + ", ".join(outputs)
        raise _model_file_error(
            path,
            f"not a ViT Digits export (found {found}; expected input[batch, 1, 28, 28] "
            "-> logits, cls_attention_0.., attention_rollout)",
        )
    return n_layers


class OnnxViT:
    """An exported ViT in an ONNX Runtime session; `predict` is safe to call from many threads.

    One intra-op thread by default, as in the latency benchmark: a batch of one is too small to
    split, and concurrent requests then each get a core.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        self.path = Path(path)
        self._session = _open_session(self.path, threads)
        self.n_layers = _count_blocks(self.path, self._session)
        self.num_heads = self._probe_heads()

    def _probe_heads(self) -> int:
        """Run one blank image (warms the session up) and check every output's shape."""
        blank = np.zeros((1, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        try:
            outputs = self._session.run(None, {INPUT_NAME: blank})
        except Exception as err:  # a graph that loads but cannot run, e.g. a missing kernel
            problem = f"the model fails to run ({_one_line(err)})"
            raise _model_file_error(self.path, problem) from None
        logits, *attentions, rollout = outputs
        num_heads = attentions[0].shape[1] if attentions[0].ndim == 4 else 0
        grid = (GRID_SIZE, GRID_SIZE)
        shapes_ok = (
            logits.shape == (1, NUM_CLASSES)
            and num_heads >= 1
            and all(a.shape == (1, num_heads, *grid) for a in attentions)
            and rollout.shape == (1, *grid)
        )
        if not shapes_ok:
            shapes = ", ".join(str(o.shape) for o in outputs)
            raise _model_file_error(self.path, f"unexpected output shapes {shapes}")
        return num_heads

    def predict_with_rollout(self, x: np.ndarray) -> Prediction:
        """Probabilities, each block's CLS attention and the rollout for (N, 1, 28, 28) inputs."""
        if not isinstance(x, np.ndarray) or x.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
            shape = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"expected a (N, 1, 28, 28) array, got {shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"expected a float array, got dtype {x.dtype}")
        logits, *attentions, rollout = self._session.run(
            None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)}
        )
        return Prediction(softmax(logits), attentions, rollout)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities (N, 10) and one CLS attention array (N, heads, 7, 7) per block."""
        prediction = self.predict_with_rollout(x)
        return prediction.probabilities, prediction.cls_attentions


# ------------------------------------------------------------------------------------ display


def upscale_nearest(image: np.ndarray, factor: int) -> np.ndarray:
    """Blow each pixel of an (H, W) or (H, W, C) image up into a factor x factor block."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def attention_overlay(
    pixels: np.ndarray, attention: np.ndarray, size: int = 224, opacity: float = 0.6
) -> np.ndarray:
    """An (size, size, 3) uint8 image: the 28x28 input in grey, the 7x7 map as a green layer.

    The map is scaled to its own maximum, so every head uses the full range of green.
    """
    attention = np.asarray(attention, dtype=np.float32)
    peak = float(attention.max())
    weight = attention / peak if peak > 0 else np.zeros_like(attention)
    alpha = upscale_nearest(weight, size // attention.shape[0])[..., None] * opacity
    grey = upscale_nearest(pixels.astype(np.float32), size // pixels.shape[0])[..., None]
    green = np.array([40.0, 230.0, 90.0], dtype=np.float32)
    blended = grey * (1 - alpha) + green * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- manifest

MODEL_NUMBERS = {
    "params": int,
    "size_bytes": int,
    "test_accuracy": float,
    "test_precision": float,
    "test_recall": float,
    "test_f1": float,
    "onnx_p50_us": float,
    "torch_p50_us": float,
}
CONFIG_KEYS = ("emb_dim", "num_heads", "n_layers", "mlp_ratio")


@dataclass(frozen=True)
class ModelInfo:
    """One model of the manifest; `path` is its ONNX file inside the models folder."""

    name: str
    path: Path
    config: dict[str, int]
    params: int
    size_bytes: int
    test_accuracy: float
    test_precision: float
    test_recall: float
    test_f1: float
    onnx_p50_us: float
    torch_p50_us: float
    command: str


@dataclass(frozen=True)
class Manifest:
    """The served models by name, in the file's order, and the grid's results table."""

    path: Path
    models: dict[str, ModelInfo]
    grid_results: Path | None


def _is_number(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    return ok and math.isfinite(value)


def _model_info(path: Path, name: str, entry: object) -> ModelInfo:
    def bad(what: str) -> ModelFileError:
        return _model_file_error(path, f"model '{name}' {what}")

    if not isinstance(entry, dict):
        raise bad("is not a JSON object")
    file = entry.get("file")
    if not isinstance(file, str) or not re.fullmatch(r"[\w.-]+\.onnx", file):
        raise bad(f"has no valid 'file' (a .onnx name inside the models folder), got {file!r}")
    config = entry.get("config")
    if not isinstance(config, dict) or not all(
        _is_number(config.get(key), int) for key in CONFIG_KEYS
    ):
        raise bad(f"needs a 'config' with integer {', '.join(CONFIG_KEYS)}")
    for key, kind in MODEL_NUMBERS.items():
        if not _is_number(entry.get(key), kind):
            raise bad(f"needs a numeric '{key}', got {entry.get(key)!r}")
    if not isinstance(entry.get("command"), str):
        raise bad("needs a 'command' string")
    numbers = {key: kind(entry[key]) for key, kind in MODEL_NUMBERS.items()}
    return ModelInfo(
        name=name,
        path=path.parent / file,
        config={key: int(config[key]) for key in CONFIG_KEYS},
        command=entry["command"],
        **numbers,
    )


def read_manifest(models_dir: str | Path) -> Manifest:
    """Read `<models_dir>/manifest.json`; raise ModelFileError naming the file if it is unusable."""
    path = Path(models_dir) / "manifest.json"
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise _model_file_error(path, "not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _model_file_error(path, f"cannot read the manifest ({_one_line(err)})") from None
    models = spec.get("models") if isinstance(spec, dict) else None
    if not isinstance(models, dict) or not models:
        raise _model_file_error(path, "expected a 'models' object with at least one model")
    grid_results = spec.get("grid_results")
    if grid_results is not None and not isinstance(grid_results, str):
        raise _model_file_error(path, f"'grid_results' must be a file name, got {grid_results!r}")
    return Manifest(
        path=path,
        models={name: _model_info(path, name, entry) for name, entry in models.items()},
        grid_results=path.parent / grid_results if grid_results else None,
    )
