"""Model extraction: a fresh substitute trained only on the source's answers (hard labels or soft
probabilities, i.e. knowledge distillation) over the attacker's data, within an explicit query budget.

The substitute never sees the source's weights: it is built from scratch (`bench.nets.new_model`,
seeded by `seed`), of the source's architecture (`arch: null`) or another one. Each attacker sample
is queried once; `info["queries"]` records how many were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from bench.nets import check_arch, new_model
from bench.training import OptimizerConfig
from bench.zoo.attacks.base import (
    ATTACKS,
    AttackContext,
    AttackOutput,
    AttackTrainingConfig,
    RemovalAttack,
    check_choice,
    check_range,
    train_attacked,
)

LABEL_KINDS = ("hard", "soft")


@dataclass
class ExtractConfig(AttackTrainingConfig):
    """Defaults (ours; the papers leave them to the attacker): the source's architecture, hard
    labels, the whole attacker split as the query budget, 10 epochs of Adam lr 1e-3 without weight
    decay, batch 64. Soft labels use temperature 4 (the usual knowledge-distillation choice; Hinton
    et al. 2015 use 1-20); a probability API allows any temperature, since log p = logits + const."""

    arch: str | None = None  # substitute architecture; None: the source's (the zoo passes it)
    arch_params: dict[str, Any] = field(default_factory=dict)  # build_model params (None arch: overrides of the source's)
    labels: str = "source"  # extraction only ever uses the source's answers; no other value is allowed
    labels_kind: str = "hard"  # hard: the source's top-1 labels | soft: its probabilities at `temperature`
    temperature: float = 4.0  # soft only: distillation temperature, > 0
    query_budget: int | None = None  # attacker samples queried (the first N of the split); None: all of it
    epochs: int = 10
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="adam", lr=1e-3, weight_decay=0.0))
    attack_name: ClassVar[str] = "extract"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels != "source":
            raise ValueError(f"extract.labels='{self.labels}' is not allowed: extraction only uses the source's "
                             "answers, so it must be 'source'; choose hard or soft answers with `labels_kind`.")
        check_range("extract.epochs", self.epochs, 1)  # the substitute starts untrained
        check_choice("extract.labels_kind", self.labels_kind, LABEL_KINDS)
        check_range("extract.temperature", self.temperature, 0.0, low_open=True)
        if self.query_budget is not None:
            check_range("extract.query_budget", self.query_budget, 1)
        if self.arch is not None:
            try:
                check_arch(self.arch, self.arch_params)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"extract.arch='{self.arch}' with arch_params={self.arch_params}: {exc}") from None


@ATTACKS.register("extract")
class Extract(RemovalAttack):
    """Model extraction (Tramer et al., USENIX Sec 2016; ADV-TRA, NeurIPS 2024): a fresh substitute trained on the source's answers.

    Hard labels, or soft probabilities at a temperature (knowledge distillation, Hinton et al. 2015);
    the source is only queried, each attacker sample once, within `query_budget`.
    """

    name = "extract"
    Config = ExtractConfig
    provenance_keys = ("arch", "labels_kind", "query_budget", "epochs")

    def resolve_arch(self, ctx: AttackContext) -> tuple[str, dict[str, Any]]:
        """The substitute's architecture and params (the source's when `arch` is None)."""
        cfg = self.config
        if cfg.arch is not None:
            return cfg.arch, dict(cfg.arch_params)
        if not ctx.source_arch:
            raise ValueError("extract.arch is None (use the source's architecture) but the AttackContext has no "
                             "`source_arch`; set extract.arch or pass source_arch in the context.")
        return ctx.source_arch, {**ctx.source_arch_params, **cfg.arch_params}

    def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        cfg = self.config
        arch, params = self.resolve_arch(ctx)
        substitute = new_model(arch, params, ctx.datamodule, cfg.seed)
        soft = cfg.temperature if cfg.labels_kind == "soft" else None
        seconds, queries = train_attacked(substitute, source, ctx, cfg, labels="source", limit=cfg.query_budget,
                                          soft_temperature=soft)
        info = {"queries": queries, "arch": arch, "arch_params": params, "labels_kind": cfg.labels_kind}
        return AttackOutput(model=substitute, info=info, train_seconds=seconds)
