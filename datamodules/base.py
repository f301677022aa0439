"""The datamodule contract without Lightning: the `data:` config, split sizes and their counts, the registry.

What a recipe check needs lives here and imports no Lightning: `DataConfig` and `SplitSizes` (the
recipe's `data:` section), `split_counts` (the sample count of every split for given pool sizes) and
`validate_data_config`. `DATAMODULES` and `DataSpec` come from `datamodules.specs`. The LightningDataModule
base class, `FingerprintDataModule`, is in `datamodules.lightning_base`; `datamodules.base.FingerprintDataModule`
still names it, imported on first use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datamodules.specs import DATAMODULES, DataSpec, load_target

if TYPE_CHECKING:
    from datamodules.lightning_base import FingerprintDataModule

__all__ = ["DATAMODULES", "DataConfig", "DataNotFoundError", "DataSpec", "FingerprintDataModule", "SplitSizes",
           "split_counts", "validate_data_config"]

TRAIN_POOL_SPLITS: tuple[str, ...] = ("owner", "attacker", "independent")


@dataclass
class SplitSizes:
    """Split sizes. A value >= 1 is a count; 0 < value < 1 a fraction of the pool; 0 an empty split,
    allowed only for a split the recipe does not read: `owner` and `test` are always read, and a 0 for
    a split the recipe reads is refused at load (`bench.recipe_checks.check_splits_not_empty`).

    `owner`, `attacker`, `independent` are drawn from the train pool. `test` (None: the whole
    official test set) is drawn from the test pool; for single-pool datasets (digits) None means
    "whatever the other three leave" and every fraction is of the one pool.
    """

    owner: float = 0.5  # source training data and fingerprint seeds
    attacker: float = 0.1  # data the removal attacks may use
    independent: float = 0.4  # data for negatives trained on different data
    test: float | None = None  # accuracy; None: the whole test pool (or the remainder, single pool)


@dataclass
class DataConfig:
    """The recipe's `data:` section."""

    name: str = "digits"  # registry key in DATAMODULES
    splits: SplitSizes = field(default_factory=SplitSizes)
    batch_size: int = 128  # training batch size
    eval_batch_size: int = 512  # batch size for evaluation and feature extraction
    num_workers: int = 0  # DataLoader workers; 0 keeps everything in the main process
    pin_memory: bool = False  # pin host memory for faster GPU copies
    augment: bool = False  # random crop (+flip for natural images) on training batches, on the fly
    download: bool = False  # allow torchvision downloads (cifar/fashion_mnist); off: never touch the network
    image_size: int | None = None  # imagenet resize/crop size (None: 224); ignored elsewhere


class DataNotFoundError(FileNotFoundError):
    """The dataset files are missing; the message lists every place looked at and how to get them."""


def split_counts(sizes: SplitSizes, train_pool: int, test_pool: int | None, dataset: str) -> dict[str, int]:
    """Sample counts of every split for pools of these sizes (no data needed), in drawing order.

    Raises:
        ValueError: a size that is negative, not a whole count, rounds to 0 samples, or asks for more
            than the pool holds; the message names the key and the fix.
    """
    counts = {s: _count(s, getattr(sizes, s), train_pool, dataset) for s in TRAIN_POOL_SPLITS}
    single_pool = test_pool is None
    if single_pool:
        if sizes.test is None:
            remainder = train_pool - sum(counts.values())  # < 0: the oversize check below reports it
            if remainder > 0:
                counts["test"] = remainder
            elif remainder == 0:
                raise ValueError(
                    f"data.splits owner={sizes.owner}, attacker={sizes.attacker}, independent={sizes.independent} "
                    f"use all {train_pool} samples of {dataset}'s single pool and leave none for test. "
                    "Fix: lower them (e.g. owner=0.4 attacker=0.1 independent=0.3) to leave samples for the test "
                    "split, which cannot be empty: every zoo model's test accuracy is measured on it."
                )
        else:
            counts["test"] = _count("test", sizes.test, train_pool, dataset)
    total = sum(counts.values())
    if total > train_pool:
        asked = " + ".join(f"{s}={n}" for s, n in counts.items())
        raise ValueError(
            f"data.splits ask for {asked} = {total} samples, but {dataset}'s "
            f"{'single' if single_pool else 'train'} pool has {train_pool}. Fix: lower data.splits."
            f"{'/'.join(counts)} (counts, or fractions of the pool) so they sum to at most {train_pool}."
        )
    if not single_pool and sizes.test is not None:
        n = _count("test", sizes.test, test_pool, dataset)
        if n > test_pool:
            raise ValueError(
                f"data.splits.test={sizes.test} asks for {n} samples, but {dataset}'s test pool has "
                f"{test_pool}. Fix: set data.splits.test to at most {test_pool}, a fraction, or null (all)."
            )
        counts["test"] = n
    return counts


def validate_data_config(cfg: Any, spec: DataSpec | type[FingerprintDataModule]) -> None:
    """Check the recipe's `data:` section before any data is read; raise ValueError naming the key.

    Split sizes are checked against the pool sizes when `spec.known_pool_sizes` gives them (else when
    the data is loaded); batch sizes must be >= 1, workers >= 0, `image_size` >= 1 or null.

    Args:
        cfg: the `data:` section.
        spec: the dataset's `DataSpec` (`DATAMODULES.spec(name)`: no import); a datamodule class, which
            carries the same attributes, works too.
    """
    for key in ("batch_size", "eval_batch_size"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"data.{key}={getattr(cfg, key)} must be >= 1.")
    if cfg.num_workers < 0:
        raise ValueError(f"data.num_workers={cfg.num_workers} must be >= 0 (0: load in the main process).")
    if cfg.image_size is not None and cfg.image_size < 1:
        raise ValueError(f"data.image_size={cfg.image_size} must be >= 1, or null for the dataset's own size.")
    for split in ("owner", "attacker", "independent", "test"):
        value = getattr(cfg.splits, split)
        if value is not None:
            _check_size(split, value)  # sign, NaN and whole counts; what a fraction gives needs the pool
    if spec.known_pool_sizes is not None:
        split_counts(cfg.splits, *spec.known_pool_sizes, spec.name)


def _check_size(split: str, value: Any) -> float:
    """A SplitSizes value as a float: a count >= 1 (whole), a fraction in (0, 1), or 0."""
    value = float(value)
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise ValueError(
            f"data.splits.{split}={value} is invalid. Use a count >= 1, a fraction in (0, 1), or 0."
        )
    if value >= 1 and not value.is_integer():
        raise ValueError(
            f"data.splits.{split}={value}: values >= 1 are sample counts and must be whole numbers. "
            f"Fix: use {math.floor(value)}, or a fraction in (0, 1)."
        )
    return value


def _count(split: str, value: Any, pool: int, dataset: str) -> int:
    """Resolve a SplitSizes value (count, fraction of `pool`, or 0) to a sample count."""
    value = _check_size(split, value)
    if value >= 1:
        return int(value)
    count = math.floor(value * pool + 1e-9)  # 1e-9: 0.3 * 10 must give 3, not 2
    if value > 0 and count == 0:
        empty = "" if split in ("owner", "test") else ", or 0 for an empty split if the recipe reads none of it"
        raise ValueError(
            f"data.splits.{split}={value} of {dataset}'s pool of {pool} gives 0 samples. "
            f"Fix: use a larger fraction or a count{empty}."
        )
    return count


def __getattr__(name: str) -> Any:
    """`FingerprintDataModule`, imported on first use: it lives in `datamodules.lightning_base` (Lightning)."""
    if name == "FingerprintDataModule":
        return load_target("datamodules.lightning_base:FingerprintDataModule")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
