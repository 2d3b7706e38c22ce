"""What the app shows: the model input as grey levels, attention maps as green layers on it."""

import numpy as np

from custom_modules.contract import IMAGE_SIZE, PIXEL_MAX


def as_uint8(x: np.ndarray) -> np.ndarray:
    """The model input, (1, 1, 28, 28) or (28, 28) pixels in [0, 1], as a (28, 28) uint8 image."""
    image = np.asarray(x, dtype=np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE)
    return np.clip(np.rint(image * PIXEL_MAX), 0, PIXEL_MAX).astype(np.uint8)


def upscale_nearest(image: np.ndarray, factor: int) -> np.ndarray:
    """Blow each pixel of an (H, W) or (H, W, C) image up into a factor x factor block."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


GREEN = np.array([40.0, 230.0, 90.0], dtype=np.float32)  # for: attention, and what speaks for
MAGENTA = np.array([230.0, 60.0, 200.0], dtype=np.float32)  # against


def _blend(pixels: np.ndarray, weight: np.ndarray, colour: np.ndarray, size: int) -> np.ndarray:
    """The grey input with `colour` laid over it at `weight` (a 7x7 map, per cell), size x size.

    Blended at the input's own 28x28 resolution and blown up once, in uint8: the same image as
    blending at full size (every value is constant on each pixel's block), 36x less arithmetic.
    """
    if size % IMAGE_SIZE:
        raise ValueError(f"size must be a multiple of {IMAGE_SIZE}, got {size}")
    cell = IMAGE_SIZE // weight.shape[0]
    alpha = upscale_nearest(weight, cell)[..., None]  # (28, 28, 1)
    colour = upscale_nearest(colour, cell) if colour.ndim == 3 else colour
    grey = pixels.astype(np.float32)[..., None]
    blended = np.clip(np.rint(grey * (1 - alpha) + colour * alpha), 0, 255).astype(np.uint8)
    return upscale_nearest(blended, size // IMAGE_SIZE)


def attention_overlay(
    pixels: np.ndarray, attention: np.ndarray, size: int = 224, opacity: float = 0.6
) -> np.ndarray:
    """An (size, size, 3) uint8 image: the 28x28 input in grey, the 7x7 map as a green layer.

    The map is scaled to its own maximum, so every head uses the full range of green.
    """
    attention = np.asarray(attention, dtype=np.float32)
    peak = float(attention.max())
    weight = attention / peak if peak > 0 else np.zeros_like(attention)
    return _blend(pixels, weight * opacity, GREEN, size)


def signed_overlay(
    pixels: np.ndarray, saliency: np.ndarray, size: int = 224, opacity: float = 0.7
) -> np.ndarray:
    """An (size, size, 3) uint8 image: the input in grey, a signed 7x7 map on it, positive cells
    green and negative ones magenta, both scaled to the map's largest magnitude."""
    saliency = np.asarray(saliency, dtype=np.float32)
    peak = float(np.abs(saliency).max())
    weight = saliency / peak if peak > 0 else np.zeros_like(saliency)
    colour = np.where(weight[..., None] >= 0, GREEN, MAGENTA)  # (7, 7, 3)
    return _blend(pixels, np.abs(weight) * opacity, colour, size)
