"""Datasets held in memory as uint8 tensors: the base of Fashion-MNIST, digits and CIFAR.

`InMemoryDataModule` implements the contract of `datamodules.lightning_base.FingerprintDataModule` for a
dataset that fits in memory; a subclass only reads its arrays (`_load_arrays`). Batches are
converted to float [0,1] and augmented (random crop + flip, vectorised) a whole batch at a time.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from typing import ClassVar

import torch
from torch.utils.data import Dataset

from datamodules.batching import FetchedBatch
from datamodules.lightning_base import FingerprintDataModule


class InMemoryDataModule(FingerprintDataModule):
    """Base for datasets held in memory as uint8 tensors [N,C,H,W] (converted to float on indexing).

    `split_hash` is the sha256 of a header (`shape` of one image), then the split's pixel bytes
    (uint8, NCHW, split order), then its labels (int64 little-endian, split order).
    """

    pixel_max: ClassVar[float] = 255.0  # stored value of a white pixel: x = stored / pixel_max
    augment_padding: ClassVar[int] = 4  # random-crop padding of `augment`
    augment_flip: ClassVar[bool] = True  # random horizontal flip of `augment`

    @abstractmethod
    def _load_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(train images uint8 [N,C,H,W], train labels int64 [N], test images or None, test labels or None)."""

    def _load_pools(self) -> tuple[int, int | None]:
        train_x, train_y, test_x, test_y = self._load_arrays()
        self._arrays = {"train": (train_x.contiguous(), train_y.long())}
        if test_x is not None and test_y is not None:
            self._arrays["test"] = (test_x.contiguous(), test_y.long())
        return len(train_x), (len(test_x) if test_x is not None else None)

    def _make_dataset(self, indices: torch.Tensor, pool: str, train: bool) -> Dataset:
        images, labels = self._arrays[pool]
        padding, flip = (self.augment_padding, self.augment_flip) if train else (0, False)
        return TensorSplitDataset(images, labels, indices, self.pixel_max, padding, flip)

    def _tensors(self, indices: torch.Tensor, pool: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._arrays[pool]
        return images[indices].float().div_(self.pixel_max), labels[indices]

    def _content_hash(self, indices: torch.Tensor, pool: str) -> str:
        images, labels = self._arrays[pool]
        digest = hashlib.sha256(f"uint8{list(images.shape[1:])}".encode())
        for start in range(0, len(indices), 8192):  # chunks bound the extra memory
            digest.update(images[indices[start : start + 8192]].numpy().tobytes())
        digest.update(labels[indices].numpy().astype("<i8").tobytes())
        return digest.hexdigest()


class TensorSplitDataset(Dataset):
    """A split of uint8 images served as float [0,1]; fetches whole batches at once (`__getitems__`, a
    `FetchedBatch`: `datamodules.batching`).

    Args:
        images: uint8 [N,C,H,W] pool.
        labels: int64 [N] pool labels.
        indices: the split's indices into the pool.
        pixel_max: stored value of a white pixel.
        padding: random-crop padding (0: no crop); drawn from the global RNG on every fetch.
        flip: random horizontal flip.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        pixel_max: float = 255.0,
        padding: int = 0,
        flip: bool = False,
    ) -> None:
        self.images, self.labels, self.indices = images, labels, indices
        self.pixel_max, self.padding, self.flip = pixel_max, padding, flip

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, items: list[int]) -> FetchedBatch:
        rows = self.indices[torch.as_tensor(items, dtype=torch.long)]
        x = self.images[rows].float().div_(self.pixel_max)
        if self.padding or self.flip:
            x = random_crop_flip(x, self.padding, self.flip)
        return FetchedBatch(x, self.labels[rows])

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= item < len(self):
            raise IndexError(f"index {item} out of range for a split of {len(self)} samples")
        return self.__getitems__([item])[0]


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Per-image random crop (zero padding `padding`) and horizontal flip of a batch [B,C,H,W], vectorised."""
    batch, channels, height, width = x.shape
    if padding > 0:
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (batch, 1))
        left = torch.randint(0, 2 * padding + 1, (batch, 1))
        rows = (top + torch.arange(height))[:, None, :, None]
        cols = (left + torch.arange(width))[:, None, None, :]
        x = padded[
            torch.arange(batch)[:, None, None, None], torch.arange(channels)[None, :, None, None], rows, cols
        ]
    if flip:
        flipped = torch.rand(batch) < 0.5
        x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
    return x
