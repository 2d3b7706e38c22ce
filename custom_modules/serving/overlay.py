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


FOR_COLOUR = np.array([40.0, 230.0, 90.0], dtype=np.float32)  # green, as the attention maps
AGAINST_COLOUR = np.array([230.0, 60.0, 200.0], dtype=np.float32)  # magenta


def signed_overlay(
    pixels: np.ndarray, saliency: np.ndarray, size: int = 224, opacity: float = 0.7
) -> np.ndarray:
    """An (size, size, 3) uint8 image: the input in grey, a signed 7x7 map on it, positive cells
    green and negative ones magenta, both scaled to the map's largest magnitude."""
    saliency = np.asarray(saliency, dtype=np.float32)
    peak = float(np.abs(saliency).max())
    weight = saliency / peak if peak > 0 else np.zeros_like(saliency)
    weight = upscale_nearest(weight, size // saliency.shape[0])[..., None]
    alpha = np.abs(weight) * opacity
    colour = np.where(weight >= 0, FOR_COLOUR, AGAINST_COLOUR)
    grey = upscale_nearest(pixels.astype(np.float32), size // pixels.shape[0])[..., None]
    blended = grey * (1 - alpha) + colour * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
