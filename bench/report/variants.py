"""Readable names for method configs: what differs from the method's defaults.

``adv_tra`` is ADV-TRA at its registered defaults; ``adv_tra[score=agreement]`` differs in one field;
``cae[eps=0.25,pool_seeds=1]`` in two. Defaults are the registered method's ``Config()``; both sides
are flattened (nested keys joined with ``.``) and compared after a JSON round trip, so tuples equal
lists and ``1`` equals ``1.0``. ``name`` is ignored. A field the result does not record (written
before the field existed) is not a difference. A method that is not registered has no known
defaults: its label is ``method[<config id>]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": 2}`` -> ``{"a.b": 1, "c": 2}`` (lists are values, not flattened)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@cache
def _defaults_json(method: str) -> str | None:
    try:
        from bench.methods import METHODS  # optional: the report runs without the method stack (torch)
    except ImportError as err:  # a report without the method stack installed: hashes only
        log.warning("Method defaults unavailable (%s); configs are named by hash.", err)
        return None
    if method not in METHODS.names():
        return None
    config_class = getattr(METHODS.get(method), "Config", None)
    if config_class is None or not dataclasses.is_dataclass(config_class):
        return None
    return json.dumps(flatten(dataclasses.asdict(config_class())), sort_keys=True)


def paper_value(method: str, dataset: str) -> str:
    """The published "AUC/T1%F/T10%F" of registered ``method`` on ``dataset`` ("" when none is known).

    Read from the method class's ``paper_results`` (keyed by dataset: lower-case letters and digits,
    so "CIFAR-100" finds "cifar100"): a new method brings its own numbers.
    """
    try:
        from bench.methods import METHODS  # optional: the report runs without the method stack (torch)
    except ImportError as err:  # a report without the method stack installed: no paper column
        log.warning("Paper results unavailable (%s).", err)
        return ""
    if method not in METHODS.names():
        return ""
    results = getattr(METHODS.get(method), "paper_results", None) or {}
    return results.get(re.sub(r"[^a-z0-9]", "", dataset.lower()), "")


def method_defaults(method: str) -> dict[str, Any] | None:
    """The flattened default config of registered method ``method`` (JSON types), else None."""
    text = _defaults_json(method)
    return None if text is None else json.loads(text)


def config_differences(method: str, config: Mapping[str, Any]) -> list[tuple[str, Any]] | None:
    """``[(key, value), ...]`` where ``config`` differs from ``method``'s defaults, sorted by key.

    Args:
        method: Registry key of the method.
        config: The result's method config (``result["method"]["config"]``).

    Returns:
        The differing fields (empty at the defaults), or None when the method is not registered.
    """
    defaults = method_defaults(method)
    if defaults is None:
        return None
    flat = json.loads(json.dumps(flatten(config)))
    return sorted((k, v) for k, v in flat.items() if k != "name" and (k not in defaults or defaults[k] != v))


def format_value(value: Any) -> str:
    """A config value as it reads in a label: ``agreement``, ``0.25``, ``true``, ``null``, ``[source,lenet]``."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def variant_label(method: str, config: Mapping[str, Any], config_id: str) -> str:
    """The row and legend name of a method config.

    Args:
        method: Registry key of the method.
        config: The result's method config.
        config_id: Short id of the row's config, used when the method is not registered.

    Returns:
        ``method`` at the defaults, ``method[key=value,...]`` otherwise, ``method[<config_id>]``
        for an unregistered method.
    """
    differences = config_differences(method, config)
    if differences is None:
        return f"{method}[{config_id}]"
    if not differences:
        return method
    return f"{method}[" + ",".join(f"{k}={format_value(v)}" for k, v in differences) + "]"


def is_default(method: str, config: Mapping[str, Any]) -> bool:
    """Whether ``config`` is registered method ``method``'s default config."""
    return config_differences(method, config) == []


def method_config(result: Mapping[str, Any]) -> dict[str, Any]:
    """The method config a result measured: ``method.config``, else the config's ``method`` entry."""
    recorded = result["method"].get("config")
    if isinstance(recorded, Mapping) and recorded:
        return dict(recorded)
    entry = result["config"].get("method")
    return {k: v for k, v in entry.items() if k != "name"} if isinstance(entry, Mapping) else {}
