"""The drawing surface's Python side: what the browser sends becomes a Drawing, or a clear error.

The browser side (pointer events, Undo, Clear, corners, touch) is tested in test_browser.py.
"""

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from components.stroke_canvas import MAX_SIZE, DrawingError, parse_value


def data_url(image: Image.Image, format: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    mime = "png" if format == "PNG" else format.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def drawn(size: int = 280) -> Image.Image:
    """A white stroke on black, as the surface paints it."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    ImageDraw.Draw(image).line([(40, 50), (200, 220)], fill=(255, 255, 255, 255), width=28)
    return image


def value(png: str, strokes=None, seq: int = 3) -> dict:
    if strokes is None:
        strokes = [{"width": 28, "points": [[40, 50], [120.5, 135], [200, 220]]}]
    return {"seq": seq, "size": 280, "strokes": strokes, "png": png}


def test_a_value_becomes_a_drawing_with_its_strokes_and_pixels():
    image = drawn()
    drawing = parse_value(value(data_url(image)))
    assert drawing.seq == 3
    assert len(drawing.strokes) == 1
    assert drawing.strokes[0].width == 28.0
    assert drawing.strokes[0].points == ((40.0, 50.0), (120.5, 135.0), (200.0, 220.0))
    np.testing.assert_array_equal(drawing.rgba, np.asarray(image))
    assert drawing.size == 280
    assert drawing.grey.shape == (280, 280)
    assert drawing.grey[135, 120] == 255 and drawing.grey[5, 270] == 0


def test_the_pixels_are_shared_so_they_are_read_only():
    drawing = parse_value(value(data_url(drawn())))
    with pytest.raises(ValueError, match="read-only"):
        drawing.rgba[0, 0, 0] = 1


def test_a_cleared_surface_is_a_drawing_without_strokes():
    blank = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    drawing = parse_value(value(data_url(blank), strokes=[]))
    assert drawing.strokes == ()
    assert not drawing.grey.any()


@pytest.mark.parametrize(
    "broken, message",
    [
        ({"seq": 1, "strokes": []}, "not a drawing"),  # no png
        ("a string", "not a drawing"),
        (value("data:image/png;base64,", strokes=[{"width": 28}]), "not a drawing"),
        (value("data:image/png;base64,", strokes=[{"width": 1, "points": [[1]]}]), "not a drawing"),
        (value(["not", "a", "string"]), "not a PNG data URL"),
        (value("https://example.com/x.png"), "not a PNG data URL"),
        (value("data:image/png;base64,!!!"), "cannot be read"),
        (value("data:image/png;base64," + base64.b64encode(b"not a png").decode()), "cannot"),
        (value(data_url(drawn().convert("RGB"), "JPEG").replace("jpeg", "png", 1)), "square PNG"),
        (value(data_url(drawn().crop((0, 0, 280, 100)))), "square PNG"),
        (value(data_url(Image.new("L", (MAX_SIZE + 1, MAX_SIZE + 1)))), "square PNG"),
    ],
)
def test_a_value_the_surface_cannot_have_sent_is_refused(broken, message):
    with pytest.raises(DrawingError, match=message):
        parse_value(broken)
