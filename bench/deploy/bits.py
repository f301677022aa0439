"""`bits`: bit-depth reduction ("feature squeezing", Xu et al., NDSS 2018) of every query."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.checks import check_range
from bench.deploy.base import DEPLOYMENTS, InputTransform


@dataclass
class BitsConfig:
    bits: int = 4  # bits per pixel kept, 1..8 (Xu et al. squeeze to 1-5 bits; fpbench decision: 4)

    def __post_init__(self) -> None:
        check_range("bits.bits", self.bits, 1, 8)


@DEPLOYMENTS.register
class Bits(InputTransform):
    """Each pixel rounded to one of 2^bits levels: round(x * (2^bits - 1)) / (2^bits - 1)."""

    name = "bits"
    Config = BitsConfig
    test_config = BitsConfig(bits=2)  # contract test: four grey levels

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        levels = 2 ** int(self.config.bits) - 1
        return (x * levels).round() / levels
