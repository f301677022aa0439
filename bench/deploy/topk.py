"""`topk`: only the k largest probabilities are answered, renormalised to sum to 1."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.checks import check_range
from bench.deploy.base import DEPLOYMENTS, Answer, OutputRestriction


@dataclass
class TopkConfig:
    k: int = 3  # probabilities kept per answer (fpbench decision: 3; 1 answers one-hot like top1)

    def __post_init__(self) -> None:
        check_range("topk.k", self.k, 1, None)


@DEPLOYMENTS.register
class Topk(OutputRestriction):
    """The top `k` probabilities kept, the others set to 0, then divided by their sum (sums to 1)."""

    name = "topk"
    Config = TopkConfig
    test_config = TopkConfig(k=2)  # contract test

    def restrict(self, answer: Answer, generator: torch.Generator | None) -> Answer:
        k = min(int(self.config.k), answer.probs.shape[1])
        keep = answer.probs.topk(k, dim=1).indices
        kept = torch.zeros_like(answer.probs).scatter(1, keep, answer.probs.gather(1, keep))
        answer.probs = kept / kept.sum(dim=1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)
        return answer
