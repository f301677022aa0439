"""Model factories a user would write (`factory: tests.zoo.byo_factories:<name>`), for tests/zoo/test_factory_timm.py."""

from __future__ import annotations

from torch import nn


def small_cnn(in_channels: int, num_classes: int, image_size: int, width: int = 8) -> nn.Module:
    """A whole model, logits out: its own last layer is the classifier (no fpbench head)."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(width * image_size * image_size, num_classes))


def cnn_features(in_channels: int, num_classes: int, image_size: int, width: int = 8) -> tuple[nn.Module, int]:
    """The registered-architecture contract: (features, feature_dim); fpbench adds the linear head."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten()), width * 4


def no_shape_args(width: int = 8) -> nn.Module:
    """Wrong: a factory must take in_channels, num_classes and image_size."""
    return nn.Linear(width, width)


def returns_a_string(in_channels: int, num_classes: int, image_size: int) -> str:
    """Wrong: a factory must return a module or (features, feature_dim)."""
    return "not a model"


class _SelfNormalizing(nn.Module):
    """A user's model that normalises inside `forward` (as many plain-PyTorch models do)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body((x - 0.3) / 0.3)


def self_normalizing_cnn(in_channels: int, num_classes: int, image_size: int, width: int = 8) -> nn.Module:
    """A whole model that expects raw [0, 1] pixels: imported with `mean: [0.0], std: [1.0]`."""
    return _SelfNormalizing(small_cnn(in_channels, num_classes, image_size, width))
