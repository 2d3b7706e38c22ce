"""A square drawing surface for Streamlit that sends the drawing the moment the pen lifts.

    drawing = stroke_canvas(key="canvas")  # None until the first stroke
    if drawing is not None:
        len(drawing.strokes), drawing.rgba  # white ink on black, `size` x `size` pixels

Mouse, touch and pen, through pointer events. Undo and Clear sit below the surface, so no
control covers any of it. The frontend is plain HTML and JavaScript (no build step); see
frontend/main.js for the messages it exchanges with Streamlit.
"""

import base64
import binascii
import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit.components.v1 as components
from PIL import Image

_component = components.declare_component(
    "stroke_canvas", path=str(Path(__file__).parent / "frontend")
)
_PNG_PREFIX = "data:image/png;base64,"
MAX_SIZE = 1024  # px a side: a bigger PNG was not sent by this surface

Point = tuple[float, float]


@dataclass(frozen=True)
class Stroke:
    width: float  # in canvas pixels, like the points
    points: tuple[Point, ...]


@dataclass(frozen=True, eq=False)
class Drawing:
    """What the surface holds after the latest stroke, undo or clear."""

    seq: int  # grows with every value the mounted surface sends
    strokes: tuple[Stroke, ...]
    rgba: np.ndarray  # (size, size, 4) uint8, read-only: white ink on opaque black

    @property
    def size(self) -> int:
        return self.rgba.shape[0]

    @property
    def grey(self) -> np.ndarray:
        """(size, size) uint8: the ink's brightness."""
        return self.rgba[..., :3].max(axis=-1)


class DrawingError(ValueError):
    """The browser sent a value this surface cannot have sent."""


def stroke_canvas(*, key: str, size: int = 280, stroke_width: float = 28) -> Drawing | None:
    """Show the surface: `size` canvas pixels per side, shown smaller on narrower screens.

    `key` keeps the drawing when `stroke_width` changes (a new key starts a blank surface).
    Returns None before the first stroke; raises DrawingError on a malformed value.
    """
    value = _component(size=size, stroke_width=stroke_width, key=key, default=None)
    return None if value is None else parse_value(value)


def parse_value(value: object) -> Drawing:
    """The frontend's JSON value as a Drawing."""
    try:
        seq, png, raw_strokes = int(value["seq"]), value["png"], value["strokes"]
        strokes = tuple(
            Stroke(float(s["width"]), tuple((float(x), float(y)) for x, y in s["points"]))
            for s in raw_strokes
        )
    except (KeyError, TypeError, ValueError) as err:
        raise DrawingError(f"not a drawing: {err!r}") from err
    if not isinstance(png, str) or not png.startswith(_PNG_PREFIX):
        raise DrawingError("the drawing is not a PNG data URL")
    return Drawing(seq=seq, strokes=strokes, rgba=decode_png(png))


@functools.lru_cache(maxsize=64)
def decode_png(data_url: str) -> np.ndarray:
    """The PNG data URL's RGBA pixels, read-only so one decoded copy can serve every rerun."""
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data_url[len(_PNG_PREFIX) :])))
        width, height = image.size  # known before the pixels are decoded
        if image.format != "PNG" or width != height or width > MAX_SIZE:
            raise DrawingError(f"expected a square PNG of at most {MAX_SIZE} px a side")
        pixels = np.asarray(image.convert("RGBA"))
    except (binascii.Error, OSError, Image.DecompressionBombError) as err:
        raise DrawingError(f"the drawing's PNG cannot be read: {err}") from err
    pixels.setflags(write=False)
    return pixels
