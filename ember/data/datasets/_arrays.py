"""The base of datasets whose whole split sits in two arrays: images and labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ember.data.dataset import Dataset, _check_index, as_batch, is_batchable_transform
from ember.tensor import Tensor

__all__ = ["ImageArrayDataset"]


class ImageArrayDataset(Dataset):
    """``ds[i]`` is ``(transform(images[i]), target_transform(int(labels[i])))``.

    Subclasses fill ``images`` (N, ...) uint8, ``labels`` (N,) int64 and ``classes``.
    Without a transform an image comes back as a uint8 Tensor (a copy, so editing it
    leaves the dataset alone). ``get_batch`` slices a whole batch and runs the
    transforms' ``batch`` on it: the DataLoader's fast path.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    transform: Callable | None
    target_transform: Callable | None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        i = _check_index(index, len(self), type(self).__name__)
        image = self.images[i]
        image = self.transform(image) if self.transform else Tensor._make(image.copy(), False, None)
        label = int(self.labels[i])
        return image, (self.target_transform(label) if self.target_transform else label)

    @property
    def batchable(self) -> bool:
        return is_batchable_transform(self.transform) and is_batchable_transform(
            self.target_transform)

    def get_batch(self, indices: np.ndarray) -> list:
        """``[images, labels]`` for ``indices``, the transforms applied to the whole batch."""
        images, labels = self.images[indices], self.labels[indices]
        x = self.transform.batch(images) if self.transform else images
        y = self.target_transform.batch(labels) if self.target_transform else labels
        return [as_batch(x), as_batch(y)]

    @property
    def data(self) -> Tensor:
        return Tensor._make(self.images, False, None)

    @property
    def targets(self) -> Tensor:
        return Tensor._make(self.labels, False, None)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}
