"""A drawing or photo of a digit made into the model's input, the way MNIST's digits were made."""

import numpy as np
from PIL import Image, ImageFilter

from custom_modules.contract import IMAGE_SIZE

DIGIT_SIZE = 20  # MNIST scales each digit's box so its longer side is 20 px
MIN_CONTRAST = 0.2  # ink minus background, on a 0..1 scale; less is an empty page
INK_LEVEL = 0.2  # a pixel at least this far above the background is ink
# On light paper the ink's box is found from its darker part: a photo's paper edges and the
# shading its light correction leaves are faint ink, and widened the box (docs/serving.md)
PAPER_BOX_LEVEL = 0.65
# Paper in a shadow is greyer than this (a dark canvas or scan is darker): its ink is then told
# from the page by being the rarer extreme; EXTREME_BAND of the range counts as either extreme
SHADOWED_PAPER = 0.15
EXTREME_BAND = 0.25
NOISE_FLOOR = 0.08  # fainter than this after the contrast stretch: paper texture, JPEG noise
MIN_INK_FRACTION = 5e-4  # a digit covers more than a few stray pixels
MIN_INK_PIXELS = 3
SHADING_PIXELS = 64  # the page's shading is estimated at this size: it varies slowly
SHADING_WINDOW = 0.2  # wider than a pen stroke, as a share of the page's longer side
# The estimate is widened by this many of its pixels: scaled back up, a sharp edge (the sheet's,
# a shadow's) would otherwise leave a bright seam of "ink" along it (docs/serving.md)
SHADING_GROWTH = 5
# Ink in a shadow is only as much darker than its paper as the paper is lit: it is brightened by
# the paper's lack of light against its best-lit paper (LIT_PAPER_QUANTILE), up to MAX_LIGHT_GAIN;
# a full division magnifies what the light estimate misses (docs/serving.md, "The ink in the
# shadow")
LIT_PAPER_QUANTILE = 0.95
MAX_LIGHT_GAIN = 1.5
# A pen thinner than this share of the digit's longer side is widened to it: 95 % of MNIST's
# digits have a wider one (5th percentile 0.104 on 2000 validation digits), and thin pens are
# what the models misread most (docs/serving.md, "The pen's width").
MIN_PEN_RATIO = 0.10
PEN_WORK_SIZE = 80  # px: the pen is measured and widened on a copy at most this big (4x the box)


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


def _page_shading(grey: np.ndarray) -> np.ndarray:
    """The light falling on a photographed page, under (inverted) ink: a grey opening wider than
    any pen stroke, taken on a copy of at most SHADING_PIXELS a side, widened by SHADING_GROWTH
    and scaled back up."""
    height, width = grey.shape
    scale = min(1.0, SHADING_PIXELS / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(grey.astype(np.float32)).resize(size, Image.Resampling.BILINEAR)
    window = max(3, round(max(size) * SHADING_WINDOW) | 1)  # odd, as rank filters need
    opened = small.filter(ImageFilter.MinFilter(window)).filter(ImageFilter.MaxFilter(window))
    opened = opened.filter(ImageFilter.MaxFilter(SHADING_GROWTH))
    return np.asarray(opened.resize((width, height), Image.Resampling.BILINEAR))


def _border_median(grey: np.ndarray) -> float:
    return float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))


def _is_dark_ink(grey: np.ndarray) -> bool:
    """Whether the ink is darker than its page. A light border says so; a grey one may be paper
    in a shadow, and then the ink is the rarer of the image's two extremes (ink is sparse)."""
    border = _border_median(grey)
    if border > 0.5 or border < SHADOWED_PAPER:
        return border > 0.5
    low, high = float(grey.min()), float(grey.max())
    band = EXTREME_BAND * (high - low)
    return np.mean(grey <= low + band) < np.mean(grey >= high - band)


def _ink_map(grey: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Light ink on a zero background, stretched to [0, 1], and the level the ink's box is found
    at; None when there is no contrast."""
    box_level = INK_LEVEL
    if _is_dark_ink(grey):  # dark ink on paper: a photo, whose light may fall unevenly
        lack_of_light = _page_shading(1.0 - grey)  # (H, W)
        light = 1.0 - lack_of_light
        lit_paper = float(np.quantile(light, LIT_PAPER_QUANTILE))
        gain = np.clip(lit_paper / np.maximum(light, 1e-3), 1.0, MAX_LIGHT_GAIN)
        grey = np.clip((1.0 - grey - lack_of_light) * gain, 0.0, 1.0)
        box_level = PAPER_BOX_LEVEL
    background = _border_median(grey)
    contrast = float(grey.max()) - background
    if contrast < MIN_CONTRAST:
        return None
    ink = np.clip((grey - background) / contrast, 0.0, 1.0)
    ink[ink < NOISE_FLOOR] = 0.0
    return ink, box_level


def ink_box(is_ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom), inclusive, of the True pixels of an (H, W) mask; None if none."""
    if not is_ink.any():
        return None
    rows, cols = np.flatnonzero(is_ink.any(axis=1)), np.flatnonzero(is_ink.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _crop_to_ink(ink: np.ndarray, box_level: float) -> np.ndarray | None:
    """The box of the ink at least `box_level` bright (the stretched ink reaches 1), or None
    when there is too little ink to be a digit."""
    if (ink >= INK_LEVEL).sum() < max(MIN_INK_PIXELS, MIN_INK_FRACTION * ink.size):
        return None
    left, top, right, bottom = ink_box(ink >= box_level)
    return ink[top : bottom + 1, left : right + 1]


def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    """An anti-aliased resize of a float image in [0, 1] by `scale`, each side at least 1 px."""
    height, width = image.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(image.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized), 0.0, 1.0)


def pen_ratio(digit: np.ndarray) -> float:
    """The pen's width as a share of the cropped digit's longer side: 2 x ink area / ink outline,
    which a stroke of width w and length L >> w gives as 2wL / 2L = w."""
    is_ink = np.pad(digit >= 0.5, 1)
    area = int(is_ink.sum())
    if area == 0:
        return 0.0
    centre = is_ink[1:-1, 1:-1]
    inside = centre & is_ink[:-2, 1:-1] & is_ink[2:, 1:-1] & is_ink[1:-1, :-2] & is_ink[1:-1, 2:]
    outline = area - int(inside.sum())
    return 2 * area / max(outline, 1) / max(digit.shape)


def _even_pen(digit: np.ndarray) -> np.ndarray:
    """The cropped digit, its strokes widened (grey dilation) when the pen is thinner than
    MIN_PEN_RATIO of its size; returned as it is otherwise."""
    longer = max(digit.shape)
    work = digit if longer <= PEN_WORK_SIZE else _scaled(digit, PEN_WORK_SIZE / longer)
    ratio = pen_ratio(work)
    if ratio >= MIN_PEN_RATIO:
        return digit
    window = max(3, round((MIN_PEN_RATIO - ratio) * max(work.shape)) | 1)  # odd, as needed
    work = np.pad(work, window // 2)
    widened = Image.fromarray(work.astype(np.float32)).filter(ImageFilter.MaxFilter(window))
    return np.asarray(widened)


def _fit_digit_box(digit: np.ndarray) -> np.ndarray:
    """Anti-aliased resize so that the longer side is DIGIT_SIZE px, keeping the aspect ratio."""
    return _scaled(digit, DIGIT_SIZE / max(digit.shape))


def _bilinear_taps(coords: np.ndarray, size: int) -> np.ndarray:
    """(len(coords), size) weights that read a row of `size` pixels at each coordinate by linear
    interpolation; taps outside the row read zero."""
    low = np.floor(coords).astype(np.int64)
    frac = (coords - low).astype(np.float32)
    taps = np.zeros((len(coords), size), np.float32)
    for index, weight in ((low, 1.0 - frac), (low + 1, frac)):
        inside = (index >= 0) & (index < size)
        taps[np.flatnonzero(inside), index[inside]] += weight[inside]
    return taps


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Sample the digit into a 28x28 frame with its centre of mass at the centre, to the
    sub-pixel, by bilinear interpolation, as training frames its digits (`reframe_like_serving`);
    the shift is clipped so that the whole digit stays in the frame."""
    height, width = digit.shape
    mass = float(digit.sum())
    if mass > 0:
        centre_y = float(digit.sum(1) @ np.arange(height)) / mass
        centre_x = float(digit.sum(0) @ np.arange(width)) / mass
    else:
        centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    reach = IMAGE_SIZE / 2  # px from the centre to the frame's edge
    centre_y = min(max(centre_y, height - reach), reach)
    centre_x = min(max(centre_x, width - reach), reach)
    # output index i reads the digit at centre + i - 14: MNIST's centres of mass sit at 14.0
    offsets = np.arange(IMAGE_SIZE) - reach
    rows = _bilinear_taps(centre_y + offsets, height)  # (28, H)
    cols = _bilinear_taps(centre_x + offsets, width)  # (28, W)
    return np.clip(rows @ digit @ cols.T, 0.0, 1.0)


def preprocess_image(image: np.ndarray) -> np.ndarray | None:
    """Turn a drawing or photo of a digit into the model's input, as MNIST was made.

    Accepts an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array that is uint8 (0..255), bool, or
    float (any width) in [0, 1]; anything else raises ValueError. Light ink on a dark or transparent
    background and dark ink on light paper both work; a pen thinner than MIN_PEN_RATIO of the
    digit is widened to it. Returns the model's input: pixels in [0, 1],
    light ink on black, as a (1, 1, 28, 28) float32 array (the exported graph normalises them);
    or None when the image is blank (no contrast, or only a few stray pixels of ink).
    """
    found = _ink_map(_to_grey(_as_float_image(image)))
    if found is None:
        return None
    digit = _crop_to_ink(*found)
    if digit is None:
        return None
    frame = _centre_by_mass(_fit_digit_box(_even_pen(digit)))
    return frame[None, None].astype(np.float32)
