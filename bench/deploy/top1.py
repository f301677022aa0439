"""`top1`: only the top-1 label is answered; a method reading probabilities gets one-hot vectors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.deploy.base import DEPLOYMENTS, Answer, OutputRestriction


@dataclass
class Top1Config:
    """No parameters."""


@DEPLOYMENTS.register
class Top1(OutputRestriction):
    """Label-only API: probabilities become the one-hot vector of the answered label."""

    name = "top1"
    Config = Top1Config
    test_config = None  # contract test: the defaults (no parameters)

    def restrict(self, answer: Answer, generator: torch.Generator | None) -> Answer:
        answer.probs = F.one_hot(answer.labels, answer.probs.shape[1]).to(answer.probs.dtype)
        return answer
