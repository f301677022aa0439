"""Guard method `random`: a seeded random score, independent of the suspect (expected AUC 0.5).

The module is `random_guard`, not `random`, so that no module of fpbench shares the standard library's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.methods.base import METHODS, Fingerprint, FingerprintMethod, GenerationContext
from bench.oracle import Oracle
from bench.seeding import seeded_generator


@dataclass
class RandomConfig:
    seed: int = 0  # scores are drawn in suspect order from a generator seeded with ctx.seed * 1_000_003 + seed


@METHODS.register
class RandomGuard(FingerprintMethod):
    """Guard (not a paper): uniform random scores, label access, 0 queries; tests the loop (AUC ~ 0.5).

    A loop that reports AUC far from 0.5 for this method leaks labels or sorts suspects by role.
    """

    name = "random"
    Config = RandomConfig
    test_config = None  # contract tests: the defaults
    access = "label"
    recognises_source = False  # its score ignores the suspect: the source is no exception
    version = "2"  # 2: seeded by the common formula ctx.seed * 1_000_003 + seed (1: ctx.seed + seed; equal at ctx.seed 0)

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        return Fingerprint(method=self.name, tensors={"seed": torch.tensor([self.seed(ctx)])}, meta={})

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        if getattr(self, "_fingerprint_id", None) != id(fp):  # a new fingerprint restarts the sequence
            self._fingerprint_id = id(fp)
            self._generator = seeded_generator(int(fp.tensors["seed"].item()))
        return float(torch.rand(1, generator=self._generator).item())
