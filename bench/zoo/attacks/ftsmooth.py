"""Boundary-smoothing fine-tuning (`ftsmooth`): FTAL with label smoothing and/or mixup.

An adaptive removal attack (issue #19): a thief who knows that boundary-based fingerprints (ADV-TRA,
IPGuard) read the source's exact decision boundaries fine-tunes every layer with targets that move
and soften those boundaries. Label smoothing (Szegedy et al., CVPR 2016) caps the confidence the
model is trained towards, so the logit margins near a boundary shrink; mixup (Zhang et al., ICLR
2018) trains on convex combinations of images and labels, which makes the model behave linearly
between classes and shifts where the boundaries lie. Both keep the attacker's accuracy.

The training module (`SmoothingModule`, a Lightning `ClassifierModule`) lives in `_ftsmooth_module.py`,
imported only when the attack trains, so listing and validating attacks does not load Lightning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.checks import check
from bench.zoo.attacks.base import (
    ATTACKS,
    AttackContext,
    AttackOutput,
    AttackTrainingConfig,
    RemovalAttack,
    attack_loader,
    check_range,
)

MIXUP_STREAM = 2  # mixup's generator is seeded_generator(seed, MIXUP_STREAM), apart from the loader's shuffle


@dataclass
class FTSmoothConfig(AttackTrainingConfig):
    """FTAL's recipe (epochs 5, SGD lr 1e-3 momentum 0.9, wd 5e-4, batch 64, attacker split, true
    labels) so that `ftsmooth` differs from `ftal` only in its targets; the paper-protocol 50 epochs
    are a recipe's choice, as for FTAL."""

    smoothing: float = 0.1  # label-smoothing epsilon in [0, 1): Szegedy et al. 2016 (Inception-v3) use 0.1
    mixup_alpha: float = 0.2  # Beta(alpha, alpha) mixing weight, >= 0: Zhang et al. 2018's ImageNet value (0.1-0.4)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("ftsmooth.smoothing", self.smoothing, 0.0, 1.0, high_open=True)
        check_range("ftsmooth.mixup_alpha", self.mixup_alpha, 0.0)
        check("ftsmooth.smoothing", self.smoothing, self.smoothing > 0 or self.mixup_alpha > 0,
              "> 0 when mixup_alpha is 0 (with both 0 this is plain FTAL: use `attack: ftal`, or set "
              "smoothing: 0.1 or mixup_alpha: 0.2)")


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha) from `generator` (torch's Beta sampler takes no generator).

    Beta(a, a) = G1 / (G1 + G2) with G1, G2 ~ Gamma(a); each Gamma by Marsaglia and Tsang (2000),
    boosted by U^(1/a) for a < 1.
    """
    g1, g2 = _sample_gamma(alpha, generator), _sample_gamma(alpha, generator)
    return g1 / (g1 + g2) if g1 + g2 > 0 else 0.5


def _sample_gamma(shape: float, generator: torch.Generator) -> float:
    boost = 1.0
    if shape < 1.0:  # Gamma(a) = Gamma(a + 1) * U^(1/a)
        boost = float(torch.rand((), generator=generator, dtype=torch.float64)) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    while True:  # accepts with probability > 0.95 per try
        z = float(torch.randn((), generator=generator, dtype=torch.float64))
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        v = (1.0 + c * z) ** 3
        if v > 0 and u > 0 and math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost


def smooth_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot `labels` mixed with the uniform distribution: (1 - eps) * onehot + eps / K (Szegedy et al.)."""
    onehot = F.one_hot(labels, num_classes).float()
    return onehot * (1.0 - smoothing) + smoothing / num_classes


@ATTACKS.register
class FTSmooth(RemovalAttack):
    """Adaptive FTAL: all layers fine-tuned with label smoothing (Szegedy, CVPR 2016) and/or mixup (Zhang, ICLR 2018).

    An adaptive attack (issue #19) on boundary-based fingerprints (ADV-TRA, IPGuard): FTAL (Adi et al.,
    USENIX Sec 2018) with targets that soften and move the source's decision boundaries. Every layer is
    fine-tuned on the attacker's split with smoothed targets, mixed-up inputs, or both.
    """

    family = "adaptive"
    strength_keys = ("smoothing", "mixup_alpha", "epochs")

    name = "ftsmooth"
    Config = FTSmoothConfig
    test_config = FTSmoothConfig(epochs=1)  # contract tests (tests/zoo/test_attacks.py)
    provenance_keys = ("epochs", "optimizer.lr", "smoothing", "mixup_alpha")

    def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        # optional: heavy (Lightning training loop)
        from bench.zoo.attacks._ftsmooth_module import SmoothingModule

        cfg = self.config
        for param in model.parameters():
            param.requires_grad_(True)
        model.train()  # the copied source arrives in eval mode (see `train_attacked`)
        loader = attack_loader(ctx, source, cfg.split, cfg.labels, cfg.batch_size, cfg.seed)
        module = SmoothingModule(model, cfg, ctx.datamodule.num_classes)
        seconds = ctx.fit(module, loader, cfg.seed)
        model.cpu().eval()
        info = {"train_samples": len(loader.dataset), "smoothing": cfg.smoothing,  # type: ignore[arg-type]
                "mixup_alpha": cfg.mixup_alpha}
        return AttackOutput(model=model, info=info, train_seconds=seconds)
