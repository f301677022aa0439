"""Shared by the method tests: one torch thread for tiny models, and one way to fit a digits model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """8x8 models are bound by per-op overhead: one thread is several times faster than two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int, epochs: int, lr: float = 1e-2,
        batch_size: int = 64) -> nn.Module:
    """Adam on cross-entropy, seeded shuffling; returns the model in eval mode with no `.grad` left."""
    order = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=order).split(batch_size):
            optimiser.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimiser.step()
    model.zero_grad(set_to_none=True)  # tests check that methods leave no gradients behind
    return model.eval()
