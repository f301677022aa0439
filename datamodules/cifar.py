"""CIFAR-10 and CIFAR-100 through torchvision's loaders, held in memory as uint8 NCHW tensors."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch

from datamodules.base import DataNotFoundError
from datamodules.in_memory import InMemoryDataModule
from datamodules.specs import CIFAR10, CIFAR100


class _CifarDataModule(InMemoryDataModule):
    """Shared loading for CIFAR-10/100: `torchvision.datasets.<dataset>(root=<data_dir>)`."""

    torchvision_class: ClassVar[str] = ""
    folder: ClassVar[str] = ""  # torchvision's extracted folder under data_dir
    augment_padding = 4
    augment_flip = True

    def _torchvision_class(self) -> type:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_class)

    def _torchvision(self, train: bool, download: bool) -> Any:
        return self._torchvision_class()(root=self.data_dir, train=train, download=download)

    def prepare_data(self) -> None:
        """Download the archive if `data.download` is on (Lightning: rank 0 only)."""
        if self.cfg.download:
            for train in (True, False):
                self._torchvision(train, download=True)

    def _load_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        folder = os.path.join(self.data_dir, self.folder)
        if not os.path.isdir(folder) and not self.cfg.download:
            raise DataNotFoundError(self._missing_message(folder, "is missing"))
        arrays = []
        for train in (True, False):
            try:
                dataset = self._torchvision(train, download=self.cfg.download)
            except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
                raise DataNotFoundError(
                    self._missing_message(folder, f"is incomplete or corrupted ({err})")
                ) from err
            images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
            arrays += [images, torch.as_tensor(dataset.targets, dtype=torch.long)]
        return arrays[0], arrays[1], arrays[2], arrays[3]

    def _missing_message(self, folder: str, problem: str) -> str:
        source = self._torchvision_class()
        return (
            f"{self.name} data folder {folder}/ {problem}. Looked in: {folder}/ "
            f"(torchvision's layout under data_dir={self.data_dir}). To get it, either:\n"
            f"  rerun with data.download=true   (torchvision downloads and extracts it into {self.data_dir}/)\n"
            f"  or: wget {source.url} && tar -xzf {source.filename} -C {self.data_dir}"
        )


class CIFAR10DataModule(_CifarDataModule):
    """`cifar10` (spec `CIFAR10`: 3x32x32, 10 classes, 50,000 train + 10,000 test)."""

    spec = CIFAR10
    torchvision_class = "CIFAR10"
    folder = "cifar-10-batches-py"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(_CifarDataModule):
    """`cifar100` (spec `CIFAR100`: 3x32x32, 100 fine classes, 50,000 train + 10,000 test)."""

    spec = CIFAR100
    torchvision_class = "CIFAR100"
    folder = "cifar-100-python"
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
