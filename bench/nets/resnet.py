"""CIFAR-style residual networks: `resnet18`, `resnet20`, `wrn` (wide ResNet) and `wrn40_10`.

All use a 3x3 stem without max-pooling (the CIFAR variants) and end in global average pooling, so
any input from 8x8 upwards works: a stride-2 stage on a 1x1 map simply stays 1x1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.nets.base import ARCHS, ArchTestConfig, tested_with


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """He et al.'s CIFAR shortcut "option A": subsample by the stride and zero-pad new channels.

    Parameter-free, which is what keeps ResNet-20 at 0.27M parameters as in the paper.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """Post-activation basic block (two 3x3 convs) of ResNet-18/20.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first conv (2 halves the map).
        pad_shortcut: use the parameter-free option-A shortcut instead of a 1x1 conv projection.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, pad_shortcut: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if pad_shortcut:
                self.shortcut = PadShortcut(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem, stages of basic blocks (first stage stride 1, the rest stride 2), global avg pool.

    Args:
        in_channels: image channels.
        widths: channels of each stage (the stem has widths[0]).
        blocks: number of blocks in each stage.
        pad_shortcut: option-A shortcuts (ResNet-20) instead of 1x1 projections (ResNet-18).
    """

    def __init__(self, in_channels: int, widths: list[int], blocks: list[int], pad_shortcut: bool) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages: list[nn.Module] = []
        channels = widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(BasicBlock(channels, width, stride if block == 0 else 1, pad_shortcut))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))


def _check_width(arch: str, width: int) -> None:
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"{arch}: 'width' must be a positive integer, got {width!r}.")


@ARCHS.register("resnet18")
def resnet18(in_channels: int, num_classes: int, image_size: int, width: int = 64) -> tuple[nn.Module, int]:
    """ResNet-18, CIFAR variant (3x3 stem, no max-pool; He et al. 2016), 11M parameters.

    Args:
        in_channels: image channels.
        num_classes: unused here (the head is added by `build_model`).
        image_size: unused (global average pooling handles any size).
        width: channels of the first stage; the stages have width x (1, 2, 4, 8).

    Returns:
        (features module, feature_dim = 8 * width).
    """
    _check_width("resnet18", width)
    net = CifarResNet(in_channels, [width, 2 * width, 4 * width, 8 * width], [2, 2, 2, 2], pad_shortcut=False)
    return net, net.out_features


@ARCHS.register("resnet20")
def resnet20(in_channels: int, num_classes: int, image_size: int, width: int = 16) -> tuple[nn.Module, int]:
    """ResNet-20 for CIFAR (He et al. 2016): 3 stages x 3 basic blocks, 16/32/64 channels, 0.27M parameters.

    Args:
        in_channels: image channels.
        num_classes: unused here (the head is added by `build_model`).
        image_size: unused (global average pooling handles any size).
        width: channels of the first stage; the stages have width x (1, 2, 4).

    Returns:
        (features module, feature_dim = 4 * width).
    """
    _check_width("resnet20", width)
    net = CifarResNet(in_channels, [width, 2 * width, 4 * width], [3, 3, 3], pad_shortcut=True)
    return net, net.out_features


class WideBlock(nn.Module):
    """Pre-activation wide block (BN-ReLU-conv, dropout, BN-ReLU-conv) of Zagoruyko & Komodakis."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection sees the pre-activated input, as in the reference implementation.
        shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-depth-widen: 3 groups of (depth-4)/6 wide blocks, widths 16k/32k/64k, final BN-ReLU, avg pool."""

    def __init__(self, in_channels: int, depth: int, widen: int, dropout: float) -> None:
        super().__init__()
        blocks = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.stem = _conv3x3(in_channels, 16)
        layers: list[nn.Module] = []
        channels = 16
        for index, width in enumerate(widths):
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(WideBlock(channels, width, stride, dropout))
                channels = width
        self.blocks = nn.Sequential(*layers)
        self.head_norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.head_norm(self.blocks(self.stem(x))))


@ARCHS.register("wrn")
def wrn(
    in_channels: int, num_classes: int, image_size: int, depth: int = 16, widen: int = 4, dropout: float = 0.0
) -> tuple[nn.Module, int]:
    """Wide ResNet WRN-depth-widen (Zagoruyko & Komodakis, BMVC 2016); default WRN-16-4, 2.7M parameters.

    Args:
        in_channels: image channels.
        num_classes: unused here (the head is added by `build_model`).
        image_size: unused (global average pooling handles any size).
        depth: total depth; must be 6n+4 (10, 16, 22, 28, 40, ...).
        widen: width multiplier k (stage widths 16k, 32k, 64k).
        dropout: dropout rate between the two convs of each block.

    Returns:
        (features module, feature_dim = 64 * widen).

    Raises:
        ValueError: depth is not 6n+4 with n >= 1, widen < 1, or dropout outside [0, 1).
    """
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wrn: depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}.")
    if not isinstance(widen, int) or widen < 1:
        raise ValueError(f"wrn: 'widen' must be a positive integer, got {widen!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"wrn: 'dropout' must be in [0, 1), got {dropout!r}.")
    net = WideResNet(in_channels, depth, widen, dropout)
    return net, net.out_features


@tested_with(ArchTestConfig(fast_max_image_size=8))  # 56M parameters: larger shapes only in the slow tests
@ARCHS.register("wrn40_10")
def wrn40_10(
    in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0
) -> tuple[nn.Module, int]:
    """WRN-40-10 (56M parameters), shorthand for `wrn` with depth=40, widen=10; GPU only in practice.

    Args:
        in_channels: image channels.
        num_classes: unused here (the head is added by `build_model`).
        image_size: unused (global average pooling handles any size).
        dropout: dropout rate between the two convs of each block.

    Returns:
        (features module, feature_dim = 640).
    """
    return wrn(in_channels, num_classes, image_size, depth=40, widen=10, dropout=dropout)
