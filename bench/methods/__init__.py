"""Fingerprinting methods. Importing this package registers every method in `METHODS`."""

from bench.methods import adv_tra, akh, cae, ipguard, oracle_label, random, sac, uap  # noqa: F401  (registration side effects)
from bench.methods.base import (
    METHODS,
    Fingerprint,
    FingerprintMethod,
    GenerationContext,
    Pools,
    PoolSpec,
)

__all__ = ["METHODS", "Fingerprint", "FingerprintMethod", "GenerationContext", "PoolSpec", "Pools"]
