"""Helpers shared by the baseline methods (ipguard, cae, uap, sac): validation, seeding, eval mode,
pool declarations and label agreement. Not a method: nothing here is registered."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bench.methods.base import Fingerprint, FingerprintMethod, GenerationContext, Pools, PoolSpec

if TYPE_CHECKING:
    from bench.oracle import Oracle

SEED_STRIDE = 1_000_003  # generator seed = ctx.seed * SEED_STRIDE + config.seed (as adv_tra)
# Pool default: the smoke/quickstart sources are convnets, so "same architecture as the source" is
# convnet there; lenet adds a second family. Recipes for other sources override these lists.
DEFAULT_POOL_ARCHS = ("convnet", "lenet")


def require(method: str, name: str, value: Any, ok: bool, allowed: str) -> None:
    """Raise ValueError naming the field, the bad value and what is allowed."""
    if not ok:
        raise ValueError(f"{method}: {name}={value!r} is out of range; it must be {allowed}.")


def require_choice(method: str, name: str, value: Any, allowed: Sequence[str]) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{method}: {name}={value!r} is not allowed; choose one of {', '.join(allowed)}.")


def require_archs(method: str, name: str, archs: Sequence[str], allow_empty: bool = False) -> None:
    """Validate a list of architecture names (registered or `timm:<name>`) without building anything."""
    require(method, name, list(archs), allow_empty or len(archs) > 0, "a non-empty list of architecture names")
    from bench.nets import check_arch

    for arch in archs:
        try:
            check_arch(arch)
        except (KeyError, ValueError) as err:
            raise ValueError(f"{method}: {name}={list(archs)!r} contains {arch!r}: {err}") from None


def require_pool_fields(method: str, config: Any) -> None:
    """Validate the shared pool fields: surrogate_archs, reference_archs, pool_seeds, pool_epochs."""
    require_archs(method, "surrogate_archs", config.surrogate_archs)
    require_archs(method, "reference_archs", config.reference_archs)
    require(method, "pool_seeds", config.pool_seeds, config.pool_seeds >= 1, ">= 1")
    require(method, "pool_epochs", config.pool_epochs, config.pool_epochs is None or config.pool_epochs >= 1,
            ">= 1, or null (the source's epochs)")


class PooledMethod(FingerprintMethod):
    """A method whose config has the shared pool fields and that needs the defender pools (CAE, UAP)."""

    def pool_spec(self) -> PoolSpec:
        """The surrogate/reference pools the config's shared pool fields declare."""
        cfg = self.config
        return PoolSpec(surrogate_archs=list(cfg.surrogate_archs), reference_archs=list(cfg.reference_archs),
                        seeds=int(cfg.pool_seeds), epochs=cfg.pool_epochs)

    def pools(self, ctx: GenerationContext) -> Pools:
        """The context's pools, or a RuntimeError if surrogates or references are missing."""
        pools = ctx.pools
        if pools is None or not pools.surrogates or not pools.references:
            have = "none" if pools is None else f"{len(pools.surrogates)} surrogates, {len(pools.references)} references"
            raise RuntimeError(f"{self.name} needs defender pools (surrogates and references) in ctx.pools; got {have}. "
                               "The evaluation loop builds them from the method's pool_spec(); callers building a "
                               "GenerationContext by hand must pass Pools(surrogates=[...], references=[...]).")
        return pools


def make_generator(ctx_seed: int, config_seed: int) -> torch.Generator:
    """A CPU generator seeded from the fingerprint seed and the method's own seed (never the global RNG)."""
    return torch.Generator().manual_seed(int(ctx_seed) * SEED_STRIDE + int(config_seed))


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put models in eval mode for the block and restore each one's previous mode afterwards."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d loss / d x only: parameters receive no `.grad`, so models are never touched."""
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def label_agreement(fp: Fingerprint, suspect: Oracle) -> float:
    """Fraction of stored inputs on which the suspect's label equals the stored (source) label."""
    labels = suspect.labels(fp.tensors["inputs"])
    return float((labels.cpu() == fp.tensors["labels"].cpu()).float().mean().item())
