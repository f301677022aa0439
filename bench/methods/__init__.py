"""Fingerprinting methods. Importing this package registers every method in `METHODS`."""

from bench.methods import akh, oracle_label, random  # noqa: F401  (registration side effects)
from bench.methods.base import (
    METHODS,
    Fingerprint,
    FingerprintMethod,
    GenerationContext,
    PoolSpec,
    Pools,
)

__all__ = ["METHODS", "Fingerprint", "FingerprintMethod", "GenerationContext", "PoolSpec", "Pools"]
