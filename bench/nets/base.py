"""The model contract: normalisation first, then features, then one linear head.

Every architecture builds a `Classifier` so that attacks can find "the last layer" (`head`) and
every model takes [0,1] pixels (normalisation is its first layer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.registry import Registry


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the model's first layer; mean/std are buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """normalize -> features -> head. `features` maps images to a flat [B, feature_dim] tensor.

    A whole model from a user's factory (`factory:` archs) is the `features` and `head` is an
    identity: such a model has no separate last layer (`has_linear_head` is False).
    """

    def __init__(self, normalize: Normalize, features: nn.Module, head: nn.Linear | nn.Identity) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.normalize(x)))

    @property
    def has_linear_head(self) -> bool:
        """Whether the model has a separate linear last layer (every model but a whole-model factory's)."""
        return isinstance(self.head, nn.Linear)

    def reset_head(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise the last layer (RTLL / RTAL attacks)."""
        fan_in = self.head.in_features
        bound = 1.0 / fan_in**0.5
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound, generator=generator)
            self.head.bias.uniform_(-bound, bound, generator=generator)


# A factory takes (in_channels, num_classes, image_size, **params) and returns (features, feature_dim).
FeatureFactory = Callable[..., tuple[nn.Module, int]]

# Factories are functions, not classes naming themselves: the name is written once, in `@ARCHS.register("<name>")`.
ARCHS: Registry[FeatureFactory] = Registry("arch")
TEST_CONFIG_ATTR = "test_config"  # set on a factory by `tested_with`


@dataclass(frozen=True)
class ArchTestConfig:
    """An arch's tiny test configuration: how the contract tests (`tests/nets/test_nets.py`) build it.

    Attributes:
        params: the arch params the tests build it with ({}: its defaults).
        fast_max_image_size: the largest image size the fast suite builds it at; the larger test shapes
            run only with the slow tests (None: every shape is fast).
    """

    params: dict[str, Any] = field(default_factory=dict)
    fast_max_image_size: int | None = None


def tested_with(config: ArchTestConfig) -> Callable[[FeatureFactory], FeatureFactory]:
    """Decorator: the tests build this arch with `config` (without it: `ArchTestConfig()`)."""
    def mark(factory: FeatureFactory) -> FeatureFactory:
        setattr(factory, TEST_CONFIG_ATTR, config)
        return factory

    return mark


def arch_test_config(name: str) -> ArchTestConfig:
    """The test configuration of the registered arch `name` (`tested_with`, else the defaults)."""
    return getattr(ARCHS.get(name), TEST_CONFIG_ATTR, None) or ArchTestConfig()
