"""Uploaded PNG, JPEG and GIF files: decoded into pixels for `preprocess_image`, or refused."""

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from custom_modules.messages import one_line

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
        raise UploadError(f"the file is damaged or truncated ({one_line(err, 200)}).") from None
    return Upload(np.asarray(decoded), description, tuple(caveats))
