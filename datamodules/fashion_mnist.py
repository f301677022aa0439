"""Fashion-MNIST from the standard IDX files, parsed with numpy (no torchvision round trip)."""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch

from datamodules.base import DataNotFoundError
from datamodules.in_memory import InMemoryDataModule
from datamodules.specs import FASHION_MNIST

# Where Debian's `dataset-fashion-mnist` package installs the IDX files (the one path in library code).
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file of unsigned bytes (optionally gzipped) into an array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(
            f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()}, expected 000008xx)."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} bytes of data.")
    return data.reshape(shape)


def _find_file(folder: str, stem: str) -> str | None:
    for candidate in (os.path.join(folder, stem), os.path.join(folder, stem + ".gz")):
        if os.path.isfile(candidate):
            return candidate
    return None


class FashionMNISTDataModule(InMemoryDataModule):
    """`fashion_mnist` (spec `FASHION_MNIST`): 28x28 grayscale clothing in 10 classes, from the IDX files.

    The IDX files (plain or .gz) are looked for, in order, in `<data_dir>/fashion_mnist/`,
    `<data_dir>/FashionMNIST/raw/` (torchvision's layout), `<data_dir>/` and
    `/usr/share/datasets/fashion-mnist/` (Debian's `dataset-fashion-mnist`). With none found and
    `data.download=true`, torchvision downloads them into `<data_dir>/FashionMNIST/raw/`.
    `augment` is a random crop with 2 pixels of padding (no flip).
    """

    spec = FASHION_MNIST  # 1x28x28, 10 classes, 60,000 train + 10,000 test
    mean = (0.2860,)
    std = (0.3530,)
    augment_padding = 2
    augment_flip = False

    def search_dirs(self) -> list[str]:
        """The folders searched for the IDX files, in order."""
        return [
            os.path.join(self.data_dir, "fashion_mnist"),
            os.path.join(self.data_dir, "FashionMNIST", "raw"),
            self.data_dir,
            DEBIAN_FASHION_MNIST_DIR,
        ]

    def find_files(self) -> dict[str, str] | None:
        """Paths of the four IDX files from the first folder holding all of them, or None."""
        for folder in self.search_dirs():
            found = {key: _find_file(folder, stem) for key, stem in IDX_FILES.items()}
            if all(found.values()):
                return found  # type: ignore[return-value]
        return None

    def prepare_data(self) -> None:
        """Download the files if they are missing and `data.download` is on (Lightning: rank 0 only)."""
        if self.cfg.download and self.find_files() is None:
            from torchvision.datasets import FashionMNIST

            for train in (True, False):
                FashionMNIST(root=self.data_dir, train=train, download=True)

    def _load_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        files = self.find_files()
        if files is None and self.cfg.download:
            self.prepare_data()
            files = self.find_files()
        if files is None:
            places = "\n".join(f"  {folder}/" for folder in self.search_dirs())
            raise DataNotFoundError(
                f"Fashion-MNIST IDX files ({', '.join(f'{s}[.gz]' for s in IDX_FILES.values())}) not found. "
                f"Looked in:\n{places}\nTo get them, either:\n"
                "  sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu; installs into "
                f"{DEBIAN_FASHION_MNIST_DIR}/)\n"
                "  or rerun with data.download=true   (torchvision downloads them)\n"
                f"  or copy the four files into {os.path.join(self.data_dir, 'fashion_mnist')}/"
            )
        arrays = {key: torch.from_numpy(read_idx(path).copy()) for key, path in files.items()}
        return (
            arrays["train_images"].unsqueeze(1),
            arrays["train_labels"].long(),
            arrays["test_images"].unsqueeze(1),
            arrays["test_labels"].long(),
        )
