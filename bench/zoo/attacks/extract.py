"""Model extraction: a fresh substitute trained only on the source's answers (hard labels or soft
probabilities, i.e. knowledge distillation) over the attacker's data, within an explicit query budget.

The substitute never sees the source's weights: it is built from scratch (`bench.nets.new_model`,
seeded by `seed`), of the source's architecture (`arch: null`) or another one. Each attacker sample
is queried once; `info["queries"]` records how many were.

`query_data` chooses what the attacker queries: its own split (`attacker`, the default), that split
under strong seeded transforms (`transformed`), or synthetic images from no task at all
(`synthetic`): the out-of-distribution extraction of issue #19, an adaptive attack on fingerprints
that rely on the source's behaviour on its own data distribution (docs/attacks.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.nets import check_arch, new_model
from bench.seeding import seeded_generator
from bench.training_config import OptimizerConfig
from bench.zoo.attacks.base import (
    ATTACKS,
    AttackContext,
    AttackOutput,
    AttackTrainingConfig,
    RemovalAttack,
    check_choice,
    check_range,
    source_outputs,
    train_attacked,
)
from bench.zoo.attacks.query_data import synthetic_queries, transformed_queries

LABEL_KINDS = ("hard", "soft")
QUERY_DATA = ("attacker", "transformed", "synthetic")
QUERY_STREAM = 1  # the query set's generator is seeded_generator(seed, QUERY_STREAM), apart from the loader's


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
    query_data: str = "attacker"  # attacker | transformed | synthetic (fpbench decision; the default keeps every id)
    epochs: int = 10
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="adam", lr=1e-3, weight_decay=0.0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels != "source":
            raise ValueError(f"extract.labels='{self.labels}' is not allowed: extraction only uses the source's "
                             "answers, so it must be 'source'; choose hard or soft answers with `labels_kind`.")
        check_range("extract.epochs", self.epochs, 1)  # the substitute starts untrained
        check_choice("extract.labels_kind", self.labels_kind, LABEL_KINDS)
        check_choice("extract.query_data", self.query_data, QUERY_DATA)
        check_range("extract.temperature", self.temperature, 0.0, low_open=True)
        if self.query_budget is not None:
            check_range("extract.query_budget", self.query_budget, 1)
        if self.arch is not None:
            try:
                check_arch(self.arch, self.arch_params)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"extract.arch='{self.arch}' with arch_params={self.arch_params}: {exc}") from None


@ATTACKS.register
class Extract(RemovalAttack):
    """Model extraction (Tramer et al., USENIX Sec 2016; ADV-TRA, NeurIPS 2024).

    A fresh substitute trained on the source's answers: hard labels, or soft probabilities at a
    temperature (knowledge distillation, Hinton et al. 2015); the source is only queried, each attacker
    sample once, within `query_budget`. With `query_data`
    `transformed` or `synthetic` the queries are out-of-distribution inputs of the attacker's own
    (`bench.zoo.attacks.query_data`), made once from `seed` and queried once each.
    """

    family = "extraction"
    strength_keys = ("labels_kind", "query_budget", "query_data", "arch", "epochs")

    name = "extract"
    Config = ExtractConfig
    test_config = ExtractConfig(epochs=10)  # contract tests (tests/zoo/test_attacks.py)
    provenance_keys = ("arch", "labels_kind", "query_budget", "epochs")  # non-default query_data is shown too

    def config_dict(self) -> dict[str, Any]:
        """The config as the manifest records and the model id hashes it: `query_data` is left out at
        its default (`attacker`), so every extraction planned before the field existed keeps its id."""
        params = super().config_dict()
        if params["query_data"] == "attacker":
            del params["query_data"]
        return params

    def uses_training_data(self) -> bool:
        """Only in-distribution queries train on the split's (possibly augmented) images; the
        out-of-distribution query sets are fixed tensors, so `data.augment` does not change them."""
        return self.config.query_data == "attacker" and super().uses_training_data()

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
        if cfg.query_data == "attacker":
            seconds, queries = train_attacked(substitute, source, ctx, cfg, labels="source", limit=cfg.query_budget,
                                              soft_temperature=soft)
        else:
            seconds, queries = self._train_on_queries(substitute, source, ctx, self.query_inputs(ctx), soft)
        info = {"queries": queries, "arch": arch, "arch_params": params, "labels_kind": cfg.labels_kind,
                "query_data": cfg.query_data}
        return AttackOutput(model=substitute, info=info, train_seconds=seconds)

    def query_inputs(self, ctx: AttackContext) -> torch.Tensor:
        """The out-of-distribution inputs the attacker queries (`transformed` or `synthetic`), in [0,1]:
        `query_budget` of them (None: as many as `split` holds), a pure function of `seed`."""
        cfg = self.config
        generator = seeded_generator(cfg.seed, QUERY_STREAM)
        if cfg.query_data == "transformed":
            x, _ = ctx.datamodule.tensors(cfg.split, cfg.query_budget)  # the labels stay unused
            return transformed_queries(x, generator)
        dm = ctx.datamodule  # synthetic: as many inputs as the split would give, of the data's shape
        n = dm.split_size(cfg.split) if cfg.query_budget is None else min(dm.split_size(cfg.split), cfg.query_budget)
        return synthetic_queries(n, (dm.in_channels, dm.image_size, dm.image_size), generator)

    def _train_on_queries(self, substitute: nn.Module, source: nn.Module, ctx: AttackContext, x: torch.Tensor,
                          soft_temperature: float | None) -> tuple[float, int]:
        """Query the source once per input, then train `substitute` on its answers (as `train_attacked`)."""
        from bench.training import ClassifierModule  # optional: heavy (Lightning training loop)

        cfg = self.config
        logits = source_outputs(source, x)
        y = (logits / soft_temperature).softmax(dim=1) if soft_temperature is not None else logits.argmax(dim=1)
        loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True,
                            generator=seeded_generator(cfg.seed))
        substitute.train()
        module = ClassifierModule(substitute, cfg.optimizer, cfg.schedule, cfg.epochs,
                                  temperature=soft_temperature or 1.0)
        seconds = ctx.fit(module, loader, cfg.seed)
        substitute.cpu().eval()
        return seconds, len(x)
