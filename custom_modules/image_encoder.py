"""Patch embedding: a strided convolution turns an image into a sequence of patch tokens."""

import torch
from torch import nn


class PatchEmbedding(nn.Module):
    """Cut the image into patches on a `patch_size` grid and project each to `emb_dim`.

    With `overlap` > 0 each token's kernel also reads `overlap` pixels of its neighbours on every
    side (a stroke cut by a patch border is seen whole by both tokens); the grid is the same.
    """

    def __init__(
        self, emb_dim: int, patch_size: int = 4, in_channels: int = 1, overlap: int = 0
    ) -> None:
        super().__init__()
        # stride = patch size: one token per patch; padding keeps the grid at H/p x W/p
        self.proj = nn.Conv2d(
            in_channels,
            emb_dim,
            kernel_size=patch_size + 2 * overlap,
            stride=patch_size,
            padding=overlap,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.proj(images)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, num_patches, D)
