"""One builder for the validated config of a registry entry: a method, an attack, a deployment, a perf benchmark.

Every family declares its parameters as a dataclass (the entry's ``Config``); a recipe, an override or a
Python caller gives a mapping. :func:`build_config` turns the one into the other, and every family calls
it, so the same input fails the same way everywhere (docs/architecture.md, "Configuration"):

- **unknown key** (at any depth of nested dataclasses): ``Unknown key 'optimizer.lrr' in attack 'ftll'. Did
  you mean 'lr'? Valid keys: name, lr, momentum, weight_decay.``
- **wrong type**: ``ftll.epochs='five' has the wrong type: expected int.`` (omegaconf's structured merge in
  struct mode: an int field refuses a string, a nested field refuses a scalar);
- **out of range**: the Config's own ``__post_init__`` checks (``bench.checks.check``), prefixed with where
  the entry was given.

Free-form ``dict[str, Any]`` fields (e.g. ``extract.arch_params``) accept any key. Every error is a
:class:`bench.errors.ConfigError` (a ``ValueError``), raised before any work; the CLI exits 2 on it. A
leaf module: omegaconf and :mod:`bench.errors` only.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench.errors import ConfigError

T = TypeVar("T")


def build_config(config_cls: type[T], params: Mapping[str, Any] | DictConfig | None, *, where: str, name: str) -> T:
    """``params`` merged over ``config_cls``'s defaults and validated, as a ``config_cls`` instance.

    Args:
        config_cls: the entry's Config dataclass.
        params: the user's parameters (None: every default).
        where: where they were given, named in every message, e.g. ``"attack 'ftll'"``,
            ``"zoo.deploy[0] (blur)"``, ``"method 'adv_tra'"``.
        name: the entry's name, the prefix of a key in a type error (``ftll.epochs``).

    Raises:
        ConfigError: not a mapping, an unknown key, a value of the wrong type or out of range; the message
            names the key and what it accepts.
    """
    if params is None:
        params = {}
    if isinstance(params, DictConfig):
        params = typing.cast(dict[str, Any], OmegaConf.to_container(params, resolve=True))
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: the parameters must be a mapping of key: value, got {params!r}.")
    check_keys(config_cls, params, where, name)
    schema = OmegaConf.structured(config_cls)
    OmegaConf.set_struct(schema, True)
    _open_free_dicts(schema, config_cls)
    try:
        merged = OmegaConf.merge(schema, params)
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", None) or "")
        expected = type_name(field_type(config_cls, key)) if key else "see the Config"
        value = lookup(params, key) if key else params
        raise ConfigError(f"{where}: {name}.{key}={value!r} has the wrong type: expected {expected}. "
                          f"({str(exc).splitlines()[0]})") from None
    try:
        return typing.cast(T, OmegaConf.to_object(merged))  # runs the Config's __post_init__ range checks
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None


def check_keys(config_type: type, params: Mapping[str, Any], where: str, name: str, prefix: str = "",
               listed: tuple[str, ...] = ()) -> None:
    """Every key of ``params`` must be a field of ``config_type``; nested dataclass fields take a mapping and
    are checked recursively (``name``: the entry, named before a key in a type error, or ""; ``prefix``: the
    dotted path so far; ``listed``: keys the caller took out before, named first among the valid ones)."""
    valid = [item.name for item in fields(config_type)]  # type: ignore[arg-type]
    hints = typing.get_type_hints(config_type)
    for key, value in params.items():
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            shown = [*listed, *valid] if not prefix else valid
            raise ConfigError(f"Unknown key '{prefix}{key}' in {where}.{hint} Valid keys: {', '.join(shown) or '(none)'}.")
        if is_dataclass(hints[key]):
            if not isinstance(value, Mapping):
                nested = ", ".join(item.name for item in fields(hints[key]))
                field_name = f"{name}.{prefix}{key}" if name else f"{prefix}{key}"
                raise ConfigError(f"{where}: {field_name}={value!r} has the wrong type: expected a mapping with keys "
                                  f"{nested}.")
            check_keys(typing.cast(type, hints[key]), value, where, name, f"{prefix}{key}.")


def _open_free_dicts(node: DictConfig, config_type: type) -> None:
    """Free-form `dict[str, Any]` fields (e.g. extract.arch_params) accept any key; the rest stays strict."""
    for key, annotation in typing.get_type_hints(config_type).items():
        if key not in node:
            continue
        if typing.get_origin(annotation) is dict:
            OmegaConf.set_struct(node[key], False)
        elif is_dataclass(annotation):
            _open_free_dicts(node[key], typing.cast(type, annotation))


def field_type(config_type: type, dotted: str) -> Any:
    """The annotation of the field at ``dotted`` (``optimizer.lr``) of a Config dataclass."""
    current: Any = config_type
    for part in dotted.split("."):
        if not is_dataclass(current):
            return current
        current = typing.get_type_hints(current).get(part, Any)
    return current


def type_name(annotation: Any) -> str:
    """``int`` for int, ``list[int]`` for list[int]: how an error names the type a key takes."""
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def lookup(params: Any, dotted: str) -> Any:
    """The value at ``dotted`` in nested mappings or dataclasses (None where a step is missing)."""
    value: Any = params
    for part in dotted.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif is_dataclass(value):
            value = getattr(value, part, None)
        else:
            return None
    return value
