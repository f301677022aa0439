"""Fine-tuning removal attacks: FTLL, FTAL, RTLL, RTAL (one family, one class per registry key).

The four attacks of Adi et al. (USENIX Security 2018), used by every fingerprinting paper since
(ADV-TRA, IPGuard, CAE, UAP): fine-tune the last layer (FTLL) or all layers (FTAL), or first
re-initialise the last layer and then train it (RTLL) or everything (RTAL). Defaults follow ADV-TRA
(lr 1e-3 for FT*, 1e-2 for RT*, SGD momentum 0.9) except the epochs: the paper trains 50, we default
to 5 so that zoos build on a CPU; recipes that reproduce the paper set `epochs: 50`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from bench.seeding import seeded_generator
from bench.training_config import OptimizerConfig
from bench.zoo.attacks.base import (
    ATTACKS,
    AttackContext,
    AttackOutput,
    AttackTrainingConfig,
    RemovalAttack,
    train_attacked,
)


def _sgd(lr: float) -> OptimizerConfig:
    return OptimizerConfig(name="sgd", lr=lr, momentum=0.9, weight_decay=5e-4)


@dataclass
class FTLLConfig(AttackTrainingConfig):
    """FTLL: epochs 5 (paper 50), SGD lr 1e-3 momentum 0.9 (paper), batch 64, attacker split, true labels."""


@dataclass
class FTALConfig(AttackTrainingConfig):
    """FTAL: as FTLL, every layer trained."""


@dataclass
class RTLLConfig(AttackTrainingConfig):
    """RTLL: the head is re-initialised (seeded by `seed`), then trained with SGD lr 1e-2 (paper)."""

    optimizer: OptimizerConfig = field(default_factory=lambda: _sgd(1e-2))


@dataclass
class RTALConfig(AttackTrainingConfig):
    """RTAL: as RTLL, every layer trained."""

    optimizer: OptimizerConfig = field(default_factory=lambda: _sgd(1e-2))


class _FineTune(RemovalAttack):
    """Shared algorithm: optionally re-initialise the head, then train `head` or `all` parameters.

    With `head` the features are frozen for real: no gradients and their BatchNorm layers stay in
    eval mode, so running statistics do not move either (see `ClassifierModule`).
    """

    family = "fine-tuning"
    strength_keys = ("epochs", "optimizer.lr")

    trainable: ClassVar[str]
    reinit_head: ClassVar[bool]
    provenance_keys = ("epochs", "optimizer.lr")

    @classmethod
    def needs_linear_head(cls) -> bool:
        """Whether the attack needs the model's separate linear last layer (FTLL, RTLL, RTAL)."""
        return cls.trainable == "head" or cls.reinit_head

    def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        cfg = self.config
        if self.needs_linear_head() and not getattr(model, "has_linear_head", False):
            raise TypeError(f"{self.name} retrains or resets the last linear layer, and this {type(model).__name__} has "
                            "none (a whole model from a `factory:` arch). Make the factory return (features, "
                            "feature_dim), or drop this attack (docs/byo.md, Factories).")
        if self.reinit_head:
            model.reset_head(seeded_generator(cfg.seed))
        seconds, samples = train_attacked(model, source, ctx, cfg, trainable=self.trainable)
        info = {"trainable": self.trainable, "reinit_head": self.reinit_head, "train_samples": samples}
        return AttackOutput(model=model, info=info, train_seconds=seconds)


@ATTACKS.register
class FTLL(_FineTune):
    """FTLL (Adi et al., USENIX Sec 2018; ADV-TRA NeurIPS 2024): fine-tune the last layer only."""

    name = "ftll"
    Config = FTLLConfig
    test_config = FTLLConfig(epochs=1)  # contract tests (tests/zoo/test_attacks.py)
    trainable = "head"
    reinit_head = False


@ATTACKS.register
class FTAL(_FineTune):
    """FTAL (Adi et al., USENIX Sec 2018; ADV-TRA NeurIPS 2024): fine-tune all layers."""

    name = "ftal"
    Config = FTALConfig
    test_config = FTALConfig(epochs=1)  # contract tests (tests/zoo/test_attacks.py)
    trainable = "all"
    reinit_head = False


@ATTACKS.register
class RTLL(_FineTune):
    """RTLL (Adi et al., USENIX Sec 2018; ADV-TRA NeurIPS 2024): re-initialise the last layer, train it only."""

    name = "rtll"
    Config = RTLLConfig
    test_config = RTLLConfig(epochs=2)  # contract tests (tests/zoo/test_attacks.py)
    trainable = "head"
    reinit_head = True


@ATTACKS.register
class RTAL(_FineTune):
    """RTAL (Adi et al., USENIX Sec 2018; ADV-TRA NeurIPS 2024): re-initialise the last layer, train all."""

    name = "rtal"
    Config = RTALConfig
    test_config = RTALConfig(epochs=1)  # contract tests (tests/zoo/test_attacks.py)
    trainable = "all"
    reinit_head = True
