"""`SmoothingModule`, the Lightning half of `ftsmooth` (bench/zoo/attacks/ftsmooth.py).

It subclasses the Lightning `ClassifierModule`, so it lives apart from the attack's registration and
config: `ftsmooth` imports it only when it trains, and listing or validating attacks stays light.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.seeding import seeded_generator
from bench.training import ClassifierModule
from bench.zoo.attacks.ftsmooth import MIXUP_STREAM, FTSmoothConfig, sample_beta, smooth_targets


class SmoothingModule(ClassifierModule):
    """`ClassifierModule` that trains on smoothed and/or mixed-up targets (soft cross-entropy).

    Mixup follows Zhang et al.'s reference recipe: one lambda ~ Beta(alpha, alpha) per batch, the batch
    mixed with a random permutation of itself; lambdas and permutations come from a CPU generator
    seeded with the attack's seed, so a run is the same on every device.
    """

    def __init__(self, model: nn.Module, cfg: FTSmoothConfig, num_classes: int) -> None:
        super().__init__(model, cfg.optimizer, cfg.schedule, cfg.epochs, trainable="all", temperature=1.0)
        self.smoothing, self.mixup_alpha, self.num_classes = cfg.smoothing, cfg.mixup_alpha, num_classes
        self.mix_generator = seeded_generator(cfg.seed, MIXUP_STREAM)
        self.lambdas: list[float] = []  # every lambda drawn, in order (in this process; tests read it)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, labels = batch
        target = labels if labels.dtype.is_floating_point else smooth_targets(labels, self.num_classes, self.smoothing)
        if self.mixup_alpha > 0:
            lam = sample_beta(self.mixup_alpha, self.mix_generator)
            order = torch.randperm(x.shape[0], generator=self.mix_generator).to(x.device)
            x = lam * x + (1.0 - lam) * x[order]  # a convex combination of [0,1] images stays in [0,1]
            target = lam * target + (1.0 - lam) * target[order]
            self.lambdas.append(lam)
        return super().training_step((x, target), batch_idx)
