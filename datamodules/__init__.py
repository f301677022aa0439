"""LightningDataModules with named, hashed splits; `DATAMODULES` maps a recipe's `data.name` to one.

Importing this package imports every datamodule module, so the registry is complete.
"""

from __future__ import annotations

import os

from datamodules import cifar, digits, fashion_mnist, imagenet  # noqa: F401  (registers them)
from datamodules.base import (
    DATAMODULES,
    DataConfig,
    DataNotFoundError,
    FingerprintDataModule,
    SplitSizes,
)

__all__ = [
    "DATAMODULES",
    "DataConfig",
    "DataNotFoundError",
    "FingerprintDataModule",
    "SplitSizes",
    "build_datamodule",
]


def build_datamodule(cfg: DataConfig, data_dir: str | os.PathLike, seed: int) -> FingerprintDataModule:
    """Construct the datamodule `cfg.name` names (not yet set up: no data is read here).

    Args:
        cfg: the recipe's `data:` section.
        data_dir: root folder of the datasets (`paths.data_dir`).
        seed: seed of the split draw.

    Raises:
        RegistryError: unknown `cfg.name`; the message suggests the closest name and lists all.
    """
    return DATAMODULES.get(cfg.name)(cfg, data_dir, seed)
