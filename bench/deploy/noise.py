"""`noise`: additive Gaussian noise on every query, clamped back to [0,1]."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.checks import check_range
from bench.deploy.base import DEPLOYMENTS, InputTransform


@dataclass
class NoiseConfig:
    sigma: float = 0.05  # std of the noise in [0,1] pixel units (fpbench decision: mild, ~13/255)

    def __post_init__(self) -> None:
        check_range("noise.sigma", self.sigma, 0, 1)


@DEPLOYMENTS.register
class Noise(InputTransform):
    """Gaussian noise of std `sigma` added to every pixel, clamped to [0,1]; fresh draws per query."""

    name = "noise"
    Config = NoiseConfig
    test_config = NoiseConfig(sigma=0.1)  # contract test
    random = True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.config.sigma == 0:
            return x
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)  # CPU draws: the same on every device
        return (x + self.config.sigma * noise.to(device=x.device, dtype=x.dtype)).clamp(0, 1)
