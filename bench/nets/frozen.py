"""A frozen copy of a model for loops that only need input gradients and labels (fingerprint generation).

The copy is in eval mode, its parameters need no gradient, every Conv followed by an eval-mode
BatchNorm is folded into one Conv (torch.fx pattern fusion), and on CPU it runs in channels_last
layout. The maths are unchanged; float rounding differs from the original by ~1e-6 in the logits,
so a caller that stores labels must take them from the original model (ADV-TRA does).

Measured on the quickstart source (convnet, 28x28, 2 CPU threads), gradient + forward per sample:
batch 150: 104 -> 59 us; batch 1: 779 -> 604 us (docs/methods/adv_tra.md, "Speed").
"""

from __future__ import annotations

import copy
import logging

import torch
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


def frozen_copy(model: nn.Module, device: torch.device) -> tuple[nn.Module, dict[str, bool]]:
    """An eval-mode, gradient-free, BatchNorm-folded copy of `model`; channels_last on CPU.

    The original is not modified. Returns the copy and what was applied
    ({"batchnorm_folded": ..., "channels_last": ...}) for the caller's metadata.
    """
    frozen, folded = fold_batchnorm(copy.deepcopy(model).eval())
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    channels_last = torch.device(device).type == "cpu"
    if channels_last:
        frozen = ChannelsLast(frozen.to(memory_format=torch.channels_last)).eval()
    return frozen, {"batchnorm_folded": folded, "channels_last": channels_last}
