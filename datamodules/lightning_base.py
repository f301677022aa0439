"""`FingerprintDataModule`: the LightningDataModule every datamodule class subclasses.

A `FingerprintDataModule` turns a dataset into four disjoint, seed-determined splits: `owner`
(source training, fingerprint seeds), `attacker` (removal attacks), `independent` (negatives trained
on different data) and `test` (accuracy). Images are [0,1] float pixels; normalisation (`mean`,
`std`) belongs to the model's first layer. A datamodule is a `pytorch_lightning.LightningDataModule`,
so `trainer.fit(model, datamodule=dm)` works; its `name`, `in_channels`, `num_classes`, `image_size`
and `known_pool_sizes` come from its `DataSpec` (`datamodules.specs`), which validation reads without
importing this module.

Split drawing (shared by every dataset): one `torch.Generator` seeded with `seed` permutes the train
pool once; `owner`, `attacker`, `independent` (and, for single-pool datasets, `test`) are consecutive
slices of that permutation, in that order. So changing a later split's size never changes an earlier
split. A two-pool dataset's `test` is the official test set in file order (`splits.test: null`) or a
random subset of it drawn from the same generator.

Overlap negatives (docs/threat_models.md) train on a mix: `owner_mix_indices` draws a training set the
size of a train-pool split, the given fraction of it from `owner` and the rest from that split.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from typing import ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import TRAIN_POOL_SPLITS, DataConfig, split_counts
from datamodules.batching import collate_batch
from datamodules.specs import DataSpec

_SHOWN_SPLITS: set[str] = set()  # split lines already logged at INFO by this process

log = logging.getLogger(__name__)

SPEC_ATTRIBUTES = ("name", "in_channels", "num_classes", "image_size", "known_pool_sizes")  # set from `spec`


class FingerprintDataModule(pl.LightningDataModule, ABC):
    """Abstract base: four named, disjoint, seed-determined splits of one dataset.

    A concrete subclass sets `spec = <its DataSpec>` (which sets `name`, `in_channels`, `num_classes`,
    `image_size` and `known_pool_sizes`; setting one of them in the body as well is refused, and a value
    the spec leaves None, such as ImageNet's class count, the class supplies itself), sets `mean` and
    `std`, and implements `_load_pools`, `_make_dataset`, `_tensors` and `_content_hash`; the base class
    draws the splits and serves datasets, loaders and hashes.

    Args:
        cfg: the `data:` config (a `DataConfig` or an omegaconf structured config of one).
        data_dir: root folder of the datasets (the recipe's `paths.data_dir`).
        seed: seed of the split draw; the same seed gives the same indices on any machine.
    """

    spec: ClassVar[DataSpec | None] = None  # what validation knows of this dataset; the values below come from it
    name: ClassVar[str] = ""
    num_classes: int = 0
    in_channels: ClassVar[int] = 0
    image_size: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    SPLITS: ClassVar[tuple[str, ...]] = ("owner", "attacker", "independent", "test")
    # (train pool, test pool or None) when the dataset's size is fixed: splits are then checked at recipe load
    known_pool_sizes: ClassVar[tuple[int, int | None] | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Copy the attributes of the class's own `spec` onto it; refuse a second value set in the body."""
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is None:
            return
        for key in SPEC_ATTRIBUTES:
            value = getattr(spec, key)
            if value is None and key in ("num_classes", "image_size"):
                continue  # the spec leaves it to the class (read from the data or from data.image_size)
            if key in cls.__dict__:
                raise TypeError(f"{cls.__qualname__} sets {key} in its body and has spec '{spec.name}' "
                                f"({key}={value!r}). Fix: set it in the DataSpec only.")
            setattr(cls, key, value)

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
        line = f"{self.name} splits: { {s: len(i) for s, i in self._indices.items()} }"
        # Once per process at INFO: a command sets the data up once per trial and phase, with the same sizes.
        log.log(logging.DEBUG if line in _SHOWN_SPLITS else logging.INFO, "%s", line)
        _SHOWN_SPLITS.add(line)

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
        indices: torch.Tensor | None = None,
    ) -> DataLoader:
        """A DataLoader over `split`.

        Args:
            split: one of `SPLITS`.
            batch_size: None: `cfg.batch_size` if `train` else `cfg.eval_batch_size`.
            shuffle: reshuffle every epoch.
            train: augment (if `cfg.augment`) and use the training batch size.
            drop_last: drop the last incomplete batch.
            generator_seed: seed of the shuffle order; None: the global torch RNG.
            indices: serve these indices of the split's pool instead of the split (`owner_mix_indices`).
        """
        if indices is None:
            dataset = self.dataset(split, train=train)
        else:
            dataset = self._make_dataset(indices, self.pool(split), train and self.cfg.augment)
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
            collate_fn=collate_batch,  # a whole fetched batch as it is (`datamodules.batching`)
        )

    def tensors(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `limit` samples of `split` in split order, un-augmented: x [N,C,H,W] in [0,1], y int64 [N]."""
        indices = self.indices(split)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit={limit} is negative; pass None for the whole split or a count >= 0.")
            indices = indices[:limit]
        return self._tensors(indices, self.pool(split))

    def owner_mix_indices(self, split: str, overlap: float, seed: int) -> torch.Tensor:
        """Train-pool indices of an overlap negative's training set: `split`'s size, `overlap` of it from `owner`.

        Raises:
            ValueError: `split` is not a train-pool split, or the fraction is out of range or asks for more
                owner samples than the owner split holds (`owner_mix`).
        """
        mixable = [s for s in TRAIN_POOL_SPLITS if s != "owner"]  # never test: accuracy is measured on it
        if split not in mixable:
            raise ValueError(f"An overlap training set mixes the owner split into another train-pool split "
                             f"({', '.join(mixable)}); got '{split}'.")
        return owner_mix(self.indices("owner"), self.indices(split), overlap, seed)

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


def owner_mix(owner: torch.Tensor, other: torch.Tensor, overlap: float, seed: int) -> torch.Tensor:
    """A training set of `len(other)` indices: `round(overlap * len(other))` drawn from `owner`, the rest
    from `other`, each without replacement, from a generator seeded with `seed` (the model's seed).

    The owner part comes first, then the other part; the training loader shuffles them together.

    Args:
        owner: the owner split's indices into the train pool.
        other: the indices of the split whose size the training set keeps (the independent split).
        overlap: the fraction drawn from `owner`, 0 <= overlap <= 1.
        seed: seed of the draw; the same seed gives the same indices on any machine.

    Raises:
        ValueError: `overlap` outside [0, 1], or more owner samples asked for than `owner` holds.
    """
    if isinstance(overlap, bool) or not 0.0 <= float(overlap) <= 1.0:
        raise ValueError(f"overlap={overlap!r} must be a fraction in [0, 1] (0.25: a quarter of the training set "
                         "comes from the owner's data).")
    size = len(other)
    from_owner = round(float(overlap) * size)
    if from_owner > len(owner):
        raise ValueError(f"overlap={overlap} of a {size}-sample training set takes {from_owner} owner samples, but "
                         f"the owner split has {len(owner)}. Fix: lower overlap to at most {len(owner) / size:.4g}, "
                         "or raise data.splits.owner.")
    generator = torch.Generator().manual_seed(int(seed))
    owner_part = owner[torch.randperm(len(owner), generator=generator)[:from_owner]]
    other_part = other[torch.randperm(size, generator=generator)[: size - from_owner]]
    return torch.cat([owner_part, other_part])
