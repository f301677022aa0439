"""The one seed formula of fpbench, for fingerprinting methods and removal attacks alike.

A seed made of parts `(a, b, c, ...)` is `((a * SEED_STRIDE) + b) * SEED_STRIDE + c ...`: one part is
itself (an attack's `seed`), two parts are `a * 1_000_003 + b` (a method: the fingerprint seed
`ctx.seed`, then the method's own `config.seed`). The stride is a prime above any seed a recipe uses,
so distinct pairs below it never collide. Random draws come from a CPU `torch.Generator` seeded this
way, never from the global RNG, so they are the same on every device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SEED_STRIDE = 1_000_003  # a prime; seed of (a, b) = a * SEED_STRIDE + b


def combine_seeds(*parts: int) -> int:
    """The seed of `parts` (see the module docstring); `combine_seeds(s) == s`."""
    seed = 0
    for part in parts:
        seed = seed * SEED_STRIDE + int(part)
    return seed


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded with `combine_seeds(*parts)`."""
    return torch.Generator().manual_seed(combine_seeds(*parts))


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for the block and give the caller's RNG state back afterwards.

    A safety net around a method's generation: code that draws from the global RNG by accident
    (a layer's default initialisation, dropout) is reproducible, and the caller's stream is untouched.
    CUDA generators are forked and seeded only when CUDA is already initialised (never initialised here).
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
        torch.random.default_generator.manual_seed(int(seed))
        if cuda:
            torch.cuda.manual_seed_all(int(seed))
        yield
