"""Post-training weight quantisation (int8 or fp16), simulated: weights are rounded to the grid and
stored back as float32, so every architecture, device and consumer of the zoo keeps working.

A removal attack users meet in deployment (e.g. `torch.ao.quantization`, TensorRT, fp16 export):
no training, no data. Every conv/linear weight is quantised; biases, BatchNorm and the
normalisation buffers stay float32 (as int8 backends keep biases in higher precision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bench.zoo.attacks.base import (
    ATTACKS,
    AttackContext,
    AttackOutput,
    RemovalAttack,
    check_choice,
    format_params,
)
from bench.zoo.attacks.prune import prunable_weights

QUANT_DTYPES = ("int8", "fp16")
QUANT_SCOPES = ("per_channel", "per_tensor")


@dataclass
class QuantizeConfig:
    """Defaults: int8, per-channel, symmetric: PyTorch's default weight observer for conv/linear
    (`per_channel_symmetric`, fbgemm/x86)."""

    dtype: str = "int8"  # int8 | fp16
    scope: str = "per_channel"  # int8 only: one scale per output channel | one per tensor
    symmetric: bool = True  # int8 only: grid -127..127 around 0 | affine -128..127 with a zero point
    seed: int = 0  # unused (deterministic); kept so every attack config has one
    attack_name: ClassVar[str] = "quantize"

    def __post_init__(self) -> None:
        check_choice("quantize.dtype", self.dtype, QUANT_DTYPES)
        check_choice("quantize.scope", self.scope, QUANT_SCOPES)


def int8_scales(weight: torch.Tensor, per_channel: bool, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) broadcastable to `weight`; per channel = along dim 0 (output channels)."""
    w = weight.detach().float()
    if per_channel and w.dim() > 1:
        flat = w.flatten(1)
        w_min, w_max = flat.min(dim=1).values, flat.max(dim=1).values
        shape = (-1,) + (1,) * (w.dim() - 1)
    else:
        w_min, w_max, shape = w.min().reshape(1), w.max().reshape(1), (1,) * w.dim()
    tiny = torch.finfo(torch.float32).tiny
    if symmetric:
        scale = (torch.maximum(w_max.abs(), w_min.abs()) / 127).clamp_min(tiny)
        zero_point = torch.zeros_like(scale)
    else:  # the range always contains 0, so 0 is exactly representable
        w_min, w_max = w_min.clamp(max=0), w_max.clamp(min=0)
        scale = ((w_max - w_min) / 255).clamp_min(tiny)
        zero_point = (-128 - torch.round(w_min / scale)).clamp(-128, 127)
    return scale.view(shape), zero_point.view(shape)


def fake_quantize_int8(weight: torch.Tensor, per_channel: bool, symmetric: bool) -> torch.Tensor:
    """Round `weight` to its int8 grid and map it back to float32 (error <= scale / 2 per entry)."""
    scale, zero_point = int8_scales(weight, per_channel, symmetric)
    low, high = (-127, 127) if symmetric else (-128, 127)
    q = (torch.round(weight.detach().float() / scale) + zero_point).clamp(low, high)
    return ((q - zero_point) * scale).to(weight.dtype)


@ATTACKS.register("quantize")
class Quantize(RemovalAttack):
    """Post-training weight quantisation (Jacob et al., CVPR 2018): int8 or fp16, simulated in float32.

    `info` records `max_abs_error`, the largest change of any weight.
    """

    name = "quantize"
    Config = QuantizeConfig
    provenance_keys = ("dtype", "scope")

    def provenance(self) -> str:
        """`quantize(dtype=int8,scope=per_channel)`; fp16 ignores scope and symmetric, so they are not shown."""
        exclude = ("scope", "symmetric") if self.config.dtype == "fp16" else ()
        return f"{self.name}({format_params(self.config, self.provenance_keys, exclude=exclude)})"

    def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        cfg = self.config
        max_error, count = 0.0, 0
        with torch.no_grad():
            for _, module in prunable_weights(model, include_head=True):
                weight = module.weight
                if cfg.dtype == "fp16":
                    rounded = weight.half().to(weight.dtype)
                else:
                    rounded = fake_quantize_int8(weight, cfg.scope == "per_channel", cfg.symmetric)
                max_error = max(max_error, float((rounded - weight).abs().max()))
                weight.copy_(rounded)
                count += 1
        info = {"max_abs_error": max_error, "quantized_tensors": count, "dtype": cfg.dtype}
        return AttackOutput(model=model.eval(), info=info, train_seconds=0.0)
