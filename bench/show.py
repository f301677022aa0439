"""`fpbench show`: the resolved, validated recipe as YAML, each method's config marked against its defaults.

The text is valid YAML whose content equals the resolved recipe (:func:`bench.config.to_dict`), so it
can be saved and used as a recipe; comments mark, per method parameter, whether the value is the
method's default (from its ``Config`` dataclass) or set by the recipe or the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from bench.config import load_recipe, to_dict
from bench.methods import METHODS


def _flow(value: Any) -> str:
    """One value as single-line YAML (``0.05``, ``[1, 2]``, ``{a: 1}``, ``null``)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()


def _config_defaults(name: str) -> dict[str, Any]:
    """The defaults of method ``name``: its ``Config`` dataclass as plain (nested) containers."""
    return OmegaConf.to_container(OmegaConf.structured(METHODS.get(name).Config()), resolve=True)


def method_lines(entry: dict[str, Any]) -> list[str]:
    """One method's effective config as a YAML list item, each key marked ``# default`` or with its default."""
    defaults = _config_defaults(entry["name"])  # entries come validated: every key is a Config field
    lines = [f"- name: {_flow(entry['name'])}"]
    for key, value in entry.items():
        if key == "name":
            continue
        if defaults[key] == value:
            note = "default"
        else:
            note = f"set (default: {_flow(defaults[key])})"
        lines.append(f"  {key}: {_flow(value)}  # {note}")
    return lines


def show_text(cfg: DictConfig, source: str = "") -> str:
    """The resolved recipe as YAML, then every selected method's effective config, defaults marked.

    Args:
        cfg: A recipe from :func:`bench.config.load_recipe` (validated, methods resolved).
        source: What the recipe was loaded from (recipe path and overrides), for the first comment.

    Returns:
        YAML text; loading it gives the same containers as ``to_dict(cfg)``.
    """
    data = to_dict(cfg)
    methods = data.pop("methods")
    head = [f"# {source}" if source else "# recipe", "# resolved and validated; methods below with every parameter"]
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100).rstrip("\n")
    lines = [*head, body, "# methods: every selected method's effective config; '# default' = the method's own default"]
    if not methods:
        lines.append("methods: []")
    else:
        lines.append("methods:")
        for entry in methods:
            lines += method_lines(entry)
    return "\n".join(lines) + "\n"


def show_recipe(path: str | Path, overrides: list[str] | None = None) -> str:
    """Load and validate the recipe at ``path`` with ``overrides`` and return :func:`show_text`.

    Raises:
        ConfigError: On a bad recipe or override (as every command), before anything is printed.
    """
    overrides = list(overrides or [])
    cfg = load_recipe(path, overrides)
    return show_text(cfg, f"recipe {path}" + (f" with {' '.join(overrides)}" if overrides else ""))
