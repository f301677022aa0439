"""Fingerprinting methods. Importing this package registers every method in `METHODS`."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from bench.methods import adv_tra, akh, cae, cort, ipguard, metav, modeldiff, oracle_label, random, sac, uap  # noqa: F401  (registration side effects)
from bench.methods.base import (
    IMPORT_KEY,
    METHODS,
    Fingerprint,
    FingerprintMethod,
    GenerationContext,
    Pools,
    PoolSpec,
)

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
