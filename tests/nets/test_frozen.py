"""The frozen copy used by generation loops: same function, BatchNorm folded, original untouched."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.nets import build_model
from bench.nets.frozen import ColumnGradConv2d, frozen_copy


def _convnet() -> nn.Module:
    model = build_model("convnet", in_channels=1, num_classes=10, image_size=28, mean=(0.3,), std=(0.35,), seed=0)
    with torch.no_grad():  # non-trivial running statistics, so folding has something to fold
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def test_folded_copy_matches_the_source_and_leaves_it_alone():
    model = _convnet().train()
    before = copy.deepcopy(model.state_dict())
    frozen, info = frozen_copy(model, torch.device("cpu"))
    assert info == {"batchnorm_folded": True, "column_grad_convs": 1, "channels_last": True}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert not any(p.requires_grad for p in frozen.parameters())
    # the source keeps its mode, gradients flags and weights
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(x)
    assert torch.allclose(frozen(x), expected, atol=1e-4)
    assert torch.equal(frozen(x).argmax(1), expected.argmax(1))
    # input gradients flow through the copy, in the caller's layout
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(frozen(x)[:, 3].sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0


class DataDependent(nn.Module):
    """torch.fx cannot trace a branch on tensor values: the copy must still work, unfolded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        if h.mean() > 0:
            h = h.relu()
        return self.head(h.mean((2, 3)))


def test_untraceable_model_is_copied_without_folding():
    model = DataDependent().eval()
    frozen, info = frozen_copy(model, torch.device("cpu"))
    assert info == {"batchnorm_folded": False, "column_grad_convs": 1, "channels_last": True}
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), atol=1e-6)


@pytest.mark.parametrize("stride, padding, dilation, kernel, size", [
    (2, 1, 1, 3, (28, 28)),  # the quickstart convnet's first layer
    (1, 1, 1, 3, (12, 12)),
    (2, 0, 1, 3, (13, 13)),  # the last row/column of the input is never read: its gradient is 0
    ((1, 2), (2, 1), 2, (3, 5), (11, 14)),
])
def test_column_input_gradient_equals_autograd(stride, padding, dilation, kernel, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, kernel, stride=stride, padding=padding, dilation=dilation).requires_grad_(False)
    column = ColumnGradConv2d(conv)
    x = torch.rand(4, 1, *size, requires_grad=True)
    out = column(x)
    assert torch.allclose(out, conv(x), atol=1e-6)
    upstream = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, upstream)
    (expected,) = torch.autograd.grad(F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation), x, upstream)
    assert grad.shape == x.shape
    assert torch.allclose(grad, expected, atol=1e-5)


def test_column_gradients_only_replace_frozen_single_channel_convs():
    with pytest.raises(ValueError, match="frozen weights"):
        ColumnGradConv2d(nn.Conv2d(1, 4, 3))  # trainable: its weight gradient would be lost
    with pytest.raises(ValueError, match="groups=1"):
        ColumnGradConv2d(nn.Conv2d(1, 4, 3, padding="same").requires_grad_(False))
    rgb = build_model("convnet", in_channels=3, num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, seed=0)
    frozen, info = frozen_copy(rgb.eval(), torch.device("cpu"))
    assert info["column_grad_convs"] == 0
    assert not any(isinstance(m, ColumnGradConv2d) for m in frozen.modules())


def test_gpu_copy_keeps_the_native_kernels():
    # channels_last and the column gradient were measured on CPU only; folding applies everywhere.
    # Only the target device's type is read, so this runs without a GPU.
    frozen, info = frozen_copy(_convnet().eval(), torch.device("cuda"))
    assert info == {"batchnorm_folded": True, "column_grad_convs": 0, "channels_last": False}
    assert not any(isinstance(m, ColumnGradConv2d) for m in frozen.modules())
