"""ImageNet (or any ImageFolder tree with train/ and val/), read from disk per item."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from datamodules.base import DataConfig, DataNotFoundError
from datamodules.lightning_base import FingerprintDataModule
from datamodules.specs import DEFAULT_IMAGE_SIZE, IMAGENET

IMAGENET_FOLDER = "imagenet"  # <data_dir>/imagenet/{train,val}/<class>/*.JPEG


class FileSplitDataset(Dataset):
    """A split of an ImageFolder sample list; loads and transforms one image per item.

    Args:
        samples: (path, label) pairs of the whole pool.
        indices: the split's indices into `samples`.
        transform: PIL image -> float tensor [C,H,W] in [0,1].
    """

    def __init__(self, samples: list[tuple[str, int]], indices: torch.Tensor, transform: Callable) -> None:
        self.samples, self.indices, self.transform = samples, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[int(self.indices[item])]
        return self.transform(default_loader(path)), torch.tensor(label, dtype=torch.long)


class ImageNetDataModule(FingerprintDataModule):
    """`imagenet` (spec `IMAGENET`): an ImageFolder tree <data_dir>/imagenet/{train,val}/<class>/*.JPEG.

    The train folder is the train pool, val the test pool; `num_classes` is the number of class
    folders in train/ (val/ must have the same ones). Items: eval: Resize(size*256/224) +
    CenterCrop(size); training with `augment`: RandomResizedCrop(size) + flip; size is
    `data.image_size` (default `DEFAULT_IMAGE_SIZE`, 224). `split_hash` hashes the split's file paths
    (relative to <data_dir>/imagenet, '/'-separated) and labels in split order, not the pixels (too
    slow to read).
    """

    spec = IMAGENET  # 3 channels; num_classes and image_size are not fixed, so the class sets them
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, cfg: DataConfig, data_dir: str | os.PathLike, seed: int) -> None:
        super().__init__(cfg, data_dir, seed)
        self.image_size = int(self.cfg.image_size or DEFAULT_IMAGE_SIZE)
        self.root = os.path.join(self.data_dir, IMAGENET_FOLDER)
        self._classes: list[str] | None = None
        self._samples: dict[str, list[tuple[str, int]]] = {}

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """Number of class folders in train/ (listed on first use)."""
        return len(self.classes)

    @property
    def classes(self) -> list[str]:
        """Sorted class folder names of train/."""
        if self._classes is None:
            from torchvision.datasets.folder import find_classes

            self._classes = find_classes(self._folder("train"))[0]
        return self._classes

    def _folder(self, part: str) -> str:
        folder = os.path.join(self.root, part)
        if not os.path.isdir(folder):
            raise DataNotFoundError(
                f"ImageNet folder {folder}/ is missing. Looked in: {os.path.join(self.root, 'train')}/ and "
                f"{os.path.join(self.root, 'val')}/ (data_dir={self.data_dir}). ImageNet cannot be downloaded "
                "automatically (https://image-net.org, login required). Extract ILSVRC2012 train and val "
                "(val sorted into one folder per class) and link it in:\n"
                f"  mkdir -p {self.data_dir} && ln -s /path/to/ILSVRC2012 {self.root}"
            )
        return folder

    def _load_pools(self) -> tuple[int, int | None]:
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        class_to_idx = {name: i for i, name in enumerate(self.classes)}
        val_classes = find_classes(self._folder("val"))[0]
        if val_classes != self.classes:
            missing = sorted(set(self.classes) ^ set(val_classes))[:5]
            raise ValueError(
                f"{self.root}: val/ and train/ have different class folders (e.g. {missing}). "
                "Fix: val/ needs exactly train/'s class folders (sort the val images into them)."
            )
        for pool, part in (("train", "train"), ("test", "val")):
            self._samples[pool] = make_dataset(self._folder(part), class_to_idx, extensions=IMG_EXTENSIONS)
        return len(self._samples["train"]), len(self._samples["test"])

    def transform(self, train: bool) -> Callable:
        """The item transform: augmenting if `train` (and `augment`), else resize + centre crop."""
        from torchvision import transforms

        size = self.image_size
        if train:
            steps = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
        else:
            steps = [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size)]
        return transforms.Compose([*steps, transforms.ToTensor()])

    def _make_dataset(self, indices: torch.Tensor, pool: str, train: bool) -> Dataset:
        return FileSplitDataset(self._samples[pool], indices, self.transform(train))

    def _tensors(self, indices: torch.Tensor, pool: str) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self._make_dataset(indices, pool, train=False)
        if len(indices) == 0:
            return torch.zeros(0, 3, self.image_size, self.image_size), torch.zeros(0, dtype=torch.long)
        items = [dataset[i] for i in range(len(indices))]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    def _content_hash(self, indices: torch.Tensor, pool: str) -> str:
        samples = self._samples[pool]
        digest = hashlib.sha256()
        for i in indices.tolist():
            path, label = samples[i]
            digest.update(f"{os.path.relpath(path, self.root).replace(os.sep, '/')}\t{label}\n".encode())
        return digest.hexdigest()
