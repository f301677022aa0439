"""Helpers shared by the baseline methods (ipguard, cae, uap, sac): architecture-list checks, pool
declarations, input gradients and label agreement. Not a method: nothing here is registered.

Validation, eval mode and seeding are not here: they are shared with the zoo and the attacks
(`bench.checks`, `bench.modes`, `bench.seeding`), and the base class applies the last two itself."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from bench.checks import check, check_choice
from bench.methods.base import Fingerprint, FingerprintMethod, GenerationContext, Pools, PoolSpec
from bench.nets import check_arch
from bench.pools import (
    DEFAULT_POOL_ARCHS,
    DEFAULT_POOL_SEEDS,
    DEFAULT_REFERENCE_LR_SCALE,
    DEFAULT_SURROGATE_LABELS,
    DEFAULT_SURROGATE_LR,
    DEFAULT_SURROGATE_TEMPERATURE,
    LABEL_KINDS,
    SOURCE_ARCH,
)
from bench.training_config import MAX_EPOCHS

if TYPE_CHECKING:
    from bench.oracle import Oracle


def require_archs(where: str, archs: Sequence[str], allow_empty: bool = False, allow_source: bool = False) -> None:
    """Validate a list of architecture names (registered, `timm:<name>`, or `"source"` when allowed)
    without building anything; `where` is the key, e.g. "cae.surrogate_archs"."""
    check(where, list(archs), allow_empty or len(archs) > 0, "a non-empty list of architecture names")
    for arch in archs:
        if allow_source and arch == SOURCE_ARCH:
            continue
        try:
            check_arch(arch)
        except (KeyError, ValueError) as err:
            hint = ""
            if allow_source:
                near = difflib.get_close_matches(arch, [SOURCE_ARCH], n=1)
                hint = (f" Did you mean '{SOURCE_ARCH}'?" if near else "") + f" ('{SOURCE_ARCH}' = the source's architecture)"
            raise ValueError(f"{where}={list(archs)!r} contains {arch!r}: {err}.{hint}") from None


@dataclass
class PoolFields:
    """The defender-pool fields of CAE and UAP (their configs inherit them; one pool serves both).

    Defaults differ on purpose from the zoo's `extract` attack (hard labels, temperature 4, Adam lr
    1e-3, attacker split) and from the negatives (the source's recipe): see docs/pools.md.
    """

    surrogate_archs: list[str] = field(default_factory=lambda: list(DEFAULT_POOL_ARCHS))  # extracted; "source": its arch
    reference_archs: list[str] = field(default_factory=lambda: list(DEFAULT_POOL_ARCHS))  # trained independently
    pool_seeds: int = DEFAULT_POOL_SEEDS  # models per architecture and role; seeds zoo.pool_seed_offset + 0..n-1
    pool_epochs: int | None = None  # references (and surrogates unless surrogate_epochs); None: the source's
    reference_lr_scale: float = DEFAULT_REFERENCE_LR_SCALE  # references: the source's optimizer at lr x this
    surrogate_labels: str = DEFAULT_SURROGATE_LABELS  # hard: the source's labels | soft: its probabilities
    surrogate_temperature: float = DEFAULT_SURROGATE_TEMPERATURE  # soft labels: distillation temperature
    surrogate_epochs: int | None = None  # None: pool_epochs (and if null, the source's epochs)
    surrogate_lr: float = DEFAULT_SURROGATE_LR  # Adam lr of the surrogates (no weight decay)
    surrogate_queries: int | None = None  # owner samples labelled by the source per surrogate; None: the split


def require_pool_fields(method: str, config: Any) -> None:
    """Validate the shared pool fields (`PoolFields`), naming the key, the bad value and what is allowed."""
    require_archs(f"{method}.surrogate_archs", config.surrogate_archs, allow_source=True)
    require_archs(f"{method}.reference_archs", config.reference_archs, allow_source=True)
    check(f"{method}.pool_seeds", config.pool_seeds, config.pool_seeds >= 1, ">= 1")
    for name in ("pool_epochs", "surrogate_epochs"):
        value = getattr(config, name)
        check(f"{method}.{name}", value, value is None or value >= 1, ">= 1, or null (see docs/pools.md)")
        check(f"{method}.{name}", value, value is None or value <= MAX_EPOCHS, f"<= {MAX_EPOCHS} (docs/decisions.md)")
    check(f"{method}.surrogate_queries", config.surrogate_queries,
          config.surrogate_queries is None or config.surrogate_queries >= 1, ">= 1, or null (the whole owner split)")
    for name in ("reference_lr_scale", "surrogate_temperature", "surrogate_lr"):
        check(f"{method}.{name}", getattr(config, name), getattr(config, name) > 0, "> 0")
    check_choice(f"{method}.surrogate_labels", config.surrogate_labels, LABEL_KINDS)


class PooledMethod(FingerprintMethod):
    """A method whose config has the shared pool fields and that needs the defender pools (CAE, UAP)."""

    def pool_spec(self) -> PoolSpec:
        """The surrogate/reference pools the config's shared pool fields declare."""
        cfg = self.config
        return PoolSpec(surrogate_archs=list(cfg.surrogate_archs), reference_archs=list(cfg.reference_archs),
                        seeds=int(cfg.pool_seeds), epochs=cfg.pool_epochs, reference_lr_scale=cfg.reference_lr_scale,
                        surrogate_labels=cfg.surrogate_labels, surrogate_temperature=cfg.surrogate_temperature,
                        surrogate_epochs=cfg.surrogate_epochs, surrogate_lr=cfg.surrogate_lr,
                        surrogate_queries=cfg.surrogate_queries)

    def pools(self, ctx: GenerationContext) -> Pools:
        """The context's pools, or a RuntimeError if surrogates or references are missing."""
        pools = ctx.pools
        if pools is None or not pools.surrogates or not pools.references:
            have = "none" if pools is None else f"{len(pools.surrogates)} surrogates, {len(pools.references)} references"
            raise RuntimeError(f"{self.name} needs defender pools (surrogates and references) in ctx.pools; got {have}. "
                               "The evaluation loop builds them from the method's pool_spec(); callers building a "
                               "GenerationContext by hand must pass Pools(surrogates=[...], references=[...]).")
        return pools


def input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d loss / d x only: parameters receive no `.grad`, so models are never touched."""
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def label_agreement(fp: Fingerprint, suspect: Oracle) -> float:
    """Fraction of stored inputs on which the suspect's label equals the stored (source) label."""
    labels = suspect.labels(fp.tensors["inputs"])
    return float((labels.cpu() == fp.tensors["labels"].cpu()).float().mean().item())
