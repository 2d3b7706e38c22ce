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
    continental_p: float = 0.0  # share of 1s given a flag and 7s a bar (`continental_forms`)
    plain_p: float = 0.0  # share kept in MNIST's own style: only framed as served
    thick_p: float = 0.0  # share given the widest pen, 3 steps thicker (`pen_width`)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _dilate(images: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(images, 3, stride=1, padding=1)


def _erode(images: torch.Tensor) -> torch.Tensor:
    # a thin pen still lays full ink: brighten what the erosion left of the stroke's core
    return (-F.max_pool2d(-images, 3, stride=1, padding=1) * 1.6).clamp(max=1.0)


def pen_width(
    images: torch.Tensor, probs, generator: torch.Generator, thick_p: float = 0.0
) -> torch.Tensor:
    """Each image drawn with a thinner pen, the same, or 1-2 steps thicker (grey morphology,
    `probs`); with `thick_p`, that share 3 steps thicker instead (a pen about a third of the
    digit's height: a small digit drawn with a wide brush), the rest in proportion."""
    B = images.shape[0]
    if thick_p > 0:  # only then a fifth choice: the draws of recipes without it stay as they were
        probs = [p * (1 - thick_p) for p in probs] + [thick_p]
    choice = torch.multinomial(
        torch.tensor(probs, device=images.device).expand(B, -1), 1, generator=generator
    ).view(B, 1, 1, 1)
    thicker, thinner = _dilate(images), _erode(images)
    # a stroke already thin would break apart: those keep their pen
    mass = images.sum(dim=(1, 2, 3), keepdim=True)
    thinner = torch.where(thinner.sum(dim=(1, 2, 3), keepdim=True) >= 0.5 * mass, thinner, images)
    pens = [thinner, images, thicker, _dilate(thicker)]
    if thick_p > 0:
        pens.append(_dilate(pens[-1]))
    variants = torch.stack(pens)  # (4 or 5, B, 1, H, W)
    return variants.gather(0, choice.unsqueeze(0).expand(1, *images.shape))[0]


def blur(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """A 3x3 binomial blur on a random share p of the batch: softer, photographed edges."""
    kernel = images.new_tensor([1.0, 2.0, 1.0]) / 4
    soft = F.conv2d(images, kernel.view(1, 1, 1, 3), padding=(0, 1))
    soft = F.conv2d(soft, kernel.view(1, 1, 3, 1), padding=(1, 0))
    pick = torch.rand(images.shape[0], generator=generator, device=images.device) < p
    return torch.where(pick.view(-1, 1, 1, 1), soft, images)


def _segment_ink(
    size: tuple[int, int], start: torch.Tensor, end: torch.Tensor, pen: torch.Tensor
) -> torch.Tensor:
    """Ink (B, 1, H, W) of one straight stroke per image, `start` to `end` (B, 2) as (x, y) px,
    `pen` (B,) px wide, its edge anti-aliased over one pixel."""
    ys, xs = torch.meshgrid(
        *(torch.arange(n, dtype=start.dtype, device=start.device) for n in size), indexing="ij"
    )
    points = torch.stack([xs, ys], -1)  # (H, W, 2)
    a, ab = start[:, None, None], (end - start)[:, None, None]  # (B, 1, 1, 2)
    t = (((points - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)).clamp(0, 1)
    distance = (points - (a + t[..., None] * ab)).norm(dim=-1)  # (B, H, W)
    return (pen.view(-1, 1, 1) / 2 + 0.5 - distance).clamp(0, 1)[:, None]


def ink_span(inked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first and last inked index (B,) of each row of `inked` (B, L); L and -1 for none."""
    length = inked.shape[1]
    index = torch.arange(length, device=inked.device)
    return torch.where(inked, index, length).amin(1), torch.where(inked, index, -1).amax(1)


def continental_forms(
    images: torch.Tensor, labels: torch.Tensor, p: float, generator: torch.Generator
) -> torch.Tensor:
    """A share p of the 1s given a flag from the top (a third of those a foot too) and of the 7s
    a bar across the stem: the forms many writers outside the US use, and MNIST's seldom did.

    `images` (B, 1, 28, 28) in [0, 1] as MNIST frames them; `labels` (B,), -1 for no digit."""
    B, _, H, W = images.shape
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return _uniform(B, low, high, generator, device)

    ink = images[:, 0] >= 0.5  # (B, H, W)
    rows = torch.arange(H, device=device)
    top, bottom = ink_span(ink.any(2))
    height = (bottom - top + 1).clamp_min(1).float()
    pen = (ink.sum((1, 2)) / height).clamp(1.5, 4.0)  # a 1's or 7's stroke: ink per row

    def ink_x(row: torch.Tensor) -> torch.Tensor:
        """The ink's mean column (B,) over three rows from `row` (B,)."""
        band = (rows >= row[:, None]) & (rows <= row[:, None] + 2)  # (B, H)
        weights = (images[:, 0] * band[:, :, None]).sum(1)  # (B, W)
        columns = torch.arange(W, dtype=images.dtype, device=device)
        return (weights * columns).sum(1) / weights.sum(1).clamp_min(1e-6)

    picked = (torch.rand(B, generator=generator, device=device) < p) & (bottom >= top)
    ones, sevens = picked & (labels == 1), picked & (labels == 7)
    feet = ones & (torch.rand(B, generator=generator, device=device) < 1 / 3)
    # the flag leaves the stem's top at an acute angle, down to the left of the stem
    top_x, foot_x = ink_x(top), ink_x(bottom - 2)
    stem = torch.stack([foot_x - top_x, height], 1)
    stem = stem / stem.norm(dim=1, keepdim=True)  # (B, 2), pointing down
    angle = uniform(35, 65) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    down_x, down_y = stem[:, 0], stem[:, 1]
    flag = torch.stack([down_x * cos - down_y * sin, down_x * sin + down_y * cos], 1)
    flag_start = torch.stack([top_x, top.float()], 1)
    flag_end = flag_start + flag * (uniform(0.2, 0.4) * height)[:, None]
    foot_half = uniform(0.15, 0.3) * height
    foot_y = bottom.float()
    foot_start = torch.stack([foot_x - foot_half, foot_y], 1)
    foot_end = torch.stack([foot_x + foot_half, foot_y], 1)
    # the bar crosses the 7's stem about halfway down, about level
    bar_y = top + uniform(0.45, 0.6) * height
    bar_x = ink_x(bar_y.round().long() - 1)
    bar_half = uniform(0.12, 0.22) * height
    bar_tilt = uniform(-0.15, 0.15) * bar_half
    bar_start = torch.stack([bar_x - bar_half, bar_y + bar_tilt], 1)
    bar_end = torch.stack([bar_x + bar_half, bar_y - bar_tilt], 1)
    strokes = (
        _segment_ink((H, W), flag_start, flag_end, pen) * ones.view(B, 1, 1, 1)
        + _segment_ink((H, W), foot_start, foot_end, pen) * feet.view(B, 1, 1, 1)
        + _segment_ink((H, W), bar_start, bar_end, pen) * sevens.view(B, 1, 1, 1)
    )
    return torch.maximum(images, strokes.clamp(max=1.0))


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
    top, bottom = ink_span(ink.any(dim=2))
    left, right = ink_span(ink.any(dim=1))
    index_h = torch.arange(H, device=images.device)
    index_w = torch.arange(W, device=images.device)
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


def augment_batch(
    images: torch.Tensor,
    cfg: StyleAugment,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """A new writer's version of each image, framed as serving frames it; with `labels` (-1 for
    no digit), the continental forms of 1 and 7 too; a share `cfg.plain_p` keeps its style."""
    if labels is not None and cfg.continental_p > 0:
        images = continental_forms(images, labels, cfg.continental_p, generator)
    styled = F.pad(images, (PAD, PAD, PAD, PAD))
    styled = style_warp(styled, cfg, generator)
    styled = pen_width(styled, cfg.pen_p, generator, cfg.thick_p)
    styled = blur(styled, cfg.blur_p, generator)
    styled = styled[..., PAD:-PAD, PAD:-PAD] if not cfg.reframe else reframe_like_serving(styled)
    if cfg.plain_p == 0:  # no draw: the recipes before plain_p keep their random stream
        return styled
    plain = reframe_like_serving(images) if cfg.reframe else images
    keep = torch.rand(images.shape[0], generator=generator, device=images.device) < cfg.plain_p
    return torch.where(keep.view(-1, 1, 1, 1), plain, styled)
