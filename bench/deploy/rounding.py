"""`round`: probabilities rounded to a number of decimals (a common API restriction).

The module is `rounding`, not `round`: a module named after the built-in reads as if it were the built-in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.checks import check_range
from bench.deploy.base import DEPLOYMENTS, Answer, OutputRestriction


@dataclass
class RoundConfig:
    decimals: int = 2  # decimals kept (fpbench decision: 2, as APIs showing percentages do)

    def __post_init__(self) -> None:
        check_range("round.decimals", self.decimals, 0, 8)


@DEPLOYMENTS.register
class Round(OutputRestriction):
    """Each probability rounded to `decimals` (not renormalised); the answered label is unchanged."""

    name = "round"
    Config = RoundConfig
    test_config = RoundConfig(decimals=1)  # contract test

    def restrict(self, answer: Answer, generator: torch.Generator | None) -> Answer:
        answer.probs = torch.round(answer.probs, decimals=int(self.config.decimals))
        return answer
