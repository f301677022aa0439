"""Post-training weight quantisation (int8 or fp16), simulated: weights are rounded to the grid and
stored back as float32, so every architecture, device and consumer of the zoo keeps working.

A removal attack users meet in deployment (e.g. `torch.ao.quantization`, TensorRT, fp16 export):
no training, no data. Every conv/linear weight is quantised; biases, BatchNorm and the
normalisation buffers stay float32 (as int8 backends keep biases in higher precision).

int8 uses PyTorch's own machinery, so the grid is exactly the one `torch.ao.quantization` deploys:
a MinMax observer (`PerChannelMinMaxObserver` on dim 0, or `MinMaxObserver`) with dtype qint8 and
PyTorch's default range [-128, 127] (no reduce_range) computes scale and zero point, and
`torch.fake_quantize_per_channel_affine` / `torch.fake_quantize_per_tensor_affine` round and map back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

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
    (`default_per_channel_weight_observer`: per_channel_symmetric, qint8, [-128, 127]; fbgemm/x86/onednn)."""

    dtype: str = "int8"  # int8 | fp16
    scope: str = "per_channel"  # int8 only: one scale per output channel (dim 0) | one per tensor
    symmetric: bool = True  # int8 only: PyTorch's *_symmetric (scale amax/127.5, zero point 0) | *_affine (min/max, zero point)
    seed: int = 0  # unused (deterministic); kept so every attack config has one

    def __post_init__(self) -> None:
        check_choice("quantize.dtype", self.dtype, QUANT_DTYPES)
        check_choice("quantize.scope", self.scope, QUANT_SCOPES)


def int8_observer(per_channel: bool, symmetric: bool) -> MinMaxObserver | PerChannelMinMaxObserver:
    """PyTorch's MinMax weight observer for qint8 with its default range [-128, 127] (reduce_range off)."""
    if per_channel:
        qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        return PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=qscheme)
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    return MinMaxObserver(dtype=torch.qint8, qscheme=qscheme)


def fake_quantize_int8(weight: torch.Tensor, per_channel: bool, symmetric: bool) -> torch.Tensor:
    """`weight` rounded to the int8 grid PyTorch's observer picks for it, as float (error <= scale / 2)."""
    w = weight.detach().float()
    observer = int8_observer(per_channel, symmetric)
    observer(w)
    scale, zero_point = observer.calculate_qparams()
    low, high = observer.quant_min, observer.quant_max
    if per_channel:
        rounded = torch.fake_quantize_per_channel_affine(w, scale, zero_point.to(torch.int32), 0, low, high)
    else:
        rounded = torch.fake_quantize_per_tensor_affine(w, float(scale), int(zero_point), low, high)
    return rounded.to(weight.dtype)


@ATTACKS.register
class Quantize(RemovalAttack):
    """Post-training weight quantisation (Jacob et al., CVPR 2018): int8 or fp16, simulated in float32.

    `info` records `max_abs_error`, the largest change of any weight.
    """

    family = "quantisation"
    strength_keys = ("dtype",)

    name = "quantize"
    Config = QuantizeConfig
    test_config = QuantizeConfig(dtype="int8", scope="per_channel")  # contract tests: the defaults, spelt out
    provenance_keys = ("dtype", "scope")
    revision = 1  # 1: int8 grids come from PyTorch's observers (were scale amax/127 on [-127, 127])

    def output_revision(self) -> int:
        """fp16 output never changed, so its models keep revision 0 (and their ids)."""
        return 0 if self.config.dtype == "fp16" else self.revision

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
