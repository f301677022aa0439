"""Fingerprinting methods. Importing this package registers every method in `METHODS`.

Every module of the package is imported, sorted by name (`import_submodules`), so a new method is one new
file (or subpackage) and touches no existing one; `_common.py` and the helpers named below are imported by
the methods that use them.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from bench.methods.base import (
    IMPORT_KEY,
    METHODS,
    Fingerprint,
    FingerprintMethod,
    GenerationContext,
    Pools,
    PoolSpec,
)
from bench.registry import import_submodules

HELPERS = ("base", "uap_perturbation")  # modules that register nothing
import_submodules(__name__, __path__, HELPERS)

# Methods of installed packages (entry points) and classes a recipe names as package.module:Class
# (docs/extending.md, "From your own package"); loaded on the first read, after the built-ins above.
METHODS.use_entry_points("fpbench.methods", FingerprintMethod, references=True)

__all__ = ["METHODS", "Fingerprint", "FingerprintMethod", "GenerationContext", "PoolSpec", "Pools", "instantiate"]


def instantiate(entry: dict[str, Any]) -> FingerprintMethod:
    """Build a method from a validated recipe entry ({name, ...params}); its `access` may depend on the
    config (CoRt with `jsd`, MetaV with `outputs: labels`), so ask the instance, not the class.

    `entry["name"]` is a registry key: a built-in's, an entry point's, or the key under which loading the
    recipe registered its `package.module:Class` (`pkg.mod-Class`, `Registry.resolve`)."""
    cls = METHODS.get(entry["name"])
    params = {k: v for k, v in entry.items() if k not in ("name", IMPORT_KEY)}  # IMPORT_KEY: the loop's, not the Config's
    return cls(OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Config), params)))
