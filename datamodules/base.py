"""The datamodule contract: config dataclasses, named splits with content hashes, the registry.

A `FingerprintDataModule` turns a dataset into four disjoint, seed-determined splits: `owner`
(source training, fingerprint seeds), `attacker` (removal attacks), `independent` (negatives trained
on different data) and `test` (accuracy). Images are [0,1] float pixels; normalisation (`mean`,
`std`) belongs to the model's first layer.

Split drawing (shared by every dataset): one `torch.Generator` seeded with `seed` permutes the train
pool once; `owner`, `attacker`, `independent` (and, for single-pool datasets, `test`) are consecutive
slices of that permutation, in that order. So changing a later split's size never changes an earlier
split. A two-pool dataset's `test` is the official test set in file order (`splits.test: null`) or a
random subset of it drawn from the same generator.
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bench.registry import Registry

log = logging.getLogger(__name__)

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


class FingerprintDataModule(pl.LightningDataModule, ABC):
    """Abstract base: four named, disjoint, seed-determined splits of one dataset.

    Subclasses set the class attributes and implement `_load_pools`, `_make_dataset`, `_tensors`
    and `_content_hash`; the base class draws the splits and serves datasets, loaders and hashes.

    Args:
        cfg: the `data:` config (a `DataConfig` or an omegaconf structured config of one).
        data_dir: root folder of the datasets (the recipe's `paths.data_dir`).
        seed: seed of the split draw; the same seed gives the same indices on any machine.
    """

    name: ClassVar[str] = ""
    num_classes: int = 0
    in_channels: ClassVar[int] = 0
    image_size: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    SPLITS: ClassVar[tuple[str, ...]] = ("owner", "attacker", "independent", "test")
    # (train pool, test pool or None) when the dataset's size is fixed: splits are then checked at recipe load
    known_pool_sizes: ClassVar[tuple[int, int | None] | None] = None

    def __init__(self, cfg: DataConfig, data_dir: str | os.PathLike, seed: int) -> None:
        super().__init__()
        if not isinstance(cfg, DataConfig):  # an omegaconf DictConfig: work on plain values
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        self.cfg = cfg
        self.data_dir = os.fspath(data_dir)
        self.seed = int(seed)
        self._indices: dict[str, torch.Tensor] | None = None
        self._pools: dict[str, str] = {}  # split -> "train" | "test"
        self._hashes: dict[str, str] = {}

    # -- subclass hooks ---------------------------------------------------------------------
    @abstractmethod
    def _load_pools(self) -> tuple[int, int | None]:
        """Load the data; return (train pool size, test pool size or None for a single pool)."""

    @abstractmethod
    def _make_dataset(self, indices: torch.Tensor, pool: str, train: bool) -> Dataset:
        """A dataset over `indices` of `pool` ("train" | "test"), augmented if `train`."""

    @abstractmethod
    def _tensors(self, indices: torch.Tensor, pool: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-augmented (x [N,C,H,W] float in [0,1], y int64 [N]) for `indices` of `pool`."""

    @abstractmethod
    def _content_hash(self, indices: torch.Tensor, pool: str) -> str:
        """Hex sha256 of the content at `indices` of `pool`, in that order."""

    # -- Lightning ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load the data and draw the splits; a second call does nothing."""
        if self._indices is not None:
            return
        train_pool, test_pool = self._load_pools()
        self._indices = self._draw_splits(train_pool, test_pool)
        log.info("%s splits: %s", self.name, {s: len(i) for s, i in self._indices.items()})

    def train_dataloader(self) -> DataLoader:
        """The owner split, augmented, shuffled by the global RNG (so the training seed governs order)."""
        return self.loader("owner", shuffle=True, train=True)

    def val_dataloader(self) -> DataLoader:
        """The test split."""
        return self.loader("test")

    def test_dataloader(self) -> DataLoader:
        """The test split."""
        return self.loader("test")

    # -- public API ---------------------------------------------------------------------------
    def indices(self, split: str) -> torch.Tensor:
        """Indices of `split` into its pool (train pool; test pool for a two-pool `test`)."""
        self._check_split(split)
        self.setup()
        assert self._indices is not None
        return self._indices[split]

    def pool(self, split: str) -> str:
        """The pool `split` is drawn from: "train" or "test"."""
        self.indices(split)
        return self._pools[split]

    def dataset(self, split: str, train: bool = False) -> Dataset:
        """Items `(x, y)`: x float32 [C,H,W] in [0,1], y int64 scalar; augmented if `train` and `cfg.augment`."""
        return self._make_dataset(self.indices(split), self.pool(split), train and self.cfg.augment)

    def loader(
        self,
        split: str,
        *,
        batch_size: int | None = None,
        shuffle: bool = False,
        train: bool = False,
        drop_last: bool = False,
        generator_seed: int | None = None,
    ) -> DataLoader:
        """A DataLoader over `split`.

        Args:
            split: one of `SPLITS`.
            batch_size: None: `cfg.batch_size` if `train` else `cfg.eval_batch_size`.
            shuffle: reshuffle every epoch.
            train: augment (if `cfg.augment`) and use the training batch size.
            drop_last: drop the last incomplete batch.
            generator_seed: seed of the shuffle order; None: the global torch RNG.
        """
        dataset = self.dataset(split, train=train)
        if batch_size is None:
            batch_size = self.cfg.batch_size if train else self.cfg.eval_batch_size
        generator = torch.Generator().manual_seed(generator_seed) if generator_seed is not None else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and len(dataset) > 0,  # type: ignore[arg-type]
            drop_last=drop_last,
            num_workers=self.cfg.num_workers,
            pin_memory=self.cfg.pin_memory,
            persistent_workers=train and self.cfg.num_workers > 0,
            generator=generator,
        )

    def tensors(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `limit` samples of `split` in split order, un-augmented: x [N,C,H,W] in [0,1], y int64 [N]."""
        indices = self.indices(split)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit={limit} is negative; pass None for the whole split or a count >= 0.")
            indices = indices[:limit]
        return self._tensors(indices, self.pool(split))

    def split_size(self, split: str) -> int:
        """Number of samples in `split`."""
        return len(self.indices(split))

    def split_hash(self, split: str) -> str:
        """Hex sha256 of the split's content in split order (see the subclass for what is hashed)."""
        if split not in self._hashes:
            self._hashes[split] = self._content_hash(self.indices(split), self.pool(split))
        return self._hashes[split]

    def split_hashes(self) -> dict[str, str]:
        """`split_hash` of every split in `SPLITS`."""
        return {split: self.split_hash(split) for split in self.SPLITS}

    # -- internals ----------------------------------------------------------------------------
    def _check_split(self, split: str) -> None:
        if split not in self.SPLITS:
            raise ValueError(
                f"Unknown split '{split}' for {self.name}. Valid splits: {', '.join(self.SPLITS)}."
            )

    def _draw_splits(self, train_pool: int, test_pool: int | None) -> dict[str, torch.Tensor]:
        sizes = self.cfg.splits
        counts = split_counts(sizes, train_pool, test_pool, self.name)
        single_pool = test_pool is None
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(train_pool, generator=generator)
        splits, start = {}, 0
        for split, n in counts.items():
            if split == "test" and not single_pool:
                continue  # drawn from the test pool below
            splits[split], start = order[start : start + n], start + n
            self._pools[split] = "train"
        if not single_pool:
            self._pools["test"] = "test"
            if sizes.test is None:
                splits["test"] = torch.arange(test_pool)
            else:
                splits["test"] = torch.randperm(test_pool, generator=generator)[: counts["test"]]
        return splits


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


def validate_data_config(cfg: Any, datamodule: type[FingerprintDataModule]) -> None:
    """Check the recipe's `data:` section before any data is read; raise ValueError naming the key.

    Split sizes are checked against the pool sizes when `datamodule.known_pool_sizes` gives them (else
    when the data is loaded); batch sizes must be >= 1, workers >= 0, `image_size` >= 1 or null.
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
    if datamodule.known_pool_sizes is not None:
        split_counts(cfg.splits, *datamodule.known_pool_sizes, datamodule.name)


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


DATAMODULES = Registry[type[FingerprintDataModule]]("datamodule")
