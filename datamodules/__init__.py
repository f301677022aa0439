"""LightningDataModules with named, hashed splits; `DATAMODULES` maps a recipe's `data.name` to one.

Importing this package registers every built-in `DataSpec` (`datamodules.specs`) and imports no
Lightning: recipe validation and `fpbench list datamodules` read the specs. A datamodule's class (a
`pytorch_lightning.LightningDataModule`) is imported the first time `DATAMODULES.get(name)` or
`build_datamodule` asks for it; `datamodules.FingerprintDataModule` likewise imports the base class on first use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from datamodules.base import DataConfig, DataNotFoundError, SplitSizes
from datamodules.specs import DATAMODULES, DataSpec, load_target

if TYPE_CHECKING:
    from datamodules.lightning_base import FingerprintDataModule

__all__ = [
    "DATAMODULES",
    "DataConfig",
    "DataNotFoundError",
    "DataSpec",
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


def __getattr__(name: str) -> Any:
    """`FingerprintDataModule`, imported on first use: it lives in `datamodules.lightning_base` (Lightning)."""
    if name == "FingerprintDataModule":
        return load_target("datamodules.lightning_base:FingerprintDataModule")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
