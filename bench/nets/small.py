"""CPU-fast families for tests, smoke runs and the quickstart: `convnet`, `lenet`, `mlp`.

They are three genuinely different families (BatchNorm CNN, classic LeNet-5, fully connected), so a
zoo can draw "different architecture" negatives from them. Each works for any image size from 8x8
upwards: pooling is skipped when the map is too small and capped with adaptive pooling when large.
"""

from __future__ import annotations

from torch import nn

from bench.nets.base import ARCHS

# The first conv of `convnet` strides by 2 from this size up (MNIST-sized inputs), keeping FLOPs small.
EARLY_DOWNSAMPLE_FROM = 24


def _pool_if_possible(size: int, layers: list[nn.Module]) -> int:
    """Append a 2x2 max pool when the map is at least 2x2; return the new spatial size."""
    if size >= 2:
        layers.append(nn.MaxPool2d(2))
        return size // 2
    return size


def _cap_spatial(size: int, cap: int, layers: list[nn.Module]) -> int:
    """Append an adaptive average pool down to `cap` x `cap` when the map is larger; return the size."""
    if size > cap:
        layers.append(nn.AdaptiveAvgPool2d(cap))
        return cap
    return size


def _check_positive(arch: str, **values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arch}: '{name}' must be a positive integer, got {value!r}.")


@ARCHS.register("convnet")
def convnet(
    in_channels: int, num_classes: int, image_size: int, width: int = 16, hidden: int = 64
) -> tuple[nn.Module, int]:
    """Small VGG-style CNN with BatchNorm (3 convs + 1 hidden FC); the fast default for CPU zoos.

    Layout: conv(width)-BN-ReLU, conv(width)-BN-ReLU, maxpool, conv(2*width)-BN-ReLU, maxpool,
    adaptive avg pool to at most 4x4, flatten, Linear(hidden)-ReLU.

    Args:
        in_channels: image channels.
        num_classes: unused here (the head is added by `build_model`).
        image_size: height (= width) of the input images.
        width: channels of the first two convs; the third has 2*width.
        hidden: size of the feature vector (the hidden fully connected layer).

    Returns:
        (features module, feature_dim = hidden).
    """
    _check_positive("convnet", width=width, hidden=hidden)
    stride = 2 if image_size >= EARLY_DOWNSAMPLE_FROM else 1
    size = (image_size - 1) // stride + 1  # 3x3 conv, padding 1
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    size = _pool_if_possible(size, layers)
    layers += [
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(inplace=True),
    ]
    size = _pool_if_possible(size, layers)
    size = _cap_spatial(size, 4, layers)
    flat = 2 * width * size * size
    layers += [nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers), hidden


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _init_for(module: nn.Module, activation: str) -> None:
    """He (ReLU) or Glorot (tanh) init: without BatchNorm, PyTorch's default shrinks the signal per layer."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if activation == "relu":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.xavier_normal_(layer.weight, gain=nn.init.calculate_gain("tanh"))
            nn.init.zeros_(layer.bias)


@ARCHS.register("lenet")
def lenet(
    in_channels: int,
    num_classes: int,
    image_size: int,
    c1: int = 6,
    c2: int = 16,
    hidden: int = 84,
    activation: str = "relu",
) -> tuple[nn.Module, int]:
    """LeNet-5 (LeCun et al. 1998): two 5x5 convs with pooling, FC 120 and FC `hidden`; no BatchNorm.

    Modernised where it helps training: 2x2 max pooling instead of subsampling, He/Glorot init.
    The second conv is padded on small inputs (< 10x10 after the first pool) so 8x8 images work;
    the last map is capped at 5x5 as in the original.

    Args:
        in_channels: image channels.
        num_classes: unused here (the head is added by `build_model`).
        image_size: height (= width) of the input images.
        c1: channels of the first conv.
        c2: channels of the second conv.
        hidden: size of the feature vector (the second fully connected layer).
        activation: "relu" or "tanh" (the original).

    Returns:
        (features module, feature_dim = hidden).
    """
    _check_positive("lenet", c1=c1, c2=c2, hidden=hidden)
    if activation not in ACTIVATIONS:
        raise ValueError(f"lenet: unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = [nn.Conv2d(in_channels, c1, 5, padding=2), act()]
    size = _pool_if_possible(image_size, layers)
    pad = 2 if size < 10 else 0
    layers += [nn.Conv2d(c1, c2, 5, padding=pad), act()]
    size = size + 2 * pad - 4
    size = _pool_if_possible(size, layers)
    size = _cap_spatial(size, 5, layers)
    flat = c2 * size * size
    layers += [nn.Flatten(), nn.Linear(flat, 120), act(), nn.Linear(120, hidden), act()]
    features = nn.Sequential(*layers)
    _init_for(features, activation)
    return features, hidden


@ARCHS.register("mlp")
def mlp(
    in_channels: int, num_classes: int, image_size: int, hidden: int = 256, depth: int = 2
) -> tuple[nn.Module, int]:
    """Fully connected network: flatten, then `depth` Linear(hidden)-ReLU layers.

    Args:
        in_channels: image channels.
        num_classes: unused here (the head is added by `build_model`).
        image_size: height (= width) of the input images.
        hidden: width of every hidden layer.
        depth: number of hidden layers (0 gives a linear model on raw pixels).

    Returns:
        (features module, feature_dim = hidden, or the pixel count when depth is 0).
    """
    _check_positive("mlp", hidden=hidden)
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"mlp: 'depth' must be a non-negative integer, got {depth!r}.")
    dim = in_channels * image_size * image_size
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [nn.Linear(dim, hidden), nn.ReLU(inplace=True)]
        dim = hidden
    return nn.Sequential(*layers), dim
