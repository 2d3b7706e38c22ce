"""Patch embedding: a strided convolution turns an image into a sequence of patch tokens."""

import torch
from torch import nn


class PatchEmbedding(nn.Module):
    """Cut the image into non-overlapping patches and project each to `emb_dim`."""

    def __init__(self, emb_dim: int, patch_size: int = 4, in_channels: int = 1) -> None:
        super().__init__()
        # kernel = stride = patch size: each output pixel sees exactly one patch
        self.proj = nn.Conv2d(in_channels, emb_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.proj(images)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, num_patches, D)
