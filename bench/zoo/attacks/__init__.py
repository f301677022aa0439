"""Removal attacks: the registry `ATTACKS` and `build_attack`, which validates params before any work.

Importing this package imports every module it holds, sorted by name (`import_submodules`), so `ATTACKS`
is complete and a new attack is one new file that touches no existing one: today ftll, ftal, rtll, rtal
(`finetune.py`), ftsmooth, prune, adv_train, extract, quantize. Modules whose name starts with `_`
(`_ftsmooth_module.py`, which loads Lightning) and the helpers named below are imported by the attacks
that use them.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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
            strength[key if len(chain) == 1 else f"{step['attack']}.{key}"] = _lookup(config, key)
    return {"family": " + ".join(dict.fromkeys(families)), "strength": strength}


def parse_attack_config(cls: type[RemovalAttack], params: Mapping[str, Any] | DictConfig | None) -> Any:
    """`params` merged over `cls.Config`'s defaults (omegaconf structured, struct mode), as a Config."""
    if params is None:
        params = {}
    if isinstance(params, DictConfig):
        params = OmegaConf.to_container(params, resolve=True)  # type: ignore[assignment]
    if not isinstance(params, Mapping):
        raise ValueError(f"Params of attack '{cls.name}' must be a mapping of field: value, got {params!r}.")
    _check_keys(cls.Config, params, cls.name, "")
    schema = OmegaConf.structured(cls.Config)
    OmegaConf.set_struct(schema, True)
    _open_free_dicts(schema, cls.Config)
    try:
        merged = OmegaConf.merge(schema, params)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        expected = _type_name(_field_type(cls.Config, key)) if key else "see the Config"
        value = _lookup(params, key) if key else params
        raise ValueError(f"{cls.name}.{key}={value!r} has the wrong type: expected {expected}. "
                         f"({str(exc).splitlines()[0]})") from None
    return OmegaConf.to_object(merged)  # runs the Config's __post_init__ range checks


def _check_keys(config_type: type, params: Mapping[str, Any], attack: str, prefix: str) -> None:
    """Every key must be a field; nested dataclass fields take a mapping and are checked recursively."""
    valid = [item.name for item in fields(config_type)]
    hints = typing.get_type_hints(config_type)
    for key, value in params.items():
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"Unknown key '{prefix}{key}' for attack '{attack}'.{hint} Valid keys: {', '.join(valid)}.")
        if is_dataclass(hints[key]):
            if not isinstance(value, Mapping):
                nested = ", ".join(item.name for item in fields(hints[key]))
                raise ValueError(f"{attack}.{prefix}{key}={value!r} has the wrong type: expected a mapping with keys {nested}.")
            _check_keys(hints[key], value, attack, f"{prefix}{key}.")


def _open_free_dicts(node: DictConfig, config_type: type) -> None:
    """Free-form `dict[str, Any]` fields (e.g. extract.arch_params) accept any key; the rest stays strict."""
    for name, annotation in typing.get_type_hints(config_type).items():
        if name not in node:
            continue
        if typing.get_origin(annotation) is dict:
            OmegaConf.set_struct(node[name], False)
        elif is_dataclass(annotation):
            _open_free_dicts(node[name], annotation)


def _field_type(config_type: type, dotted: str) -> Any:
    current: Any = config_type
    for part in dotted.split("."):
        if not is_dataclass(current):
            return current
        current = typing.get_type_hints(current).get(part, Any)
    return current


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _lookup(params: Mapping[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value
