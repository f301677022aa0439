"""Guard method for tests: reads the suspect's manifest role (expected AUC exactly 1.0)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.methods.base import METHODS, Fingerprint, FingerprintMethod, GenerationContext
from bench.oracle import Oracle


@dataclass
class OracleLabelConfig:
    pass


@METHODS.register("oracle_label")
class OracleLabel(FingerprintMethod):
    """Guard (test only, not a paper): cheats by reading the manifest role; AUC must be exactly 1.0.

    The only method allowed to look behind the oracle: a loop that gives it AUC < 1 (or 0) has
    flipped the score direction or mixed up suspects and their labels.
    """

    name = "oracle_label"
    Config = OracleLabelConfig
    access = "label"

    def generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        return Fingerprint(method=self.name, tensors={}, meta={})

    def score(self, fp: Fingerprint, suspect: Oracle) -> float:
        role = suspect.manifest_role
        if role is None:
            raise RuntimeError("oracle_label needs the loop to tell the oracle each suspect's manifest role.")
        return 1.0 if role == "positive" else 0.0
