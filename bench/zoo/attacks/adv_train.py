"""Adversarial training: fine-tune all layers on a mix of clean and L-inf PGD samples (Madry et al.).

ADV-TRA (NeurIPS 2024) lists adversarial training as the removal attack that hurts fingerprints
most: it moves the decision boundary exactly where fingerprint samples live. PGD (Madry et al.,
ICLR 2018) runs in [0,1] pixel space against the model being trained (eval-mode BatchNorm), and a
fraction `adv_ratio` of each batch is replaced by its adversarial version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from bench.training_config import OptimizerConfig, PGDConfig
from bench.zoo.attacks.base import (
    ATTACKS,
    AttackContext,
    AttackOutput,
    AttackTrainingConfig,
    RemovalAttack,
    check_range,
    train_attacked,
)


@dataclass
class AdvTrainConfig(AttackTrainingConfig):
    """Defaults: eps 0.01 (ADV-TRA's hardest case; it sweeps 0.001/0.01/0.1), 7 PGD steps of
    2.5*eps/steps with a random start (Madry's CIFAR-10 recipe), half of each batch adversarial
    (Goodfellow et al.'s clean/adversarial mix), 5 epochs (ours; the paper trains 20-50) with
    SGD lr 1e-2 momentum 0.9 (ours: a fine-tuning lr large enough for the boundary to move)."""

    eps: float = 0.01  # L-inf radius in [0,1] pixel units, 0 < eps <= 1
    steps: int = 7  # PGD iterations per batch
    step_size: float | None = None  # None: 2.5 * eps / steps (Madry et al.)
    random_start: bool = True  # start from a uniform point in the eps-ball
    adv_ratio: float = 0.5  # fraction of each batch replaced by PGD samples, 0 < adv_ratio <= 1
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(name="sgd", lr=1e-2, momentum=0.9, weight_decay=5e-4))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("adv_train.epochs", self.epochs, 1)  # without training it would not be an attack
        check_range("adv_train.eps", self.eps, 0.0, 1.0, low_open=True)
        check_range("adv_train.steps", self.steps, 1)
        if self.step_size is not None:
            check_range("adv_train.step_size", self.step_size, 0.0, low_open=True)
        check_range("adv_train.adv_ratio", self.adv_ratio, 0.0, 1.0, low_open=True)

    def pgd(self) -> PGDConfig:
        """The PGD settings `ClassifierModule` uses."""
        return PGDConfig(eps=self.eps, steps=self.steps, step_size=self.step_size,
                         random_start=self.random_start, adv_ratio=self.adv_ratio)


@ATTACKS.register
class AdvTrain(RemovalAttack):
    """Adversarial training (Madry et al., ICLR 2018; ADV-TRA, NeurIPS 2024): L-inf PGD + clean mix, all layers."""

    family = "adversarial training"
    strength_keys = ("eps", "epochs")

    name = "adv_train"
    Config = AdvTrainConfig
    test_config = AdvTrainConfig(eps=0.1, steps=5, epochs=6)  # contract tests (tests/zoo/test_attacks.py)
    provenance_keys = ("eps", "epochs", "optimizer.lr")

    def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        cfg = self.config
        seconds, samples = train_attacked(model, source, ctx, cfg, adversarial=cfg.pgd())
        info = {"eps": cfg.eps, "train_samples": samples}
        return AttackOutput(model=model, info=info, train_seconds=seconds)
