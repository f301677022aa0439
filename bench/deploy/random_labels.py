"""`random_labels`: a fraction p of queries is answered with a random other label."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.checks import check_range
from bench.deploy.base import DEPLOYMENTS, Answer, OutputRestriction


@dataclass
class RandomLabelsConfig:
    p: float = 0.1  # fraction of queries answered wrongly on purpose (fpbench decision: 0.1)

    def __post_init__(self) -> None:
        check_range("random_labels.p", self.p, 0, 1)


@DEPLOYMENTS.register
class RandomLabels(OutputRestriction):
    """With probability `p` a query is answered with a label drawn uniformly from the other classes.

    The drawn label's probability swaps places with the top-1's, so probabilities stay a distribution.
    """

    name = "random_labels"
    Config = RandomLabelsConfig
    test_config = RandomLabelsConfig(p=0.5)  # contract test: half the answers changed
    random = True

    def restrict(self, answer: Answer, generator: torch.Generator | None) -> Answer:
        n, classes = answer.probs.shape
        mask = torch.rand(n, generator=generator) < float(self.config.p)  # drawn for every query: stable streams
        offset = torch.randint(1, max(classes, 2), (n,), generator=generator)
        new = (answer.labels.cpu() + offset) % classes
        answer.relabel(mask.to(answer.labels.device), new.to(answer.labels.device))
        return answer
