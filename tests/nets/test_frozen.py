"""The frozen copy used by generation loops: same function, BatchNorm folded, original untouched."""

from __future__ import annotations

import copy

import torch
from torch import nn

from bench.nets import build_model
from bench.nets.frozen import frozen_copy


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
    assert info == {"batchnorm_folded": True, "channels_last": True}
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
    assert info == {"batchnorm_folded": False, "channels_last": True}
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), atol=1e-6)
