"""Defender pools: the models a fingerprinting method trains for itself, beside the source.

A method declares what it needs as a `PoolSpec`; the zoo planner (`bench.zoo.plan`) turns the spec
into jobs with role `pool`, the evaluation loop loads the built models into `Pools`. This module is
neutral ground: the zoo imports it, never `bench.methods`.

The defender knows its own data and its own source, and chooses its own architectures, but not how
the attacker extracts or how independent parties train. So the defaults below differ on purpose
from the zoo's `extract` attack (hard labels, temperature 4, Adam lr 1e-3, 10 epochs, attacker
split) and from the negatives' recipe (the source's recipe with seeds 1, 2, ...); see docs/pools.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

SOURCE_ARCH = "source"  # in an architecture list: the source's architecture (and its arch_params)
LABEL_KINDS = ("hard", "soft")  # what a surrogate learns from: the source's top-1 labels or its probabilities

# Defender defaults, shared by every pooled method (CAE, UAP) so that they share one pool.
DEFAULT_POOL_ARCHS = (SOURCE_ARCH, "lenet")  # the source's family plus a second, cheap on any input size
DEFAULT_POOL_SEEDS = 2  # models per architecture and role
DEFAULT_REFERENCE_LR_SCALE = 0.5  # references: the source's optimizer at half its lr (negatives: the full lr)
DEFAULT_SURROGATE_LABELS = "soft"  # distillation; the zoo's extract attack defaults to hard labels
DEFAULT_SURROGATE_TEMPERATURE = 2.0  # the zoo's extract attack defaults to 4
DEFAULT_SURROGATE_LR = 2e-3  # Adam; the zoo's extract attack defaults to 1e-3


@dataclass
class PoolSpec:
    """Defender models a method needs beyond the source, built by the zoo with role `pool`.

    `surrogates` are extracted from the source on the owner's data (so they imitate it);
    `references` are trained from scratch on the owner's data (so they do not). One model per
    (architecture, seed) and role, seeds `zoo.pool_seed_offset + 0 .. seeds - 1`. An architecture
    named `"source"` is the source's own (with its arch_params), resolved when the zoo is planned.
    """

    surrogate_archs: list[str] = field(default_factory=lambda: list(DEFAULT_POOL_ARCHS))
    reference_archs: list[str] = field(default_factory=lambda: list(DEFAULT_POOL_ARCHS))
    seeds: int = DEFAULT_POOL_SEEDS
    epochs: int | None = None  # references, and surrogates unless surrogate_epochs; None: the source's
    reference_lr_scale: float = DEFAULT_REFERENCE_LR_SCALE  # references: the source's lr times this
    surrogate_labels: str = DEFAULT_SURROGATE_LABELS  # hard | soft
    surrogate_temperature: float = DEFAULT_SURROGATE_TEMPERATURE  # soft labels only
    surrogate_epochs: int | None = None  # None: `epochs` (and if that is None, the source's)
    surrogate_lr: float = DEFAULT_SURROGATE_LR  # Adam lr of the surrogates, no weight decay
    surrogate_queries: int | None = None  # owner samples the source labels for a surrogate; None: the whole split

    def __post_init__(self) -> None:
        problems = []
        if self.seeds < 1:
            problems.append(f"seeds={self.seeds!r} must be >= 1")
        for name in ("epochs", "surrogate_epochs", "surrogate_queries"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name}={value!r} must be >= 1 or None")
        for name in ("reference_lr_scale", "surrogate_temperature", "surrogate_lr"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)!r} must be > 0")
        if self.surrogate_labels not in LABEL_KINDS:
            problems.append(f"surrogate_labels={self.surrogate_labels!r} must be one of {', '.join(LABEL_KINDS)}")
        if problems:
            raise ValueError(f"PoolSpec: {'; '.join(problems)}.")


@dataclass
class Pools:
    """Loaded defender models, handed to a method in its GenerationContext."""

    surrogates: list[nn.Module] = field(default_factory=list)
    references: list[nn.Module] = field(default_factory=list)
    model_ids: list[str] = field(default_factory=list)


# Facts compared between a pool model and the scored suspects, in the order a note lists them.
COMPARED_FACTS = ("procedure", "arch", "split", "seed", "epochs", "lr", "labels", "temperature", "queries")


def differs_from_suspects(pool_facts: dict[str, Any], suspects: list[dict[str, Any]]) -> dict[str, Any]:
    """How a pool model differs from the scored suspect closest to it.

    Args:
        pool_facts: the pool model's facts (keys `COMPARED_FACTS`).
        suspects: one dict per scored suspect: its facts plus `model_id`, `role`, `group`, `provenance`.

    Returns:
        `{closest, closest_role, closest_group, fields, note}`: the suspect made the same way (same
        `procedure`, e.g. an extraction for a surrogate) with the fewest differing facts, or if none
        is, the one with the fewest overall (the first in plan order on a tie); the facts that
        differ; a readable line. `closest` is None when there is no suspect.
    """
    best: tuple[tuple[bool, int], dict[str, Any], list[str]] | None = None
    for suspect in suspects:
        fields = [k for k in COMPARED_FACTS if pool_facts.get(k) != suspect.get(k)]
        rank = ("procedure" in fields, len(fields))
        if best is None or rank < best[0]:
            best = (rank, suspect, fields)
    if best is None:
        return {"closest": None, "closest_role": None, "closest_group": None, "fields": [],
                "note": "the zoo has no scored suspects"}
    _, suspect, fields = best
    what = f"{suspect['role']} {suspect['group']} {suspect['model_id']} ({suspect['provenance']})"
    if fields:
        changes = ", ".join(f"{k} {pool_facts.get(k)!r} vs {suspect.get(k)!r}" for k in fields)
        note = f"closest scored suspect: {what}; differs in {changes}"
    else:  # same facts, other details (e.g. batch size or weight decay): the planner lets it through
        note = f"closest scored suspect: {what}; same {', '.join(COMPARED_FACTS)} (differs only in other settings)"
    return {"closest": suspect["model_id"], "closest_role": suspect["role"], "closest_group": suspect["group"],
            "fields": fields, "note": note}
