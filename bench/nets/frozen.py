"""A frozen copy of a model for loops that only need input gradients and labels (fingerprint generation).

The copy is in eval mode, its parameters need no gradient, every Conv followed by an eval-mode
BatchNorm is folded into one Conv (torch.fx pattern fusion), and on CPU the copy runs in
channels_last layout and every single-channel-input Conv2d (the first layer of a grayscale model)
computes its input gradient as col2im(W^T grad) instead of oneDNN's backward-data kernel. The maths
are unchanged; float rounding differs from the original by ~1e-6 in the logits and ~1e-5 in input
gradients, so a caller that stores labels must take them from the original model (ADV-TRA does).

Measured on the quickstart source (convnet, 28x28, 2 CPU threads), gradient + forward per sample:
folding and channels_last, batch 150: 104 -> 59 us; batch 1: 779 -> 604 us. The column gradient of
the first conv: 1.9 -> 0.4-0.8 ms per 150-sample call (docs/methods/adv_tra.md, "Speed").
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class ChannelsLast(nn.Module):
    """Feeds 4-D inputs to `inner` in channels_last layout (gradients flow back to the caller's layout)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.inner(x)


class _ColumnInputGrad(torch.autograd.Function):
    """conv2d whose backward returns only the input gradient, as fold(W^T @ grad_out) (col2im).

    oneDNN's backward-data kernel vectorises over input channels, so with one input channel it
    runs 3-10x slower than the forward; the column form is one small matmul and one fold
    (measured: docs/methods/adv_tra.md, "Speed"). The weights must not need gradients.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.geometry = (tuple(x.shape[-2:]), stride, padding, dilation)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        size, stride, padding, dilation = ctx.geometry
        batch, out_channels = grad_out.shape[:2]
        columns = torch.matmul(weight.reshape(out_channels, -1).t(), grad_out.reshape(batch, out_channels, -1))
        # one fold over batch x channels: col2im loops over its batch dimension one element at a time
        grad_x = F.fold(columns.reshape(1, -1, columns.shape[-1]), size, weight.shape[-2:], dilation=dilation,
                        padding=padding, stride=stride)
        return grad_x.view(batch, weight.shape[1], *size), None, None, None, None, None


class ColumnGradConv2d(nn.Module):
    """A frozen single-group, zero-padded Conv2d whose input gradient goes through `_ColumnInputGrad`."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not column_grad_applies(conv):
            raise ValueError(f"ColumnGradConv2d needs groups=1, zero padding given as numbers and frozen weights; "
                             f"got {conv}.")
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:  # labels only: the plain kernel
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return _ColumnInputGrad.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def column_grad_applies(conv: nn.Module) -> bool:
    """True for the convs `ColumnGradConv2d` replaces: Conv2d, one input channel, one group, zero padding."""
    return (type(conv) is nn.Conv2d and conv.in_channels == 1 and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and not conv.weight.requires_grad
            and (conv.bias is None or not conv.bias.requires_grad))


def _replace_single_channel_convs(model: nn.Module) -> int:
    """Swap every applicable Conv2d for a `ColumnGradConv2d` in place; returns how many were swapped."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if column_grad_applies(child)]
    for parent, name, child in swaps:
        setattr(parent, name, ColumnGradConv2d(child))
    return len(swaps)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, bool]:
    """Return (a copy with Conv+BatchNorm pairs folded, True), or (the model, False) if fx cannot trace it.

    The model must be in eval mode (folding uses the running statistics).
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model, inplace=False), True
    except Exception as error:  # noqa: BLE001  (untraceable models: any fx error means "do not fold")
        log.debug("BatchNorm folding skipped (%s: %s)", type(error).__name__, error)
        return model, False


def frozen_copy(model: nn.Module, device: torch.device) -> tuple[nn.Module, dict[str, bool | int]]:
    """An eval-mode, gradient-free, BatchNorm-folded copy of `model`; on CPU also channels_last, with
    column input gradients for single-channel convs.

    The original is not modified. Returns the copy and what was applied
    ({"batchnorm_folded": ..., "column_grad_convs": n, "channels_last": ...}) for the caller's metadata.
    """
    frozen, folded = fold_batchnorm(copy.deepcopy(model).eval())
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    on_cpu = torch.device(device).type == "cpu"
    # both measured on CPU only (oneDNN); on a GPU cuDNN keeps its own kernels and layout
    column_convs = _replace_single_channel_convs(frozen) if on_cpu else 0
    if on_cpu:
        frozen = ChannelsLast(frozen.to(memory_format=torch.channels_last)).eval()
    return frozen, {"batchnorm_folded": folded, "column_grad_convs": column_convs, "channels_last": on_cpu}
