"""Magnitude pruning, made permanent, optionally followed by fine-tuning.

Han et al. (NeurIPS 2015) magnitude pruning as used by ADV-TRA (NeurIPS 2024), IPGuard and CAE:
zero the fraction `rate` of conv and linear weights with the smallest magnitude (over all of them:
`scope: global`, or in every tensor separately: `scope: layer`), then fine-tune all layers while the
pruned weights stay exactly zero (masks via `torch.nn.utils.prune`, removed at the end so the saved
weights themselves hold the zeros). Biases, BatchNorm and the normalisation buffers are never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from bench.zoo.attacks.base import (
    ATTACKS,
    AttackContext,
    AttackOutput,
    AttackTrainingConfig,
    RemovalAttack,
    check_choice,
    check_range,
    format_params,
    train_attacked,
)

PRUNE_SCOPES = ("global", "layer")
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class PruneConfig(AttackTrainingConfig):
    """Defaults: rate 0.4 (ADV-TRA Table 1 uses 0.2/0.4/0.8), global scope, head included, then
    2 fine-tuning epochs (ours; the paper fine-tunes 10) with SGD lr 1e-3 momentum 0.9."""

    rate: float = 0.4  # fraction of the prunable weights set to zero, 0 <= rate < 1
    scope: str = "global"  # global: one magnitude threshold over all tensors | layer: the rate in each tensor
    include_head: bool = True  # prune the last layer too (as the paper's whole-model pruning does)
    epochs: int = 2  # fine-tuning epochs after pruning; 0 = prune only

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("prune.rate", self.rate, 0.0, 1.0, high_open=True)
        check_choice("prune.scope", self.scope, PRUNE_SCOPES)


def prunable_weights(model: nn.Module, include_head: bool = True) -> list[tuple[str, nn.Module]]:
    """(name, module) of every conv/linear layer whose `weight` the attack prunes."""
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, PRUNABLE) and (include_head or not (name == "head" or name.startswith("head.")))]


def magnitude_masks(weights: list[torch.Tensor], rate: float, scope: str) -> list[torch.Tensor]:
    """Boolean keep-masks that zero exactly round(rate * n) smallest-magnitude entries (per tensor or
    over all of them); ties are broken by position, so the count is exact."""
    if scope == "layer":
        return [magnitude_masks([w], rate, "global")[0] for w in weights]
    flat = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights])
    n_prune = int(round(rate * flat.numel()))
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    masks, start = [], 0
    for w in weights:
        masks.append(keep[start:start + w.numel()].view_as(w))
        start += w.numel()
    return masks


def sparsity(tensors: list[torch.Tensor]) -> float:
    """Fraction of exactly-zero entries over `tensors`."""
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / max(total, 1)


@ATTACKS.register
class Prune(RemovalAttack):
    """Magnitude pruning (Han et al., NeurIPS 2015; ADV-TRA, NeurIPS 2024), permanent, then fine-tuning.

    `info` records the sparsity measured over the pruned tensors after fine-tuning.
    """

    family = "pruning"
    strength_keys = ("rate", "epochs")

    name = "prune"
    Config = PruneConfig
    test_config = PruneConfig(rate=0.5, scope="global", epochs=1)  # contract tests (tests/zoo/test_attacks.py)
    provenance_keys = ("rate", "scope")

    def provenance(self) -> str:
        """`prune(rate=0.4,scope=global)->finetune(epochs=2,lr=0.001)`; no finetune part when epochs = 0."""
        prune_fields = ("rate", "scope", "include_head", "seed")
        text = f"prune({format_params(self.config, self.provenance_keys, only=prune_fields)})"
        if self.config.epochs > 0:
            text += f"->finetune({format_params(self.config, ('epochs', 'optimizer.lr'), exclude=prune_fields)})"
        return text

    def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        cfg = self.config
        layers = prunable_weights(model, cfg.include_head)
        if not layers:
            raise ValueError(f"prune: {type(model).__name__} has no conv/linear weights to prune.")
        masks = magnitude_masks([module.weight for _, module in layers], cfg.rate, cfg.scope)
        for (_, module), mask in zip(layers, masks):  # weight = weight_orig * mask in every forward
            torch_prune.custom_from_mask(module, "weight", mask.to(module.weight.device))
        seconds, samples = train_attacked(model, source, ctx, cfg) if cfg.epochs > 0 else (0.0, 0)
        modules = [model.get_submodule(name) for name, _ in layers]  # looked up again after training
        for module in modules:
            torch_prune.remove(module, "weight")  # permanent: the zeros live in `weight` itself
        weights = [module.weight.detach() for module in modules]
        info = {
            "sparsity": sparsity(weights),
            "target_rate": cfg.rate,
            "pruned_tensors": len(weights),
            "prunable_weights": sum(w.numel() for w in weights),
            "train_samples": samples,
        }
        return AttackOutput(model=model.cpu().eval(), info=info, train_seconds=seconds)

