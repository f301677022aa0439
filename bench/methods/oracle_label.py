"""Guard method for tests: reads the suspect's manifest role (expected AUC exactly 1.0)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.methods.base import METHODS, Fingerprint, FingerprintMethod, GenerationContext
from bench.oracle import Oracle


@dataclass
class OracleLabelConfig:
    pass


@METHODS.register
class OracleLabel(FingerprintMethod):
    """Guard (test only, not a paper): cheats by reading the manifest role; AUC must be exactly 1.0.

    The only method that looks behind the oracle, through the "manifest" access level it declares
    (the oracle shows the role to no other level): a loop that gives it AUC < 1 (or 0) has flipped
    the score direction or mixed up suspects and their labels.
    """

    name = "oracle_label"
    Config = OracleLabelConfig
    test_config = None  # contract tests: the defaults
    access = "manifest"

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        return Fingerprint(method=self.name, tensors={}, meta={})

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return 1.0 if suspect.manifest_role == "positive" else 0.0
