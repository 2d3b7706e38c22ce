"""Batch-wise augmentation as a user's drawing varies: affine moves and elastic distortion."""

import math

import torch
import torch.nn.functional as F


def elastic_field(
    shape: tuple[int, int, int],
    generator: torch.Generator,
    alpha: float,
    sigma: float,
    device: torch.device,
) -> torch.Tensor:
    """Smooth random displacements (Simard et al. 2003): blurred uniform noise times alpha.

    `shape` is (B, H, W); alpha and sigma are in pixels. Returns (B, H, W, 2) in grid_sample units.
    """
    B, H, W = shape
    noise = 2 * torch.rand(B * 2, 1, H, W, generator=generator, device=device) - 1
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=noise.dtype, device=device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    # separable blur: rows, then columns
    smooth = F.conv2d(noise, kernel.view(1, 1, 1, -1), padding=(0, radius))
    smooth = F.conv2d(smooth, kernel.view(1, 1, -1, 1), padding=(radius, 0))  # (2B, 1, H, W)
    pixels = alpha * smooth.view(B, 2, H, W).permute(0, 2, 3, 1)  # (B, H, W, 2) as (x, y)
    return pixels * pixels.new_tensor([2 / W, 2 / H])  # a pixel is 2/side in grid units


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    max_degrees: float = 12.0,
    max_shift: float = 0.1,
    scale_range: tuple[float, float] = (0.85, 1.15),
    elastic_alpha: float = 0.0,
    elastic_sigma: float = 4.0,
) -> torch.Tensor:
    """Rotate, shift (fraction of the side) and scale a whole batch at once, as drawings vary.

    With `elastic_alpha` > 0, an elastic distortion is added to the same sampling grid.
    """
    B, device = images.shape[0], images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(B, generator=generator, device=device)

    angle = uniform(-max_degrees, max_degrees) * (math.pi / 180)
    scale = uniform(*scale_range)
    shift_x, shift_y = uniform(-max_shift, max_shift) * 2, uniform(-max_shift, max_shift) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output coordinates to input coordinates, hence the inverse scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    if elastic_alpha > 0:
        H, W = images.shape[-2:]
        grid = grid + elastic_field((B, H, W), generator, elastic_alpha, elastic_sigma, device)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
