"""MNIST as tensors: the seeded train / validation split and the test set, pixels in [0, 1]."""

from dataclasses import dataclass

import numpy as np
import torch

from custom_modules.contract import PIXEL_MAX
from custom_modules.training.mnist_data import Mnist, split_indices


@dataclass
class DataSplits:
    """Train / validation / test tensors: images `(N, 1, 28, 28)` float in [0, 1], labels int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def to(self, device: torch.device) -> "DataSplits":
        return DataSplits(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def _images(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float().div_(PIXEL_MAX).unsqueeze(1)  # (N, 1, 28, 28)


def _labels(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.int64))


def split_mnist(
    mnist: Mnist, val_size: int = 5000, seed: int = 0, train_subset: int | None = None
) -> DataSplits:
    """Hold out a seeded validation split of the training images; optionally subsample the rest."""
    val_idx, train_idx = split_indices(len(mnist.train_labels), val_size, seed)
    if train_subset is not None:
        train_idx = train_idx[:train_subset]
    return DataSplits(
        train_images=_images(mnist.train_images[train_idx]),
        train_labels=_labels(mnist.train_labels[train_idx]),
        val_images=_images(mnist.train_images[val_idx]),
        val_labels=_labels(mnist.train_labels[val_idx]),
        test_images=_images(mnist.test_images),
        test_labels=_labels(mnist.test_labels),
    )
