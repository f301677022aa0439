"""Whole-batch fetching (`datamodules.batching`): a loader that passes fetched batches through serves exactly
the batches PyTorch's default collation makes of the same samples, in the same order."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset, default_collate

from bench.zoo.attacks.base import RelabelledDataset
from datamodules.batching import FetchedBatch, collate_batch
from tests.datamodules.test_datamodules import make


@pytest.mark.parametrize("train", [False, True], ids=["plain", "augmented"])
def test_a_loaders_batches_equal_the_default_collation_of_the_same_samples(tmp_path, train):
    dm = make("digits", tmp_path, augment=True)
    loader = dm.loader("owner", batch_size=64, shuffle=True, train=train, generator_seed=3)
    assert loader.collate_fn is collate_batch
    reference = DataLoader(loader.dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(3),
                           collate_fn=lambda samples: default_collate(list(samples)))  # sample by sample
    torch.manual_seed(0)  # augmentation draws from the global RNG: the same draws for both loaders
    fast = list(loader)
    torch.manual_seed(0)
    slow = list(reference)
    assert len(fast) == len(slow) == -(-dm.split_size("owner") // 64)
    for (x, y), (x_ref, y_ref) in zip(fast, slow):
        assert isinstance(x, torch.Tensor) and x.shape[0] == len(y) <= 64
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    assert not torch.equal(fast[0][1], fast[1][1])  # real batches: the comparison above is not vacuous


def test_a_fetched_batch_reads_as_samples_and_survives_subsets_and_relabelling(tmp_path):
    dm = make("digits", tmp_path)
    dataset = dm.dataset("owner")
    batch = dataset.__getitems__([4, 0, 7])
    assert isinstance(batch, FetchedBatch) and len(batch) == 3
    x, y = dm.tensors("owner")
    assert torch.equal(batch[1][0], x[0]) and int(batch[2][1]) == int(y[7])  # sample i: (image, label)
    assert [int(label) for _, label in batch] == [int(y[4]), int(y[0]), int(y[7])]
    assert torch.equal(batch[1:].x, x[[0, 7]])
    assert torch.equal(dataset[5][0], x[5])  # one item still reads as one sample
    assert torch.equal(default_collate(list(batch))[0], collate_batch(batch)[0])  # either collation: one batch
    subset = DataLoader(Subset(dataset, [9, 2]), batch_size=2, collate_fn=collate_batch)
    assert torch.equal(next(iter(subset))[0], x[[9, 2]])
    targets = torch.arange(len(dataset)) % 3
    relabelled = RelabelledDataset(dataset, targets).__getitems__([4, 0, 7])
    assert isinstance(relabelled, FetchedBatch) and relabelled.y.tolist() == [1, 0, 1]
    assert torch.equal(relabelled.x, batch.x)
    with pytest.raises(ValueError, match="3 inputs and 2 targets"):
        FetchedBatch(batch.x, batch.y[:2])
