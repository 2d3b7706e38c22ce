"""Augmentation for real handwriting: another writer's style, framed as served inputs are.

Served drawings go through crop -> longest side 20 px -> centre of mass at the centre
(`preprocess_image`). `reframe_like_serving` does the same to a batch of tensors in one
`grid_sample`, so the model trains on what it will be shown.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from custom_modules.contract import IMAGE_SIZE
from custom_modules.serving.preprocess import DIGIT_SIZE, INK_LEVEL, NOISE_FLOOR
from custom_modules.training.augment import elastic_field

PAD = 6  # px of room on each side for a digit that slants or stretches past 28 px


@dataclass(frozen=True)
class StyleAugment:
    """How far a training digit's style is pushed: geometry, elastic field, pen, blur."""

    max_degrees: float = 15.0
    max_shear: float = 0.35
    aspect_range: tuple[float, float] = (0.7, 1.3)
    elastic_alpha: float = 20.0
    elastic_sigma: float = 4.0
    elastic_p: float = 0.5
    pen_p: tuple[float, float, float, float] = (0.2, 0.4, 0.3, 0.1)  # thinner, as is, +1, +2 px
    blur_p: float = 0.3
    reframe: bool = True  # framed as served; False keeps MNIST's frame (the parity ablation)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _dilate(images: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(images, 3, stride=1, padding=1)


def _erode(images: torch.Tensor) -> torch.Tensor:
    # a thin pen still lays full ink: brighten what the erosion left of the stroke's core
    return (-F.max_pool2d(-images, 3, stride=1, padding=1) * 1.6).clamp(max=1.0)


def pen_width(images: torch.Tensor, probs, generator: torch.Generator) -> torch.Tensor:
    """Each image drawn with a thinner pen, the same, or 1-2 px thicker (grey morphology)."""
    B = images.shape[0]
    choice = torch.multinomial(
        torch.tensor(probs, device=images.device).expand(B, -1), 1, generator=generator
    ).view(B, 1, 1, 1)
    thicker, thinner = _dilate(images), _erode(images)
    # a stroke already thin would break apart: those keep their pen
    mass = images.sum(dim=(1, 2, 3), keepdim=True)
    thinner = torch.where(thinner.sum(dim=(1, 2, 3), keepdim=True) >= 0.5 * mass, thinner, images)
    variants = torch.stack([thinner, images, thicker, _dilate(thicker)])  # (4, B, 1, H, W)
    return variants.gather(0, choice.unsqueeze(0).expand(1, *images.shape))[0]


def blur(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """A 3x3 binomial blur on a random share p of the batch: softer, photographed edges."""
    kernel = images.new_tensor([1.0, 2.0, 1.0]) / 4
    soft = F.conv2d(images, kernel.view(1, 1, 1, 3), padding=(0, 1))
    soft = F.conv2d(soft, kernel.view(1, 1, 3, 1), padding=(1, 0))
    pick = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(pick.view(-1, 1, 1, 1), soft, images)


def style_warp(images: torch.Tensor, cfg: StyleAugment, generator: torch.Generator):
    """Rotation, shear, aspect ratio and (for a share) an elastic field, in one grid_sample."""
    B, device = images.shape[0], images.device
    angle = _uniform(B, -cfg.max_degrees, cfg.max_degrees, generator, device) * (math.pi / 180)
    shear = _uniform(B, -cfg.max_shear, cfg.max_shear, generator, device)
    log_aspect = _uniform(B, *(math.log(a) for a in cfg.aspect_range), generator, device)
    sx, sy = torch.exp(log_aspect / 2), torch.exp(-log_aspect / 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation @ shear @ aspect, as a map from output to input coordinates
    a, b = cos * sx, (cos * shear - sin) * sy
    c, d = sin * sx, (sin * shear + cos) * sy
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([a, b, zero], 1), torch.stack([c, d, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    if cfg.elastic_alpha > 0:
        H, W = images.shape[-2:]
        field = elastic_field((B, H, W), generator, cfg.elastic_alpha, cfg.elastic_sigma, device)
        on = torch.rand(B, generator=generator, device=device) < cfg.elastic_p
        grid = grid + field * on.view(B, 1, 1, 1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def reframe_like_serving(images: torch.Tensor) -> torch.Tensor:
    """Crop to the ink box, scale its longer side to 20 px, centre of mass to the centre.

    Mirrors `preprocess_image` for a batch (B, 1, 28, 28) in [0, 1]: contrast stretch, noise
    floor, box and centre of mass. An image with no ink comes back unchanged.
    """
    B, _, H, W = images.shape
    peak = images.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    images = images / peak
    images = images * (images >= NOISE_FLOOR)
    ink = images[:, 0] >= INK_LEVEL  # (B, H, W)
    rows, cols = ink.any(dim=2), ink.any(dim=1)  # (B, H), (B, W)
    index_h = torch.arange(H, device=images.device)
    index_w = torch.arange(W, device=images.device)
    top = torch.where(rows, index_h, H).amin(1)
    bottom = torch.where(rows, index_h, -1).amax(1)
    left = torch.where(cols, index_w, W).amin(1)
    right = torch.where(cols, index_w, -1).amax(1)
    has_ink = bottom >= top
    side = torch.maximum(bottom - top + 1, right - left + 1).clamp_min(1).float()
    scale = DIGIT_SIZE / side  # output px per input px
    mass = images[:, 0].sum(dim=(1, 2)).clamp_min(1e-6)
    centre_y = (images[:, 0].sum(2) * index_h).sum(1) / mass
    centre_x = (images[:, 0].sum(1) * index_w).sum(1) / mass
    # as served, the centre moves so that the whole box stays in the 28 px frame
    reach = IMAGE_SIZE / 2 / scale  # input px from the centre to the frame's edge
    centre_y = torch.minimum(torch.maximum(centre_y, bottom + 1 - reach), top + reach)
    centre_x = torch.minimum(torch.maximum(centre_x, right + 1 - reach), left + reach)
    # output index i reads input index centre + (i - 14) / scale (derivation in the docstring's
    # terms: the resized box is pasted so that its centre of mass lands on index 14)
    inv = 1 / scale
    tx = (2 * centre_x + 1) / W - 1 - inv / W
    ty = (2 * centre_y + 1) / H - 1 - inv / H
    zero = torch.zeros_like(inv)
    # in grid units an output step is 2/28 and an input step 2/W (or 2/H)
    theta = torch.stack(
        [
            torch.stack([inv * IMAGE_SIZE / W, zero, tx], 1),
            torch.stack([zero, inv * IMAGE_SIZE / H, ty], 1),
        ],
        1,
    )
    identity = images.new_tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(B, 2, 3)
    theta = torch.where(has_ink.view(B, 1, 1), theta, identity)
    grid = F.affine_grid(theta, [B, 1, IMAGE_SIZE, IMAGE_SIZE], align_corners=False)
    framed = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return framed.clamp(0, 1)


def augment_batch(images: torch.Tensor, cfg: StyleAugment, generator: torch.Generator):
    """A new writer's version of each image, framed as serving frames it."""
    images = F.pad(images, (PAD, PAD, PAD, PAD))
    images = style_warp(images, cfg, generator)
    images = pen_width(images, cfg.pen_p, generator)
    images = blur(images, cfg.blur_p, generator)
    if not cfg.reframe:
        return images[..., PAD:-PAD, PAD:-PAD]
    return reframe_like_serving(images)
