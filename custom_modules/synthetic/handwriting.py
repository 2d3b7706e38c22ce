"""Digits as a person would hand them to the app: brush strokes on the canvas, other hands, paper.

Torch-free (numpy and Pillow). Each maker takes a 28x28 uint8 MNIST digit (or a label, for the
font digits) and a numpy Generator, and returns what the app would receive: an RGBA canvas
drawing, or the bytes of a photo-like JPEG upload.
"""

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from custom_modules.synthetic.non_digits import HELD_OUT_FONTS, TRAIN_FONTS, load_font

CANVAS_SIZE = 280  # the app's drawing surface, in px
PHOTO_MARGIN = CANVAS_SIZE // 4  # paper around a photographed drawing, in px
TILT_SCALE = np.array([1, 1, 0.5, 1, 1, 0.5, 5e-4, 5e-4])  # a photo's tilt: shifts <= 4 % of it

_NEIGHBOURS = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]  # P2..P9


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean image to one-pixel-wide lines (the pen's path)."""
    image = np.pad(mask.astype(bool), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = [np.roll(image, (-dy, -dx), axis=(0, 1)) for dy, dx in _NEIGHBOURS]
            count = sum(q.astype(int) for q in p)
            transitions = sum((~p[k] & p[(k + 1) % 8]).astype(int) for k in range(8))
            if step == 0:
                ends = ~(p[0] & p[2] & p[4]) & ~(p[2] & p[4] & p[6])
            else:
                ends = ~(p[0] & p[2] & p[6]) & ~(p[0] & p[4] & p[6])
            remove = image & (count >= 2) & (count <= 6) & (transitions == 1) & ends
            if remove.any():
                image &= ~remove
                changed = True
        if not changed:
            return image[1:-1, 1:-1]


def _canvas_rgba(alpha: Image.Image) -> np.ndarray:
    """White ink whose coverage is the alpha channel, as the app's canvas returns it."""
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE, 4), dtype=np.uint8)
    canvas[..., :3] = 255
    canvas[..., 3] = np.asarray(alpha)
    return canvas


def _disk(radius: float) -> np.ndarray:
    """A round structuring element of the given radius in px (at least the centre pixel)."""
    n = math.ceil(radius)
    ys, xs = np.mgrid[-n : n + 1, -n : n + 1]
    return xs**2 + ys**2 <= max(radius, 0.5) ** 2


def pen_path(ink: np.ndarray) -> np.ndarray:
    """Where a pen went to make `ink` (bool): its centre line, and the inside of any blob.

    A loop a thick pen closed is a blob, whose centre line is a mere stroke (a 9 would become a
    1); the blob's inside, what stays after opening away the usual strokes, keeps it filled."""
    path = skeleton(ink)
    if not path.any():
        return path
    half_width = float(np.median(ndimage.distance_transform_edt(ink)[path]))
    blobs = ndimage.binary_opening(ink, _disk(1.5 * half_width))
    return path | ndimage.binary_erosion(blobs, _disk(half_width))


def draw_as_strokes(
    digit: np.ndarray, rng: np.random.Generator, pen_range: tuple[float, float] = (0.04, 0.16)
) -> np.ndarray:
    """The digit's pen path drawn with a round brush: any size and place, a pen `pen_range` of
    the path's size wide (the default: MNIST's pens and thinner; 0.25-0.5, a wide brush: a pen
    ratio, `pen_ratio` of the drawn digit, of about 0.2-0.33)."""
    big = np.asarray(Image.fromarray(digit).resize((56, 56), Image.Resampling.BILINEAR))
    path = pen_path(big >= 100)
    ys, xs = np.nonzero(path)
    if len(ys) == 0:
        ys, xs = np.nonzero(big >= 100)
    side = rng.uniform(60, CANVAS_SIZE - 30)  # the digit's box on the canvas
    box = max(np.ptp(ys), np.ptp(xs), 1)
    scale = side / box
    pen = float(rng.uniform(*pen_range)) * side  # pen width relative to the digit's size
    margin = pen / 2 + 2
    room_x = CANVAS_SIZE - np.ptp(xs) * scale - 2 * margin
    room_y = CANVAS_SIZE - np.ptp(ys) * scale - 2 * margin
    left = margin + rng.uniform(0, max(room_x, 0)) - xs.min() * scale
    top = margin + rng.uniform(0, max(room_y, 0)) - ys.min() * scale
    alpha = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE))
    draw = ImageDraw.Draw(alpha)
    points = set(zip(ys.tolist(), xs.tolist(), strict=True))
    r = pen / 2
    for y, x in points:
        cx, cy = left + x * scale, top + y * scale
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):  # join neighbouring path pixels
            if (y + dy, x + dx) in points:
                draw.line(
                    [(cx, cy), (cx + dx * scale, cy + dy * scale)],
                    fill=255,
                    width=max(1, round(pen)),
                )
    return _canvas_rgba(alpha)


def other_hand(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The digit as another writer might form it: slant, proportions, wobble and pen, on canvas."""
    image = Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC)
    image = image.crop((-40, -40, 152, 152))  # room to slant and stretch
    shear = rng.uniform(-0.45, 0.45)
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.4)))
    angle = math.radians(rng.uniform(-12, 12))
    cos, sin = math.cos(angle), math.sin(angle)
    # PIL's affine maps output to input coordinates, about the image centre
    a, b = cos / aspect, (cos * shear - sin)
    d, e = sin / aspect, (sin * shear + cos)
    c0 = 96
    image = image.transform(
        image.size,
        Image.Transform.AFFINE,
        (a, b, c0 - a * c0 - b * c0, d, e, c0 - d * c0 - e * c0),
        resample=Image.Resampling.BILINEAR,
    )
    field = _smooth_field(rng, image.size[0], strength=rng.uniform(0, 6))
    pixels = _warp(np.asarray(image, np.float32), field)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    pen = int(rng.integers(-2, 4))
    if pen > 0:
        image = image.filter(ImageFilter.MaxFilter(2 * pen + 1))
    elif pen < 0:
        image = image.filter(ImageFilter.MinFilter(2 * -pen + 1))
    return _place_on_canvas(image, rng)


def font_digit(label: int, rng: np.random.Generator, held_out: bool = True) -> np.ndarray:
    """A digit from a font, drawn with a random pen and a slight wobble: handwriting-like shapes."""
    fonts = HELD_OUT_FONTS if held_out else TRAIN_FONTS
    font = load_font(fonts[rng.integers(len(fonts))], int(rng.integers(90, 140)))
    image = Image.new("L", (192, 192))
    ImageDraw.Draw(image).text(
        (96, 96),
        str(label),
        fill=255,
        font=font,
        anchor="mm",
        stroke_width=int(rng.integers(0, 6)),
        stroke_fill=255,
    )
    field = _smooth_field(rng, 192, strength=rng.uniform(0, 5))
    pixels = _warp(np.asarray(image, np.float32), field)
    return _place_on_canvas(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), rng)


def _smooth_field(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """A smooth displacement field (2, size, size) in px: coarse noise, upsampled."""
    coarse = rng.uniform(-1, 1, size=(2, 5, 5)).astype(np.float32)
    return (
        np.stack(
            [
                np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BICUBIC))
                for c in coarse
            ]
        )
        * strength
    )


def _warp(pixels: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling at the displaced positions."""
    h, w = pixels.shape
    ys, xs = np.indices((h, w))
    sy = np.clip(np.rint(ys + field[1]), 0, h - 1).astype(int)
    sx = np.clip(np.rint(xs + field[0]), 0, w - 1).astype(int)
    return pixels[sy, sx]


def _place_on_canvas(ink: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Crop to the ink, scale to a random size and paste at a random place on the canvas."""
    box = ink.getbbox() or (0, 0, ink.width, ink.height)
    ink = ink.crop(box)
    side = rng.uniform(60, CANVAS_SIZE - 20)
    scale = side / max(ink.size)
    ink = ink.resize(
        (max(1, round(ink.width * scale)), max(1, round(ink.height * scale))),
        Image.Resampling.BILINEAR,
    )
    alpha = Image.new("L", (CANVAS_SIZE, CANVAS_SIZE))
    alpha.paste(
        ink,
        (
            int(rng.integers(0, CANVAS_SIZE - ink.width + 1)),
            int(rng.integers(0, CANVAS_SIZE - ink.height + 1)),
        ),
    )
    return _canvas_rgba(alpha)


def photo_of_paper(canvas: np.ndarray, rng: np.random.Generator) -> bytes:
    """A canvas drawing as a phone photo of dark ink on paper: tilt, light, blur, noise, JPEG.

    The drawing lies on a sheet PHOTO_MARGIN wider on each side, and the tilt turns about the
    sheet's centre, so the photo frames the whole digit as a person taking it would."""
    ink = np.pad(canvas[..., 3], PHOTO_MARGIN).astype(np.float32) / 255
    size = ink.shape[0]
    paper = np.array(rng.uniform([200, 190, 170], [250, 250, 245]), np.float32)
    ink_colour = np.array(rng.uniform([10, 10, 20], [70, 70, 120]), np.float32)
    ys, xs = np.indices((size, size), dtype=np.float32) / size
    light = 1 - rng.uniform(0, 0.35) * (rng.uniform(-1, 1) * xs + rng.uniform(-1, 1) * ys) ** 2
    rgb = paper * light[..., None] * (1 - ink[..., None]) + ink_colour * ink[..., None]
    rgb += rng.normal(0, rng.uniform(2, 8), rgb.shape)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    a, b, shift_x, d, e, shift_y, g, h = (
        np.array([1, 0, 0, 0, 1, 0, 0, 0]) + rng.uniform(-0.08, 0.08, size=8) * TILT_SCALE
    )
    centre = size / 2  # (a, b; d, e) turn about it; the shifts stay within the margin
    coeffs = (
        a, b, shift_x * size + centre * (1 - a - b),
        d, e, shift_y * size + centre * (1 - d - e),
        g, h,
    )  # fmt: skip
    image = image.transform(
        image.size,
        Image.Transform.PERSPECTIVE,
        coeffs,
        resample=Image.Resampling.BILINEAR,
        fillcolor=tuple(paper.astype(int)),
    )
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(55, 92)))
    return out.getvalue()
