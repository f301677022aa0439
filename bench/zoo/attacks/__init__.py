"""Removal attacks: the registry `ATTACKS` and `build_attack`, which validates params before any work.

Importing this package imports every module it holds, sorted by name (`import_submodules`), so `ATTACKS`
is complete and a new attack is one new file that touches no existing one: today ftll, ftal, rtll, rtal
(`finetune.py`), ftsmooth, prune, adv_train, extract, quantize. Modules whose name starts with `_`
(`_ftsmooth_module.py`, which loads Lightning) and the helpers named below are imported by the attacks
that use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from omegaconf import DictConfig

from bench.entry_config import build_config, lookup
from bench.registry import import_submodules
from bench.zoo.attacks.base import (
    ATTACKS,
    AttackContext,
    AttackOutput,
    AttackTrainingConfig,
    RemovalAttack,
    attack_loader,
    source_outputs,
)

HELPERS = ("base", "query_data")  # modules that register nothing
import_submodules(__name__, __path__, HELPERS)

# Attacks of installed packages (entry points; docs/extending.md, "From your own package"), on the first read.
ATTACKS.use_entry_points("fpbench.attacks", RemovalAttack)

__all__ = [
    "ATTACKS",
    "AttackContext",
    "AttackOutput",
    "AttackTrainingConfig",
    "RemovalAttack",
    "attack_loader",
    "attack_facts",
    "build_attack",
    "parse_attack_config",
    "source_outputs",
]


def build_attack(name: str, params: Mapping[str, Any] | DictConfig | None = None) -> RemovalAttack:
    """The attack registered as `name`, configured from `params` (validated before any work).

    Args:
        name: a key of `ATTACKS` (e.g. "prune").
        params: fields of the attack's Config (nested ones as mappings, e.g. {"optimizer": {"lr": 0.01}});
            missing fields keep their defaults.

    Raises:
        RegistryError: unknown attack name, with a "did you mean" hint and the available names.
        ValueError: an unknown key (naming the valid keys), a value of the wrong type (naming the field
            and the expected type), or a value out of range (naming the field and the allowed range).
    """
    cls = ATTACKS.get(name)
    return cls(parse_attack_config(cls, params))


def attack_facts(chain: list[Mapping[str, Any]]) -> dict[str, Any]:
    """A positive's threat model as data: `{"family": ..., "strength": {key: value}}` from its attack chain.

    `family` is the attacks' `family` (several steps of different families: joined with " + ");
    `strength` holds each step's `strength_keys` with the value the step ran with (defaults filled in),
    named `key` for a one-step chain and `attack.key` for longer ones. The zoo's attack chain (a
    manifest record's `params.chain`) is the input, so a result can be read without the recipe.
    """
    families: list[str] = []
    strength: dict[str, Any] = {}
    for step in chain:
        cls = ATTACKS.get(step["attack"])
        config = asdict(parse_attack_config(cls, step.get("params") or {}))
        families.append(cls.family)
        for key in cls.strength_keys:
            strength[key if len(chain) == 1 else f"{step['attack']}.{key}"] = lookup(config, key)
    return {"family": " + ".join(dict.fromkeys(families)), "strength": strength}


def parse_attack_config(cls: type[RemovalAttack], params: Mapping[str, Any] | DictConfig | None) -> Any:
    """`params` merged over `cls.Config`'s defaults and validated, as a Config (:func:`bench.entry_config.build_config`)."""
    return build_config(cls.Config, params, where=f"attack '{cls.name}'", name=cls.name)
