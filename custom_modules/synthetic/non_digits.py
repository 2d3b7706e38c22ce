"""Images that are not one digit: letters and signs, scribbles, shapes, digits cut or combined.

Used to teach the model to say "not a digit" (Outlier Exposure, Hendrycks et al. 2019) and,
from other fonts and seeds, to measure how often it does. Each is drawn on a square canvas as
white strokes and framed by `preprocess_image`, as a drawing in the app would be.
"""

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from custom_modules.serving.preprocess import preprocess_image

CANVAS = 112
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
TRAIN_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-ExtraLight.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSansCondensed-Oblique.ttf",
)
HELD_OUT_FONTS = (
    "DejaVuSerif.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSerifCondensed-Italic.ttf",
)
# letters and signs that a person would not call a digit; look-alikes (O, I, l, S, Z, B, b, g, q,
# /, |, ...) are left out, since a model must not learn to decline a 0, 1, 2, 5, 6, 8 or 9
GLYPHS = "ACEFHKMNPRTUVWXYacdefhkmnprtuvwxy+=#%&@?*<>$€£¥πΣΩ√✓★♥☺×÷§¶"
assert not set(GLYPHS) & set("0123456789OoIlSsZzBbgq|/")
KINDS = ("glyph", "scribble", "shape", "combined")


def load_font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = FONT_DIR / name
    if path.is_file():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)  # machines without DejaVu: Pillow's own font


def _render(char: str, font, pen: int) -> Image.Image:
    canvas = Image.new("L", (CANVAS, CANVAS))
    ImageDraw.Draw(canvas).text(
        (CANVAS / 2, CANVAS / 2),
        char,
        fill=255,
        font=font,
        anchor="mm",
        stroke_width=pen,
        stroke_fill=255,
    )
    return canvas


def _glyph(rng: np.random.Generator, fonts: tuple[str, ...]) -> Image.Image | None:
    char = GLYPHS[rng.integers(len(GLYPHS))]
    font = load_font(fonts[rng.integers(len(fonts))], int(rng.integers(56, 84)))
    pen = int(rng.integers(0, 4))
    canvas = _render(char, font, pen)
    # a font without the character draws its "missing" box, which looks like a 0
    if canvas.tobytes() == _render("\uffff", font, pen).tobytes():
        return None
    return canvas


def _smooth_path(points: np.ndarray, steps: int = 12) -> list[tuple[float, float]]:
    """A Catmull-Rom curve through the points, as a pen would draw it."""
    padded = np.vstack([points[:1], points, points[-1:]])
    path = []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1 : i + 3]
        for t in np.linspace(0, 1, steps, endpoint=False):
            t2, t3 = t * t, t * t * t
            path.append(
                0.5
                * (
                    2 * p1
                    + (-p0 + p2) * t
                    + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                    + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
                )
            )
    path.append(padded[-2])
    return [tuple(p) for p in path]


def _scribble(rng: np.random.Generator) -> Image.Image:
    canvas = Image.new("L", (CANVAS, CANVAS))
    draw = ImageDraw.Draw(canvas)
    width = int(rng.integers(3, 12))
    for _ in range(int(rng.integers(1, 4))):
        points = rng.uniform(10, CANVAS - 10, size=(int(rng.integers(5, 10)), 2))
        draw.line(_smooth_path(points), fill=255, width=width, joint="curve")
    return canvas


def _regular_polygon(centre, radius, sides, rotation):
    return [
        (
            centre[0] + radius * math.cos(rotation + 2 * math.pi * k / sides),
            centre[1] + radius * math.sin(rotation + 2 * math.pi * k / sides),
        )
        for k in range(sides + 1)
    ]


def _shape(rng: np.random.Generator) -> Image.Image:
    canvas = Image.new("L", (CANVAS, CANVAS))
    draw = ImageDraw.Draw(canvas)
    width = int(rng.integers(3, 12))
    c, r = (CANVAS / 2, CANVAS / 2), rng.uniform(30, 48)
    rot = rng.uniform(0, 2 * math.pi)
    kind = rng.integers(8)
    if kind == 0:  # triangle or square outline (more sides come too close to a 0)
        draw.line(
            _regular_polygon(c, r, int(rng.integers(3, 5)), rot),
            fill=255,
            width=width,
            joint="curve",
        )
    elif kind == 1:  # star
        outer = _regular_polygon(c, r, 5, rot)[:5]
        star = [outer[(2 * k) % 5] for k in range(6)]
        draw.line(star, fill=255, width=width, joint="curve")
    elif kind == 2:  # grid / hash
        n = int(rng.integers(2, 5))
        for k in range(n):
            o = 20 + k * (CANVAS - 40) / max(1, n - 1)
            draw.line([(o, 15), (o, CANVAS - 15)], fill=255, width=width)
            draw.line([(15, o), (CANVAS - 15, o)], fill=255, width=width)
    elif kind == 3:  # smiley
        box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
        draw.ellipse(box, outline=255, width=width)
        for dx in (-r / 2.5, r / 2.5):
            draw.ellipse(
                [c[0] + dx - 4, c[1] - r / 3 - 4, c[0] + dx + 4, c[1] - r / 3 + 4], fill=255
            )
        draw.arc(
            [c[0] - r / 2, c[1] - r / 4, c[0] + r / 2, c[1] + r / 2], 20, 160, fill=255, width=width
        )
    elif kind == 4:  # spiral
        t = np.linspace(0, rng.uniform(3, 6) * math.pi, 80)
        rad = r * t / t[-1]
        draw.line(
            list(zip(c[0] + rad * np.cos(t + rot), c[1] + rad * np.sin(t + rot), strict=True)),
            fill=255,
            width=width,
            joint="curve",
        )
    elif kind == 5:  # zigzag
        n = int(rng.integers(4, 9))
        xs = np.linspace(12, CANVAS - 12, n)
        ys = np.where(np.arange(n) % 2, 30, CANVAS - 30) + rng.normal(0, 6, n)
        draw.line(list(zip(xs, ys, strict=True)), fill=255, width=width, joint="curve")
    elif kind == 6:  # circle with a cross through it
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], outline=255, width=width)
        draw.line([(c[0] - r, c[1] - r), (c[0] + r, c[1] + r)], fill=255, width=width)
        draw.line([(c[0] - r, c[1] + r), (c[0] + r, c[1] - r)], fill=255, width=width)
    else:  # arrow (a filled blob was left out: a 0 drawn with a thick pen is one)
        draw.line([(15, c[1]), (CANVAS - 15, c[1])], fill=255, width=width)
        draw.line(
            [(CANVAS - 40, c[1] - 25), (CANVAS - 15, c[1]), (CANVAS - 40, c[1] + 25)],
            fill=255,
            width=width,
            joint="curve",
        )
    return canvas


def _combined(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray) -> Image.Image:
    """Two different digits side by side."""
    i, j = rng.integers(len(labels), size=2)
    while labels[j] == labels[i]:
        j = rng.integers(len(labels))
    a, b = digits[i], digits[j]
    # overlaid or cut digits were left out: a 1 on a 7, or half an 8, is too often a digit still
    gap = int(rng.integers(0, 4))
    return Image.fromarray(np.hstack([a, np.zeros((28, gap), np.uint8), b]))


def make_non_digits(
    n: int,
    seed: int,
    digits: np.ndarray,
    labels: np.ndarray,
    fonts: tuple[str, ...] = TRAIN_FONTS,
    weights: tuple[float, ...] = (0.4, 0.2, 0.15, 0.25),
) -> tuple[np.ndarray, np.ndarray]:
    """`n` non-digit images (n, 28, 28) uint8, framed as served, and each one's kind index."""
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    while len(images) < n:
        kind = int(rng.choice(len(KINDS), p=np.asarray(weights) / sum(weights)))
        canvas = None
        if KINDS[kind] == "glyph":
            canvas = _glyph(rng, fonts)
        elif KINDS[kind] == "scribble":
            canvas = _scribble(rng)
        elif KINDS[kind] == "shape":
            canvas = _shape(rng)
        else:
            canvas = _combined(rng, digits, labels)
        framed = None if canvas is None else preprocess_image(np.asarray(canvas))
        if framed is None:
            continue
        images.append(np.clip(np.rint(framed[0, 0] * 255), 0, 255).astype(np.uint8))
        kinds.append(kind)
    return np.stack(images), np.asarray(kinds)
