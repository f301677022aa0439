"""A fingerprint must recognise its own source before its scores are published.

sha256 files stop accidents, not a writer who edits a cached fingerprint and recomputes its hashes.
What such an edit cannot keep is the fingerprint's purpose: the model it was made from must score as
derived, i.e. strictly above the threshold calibrated on the benchmark's negatives (the decision rule
of `fpbench verify`, `threshold_at`). The loop scores the source once per method after the suspects;
a cached fingerprint that fails is moved aside and regenerated from the (behaviour-checked) source,
and its suspects scored again; a freshly generated one that fails is genuine, so it is kept and the
failure is recorded in the result (`fingerprint.self_check`) and logged (docs/decisions.md, "Integrity").
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from bench.methods.base import Fingerprint, FingerprintMethod
from bench.oracle import Oracle
from bench.stats import calibrated_threshold as threshold_at

__all__ = ["applies", "source_self_check", "threshold_at"]


def applies(method: FingerprintMethod) -> bool:
    """Whether the check means anything for `method`: not for the loop guards (manifest access, random scores)."""
    return method.recognises_source and method.access != "manifest"


def source_self_check(method: FingerprintMethod, fingerprint: Fingerprint, source: nn.Module,
                      per_model: list[dict[str, Any]], fpr: float, batch_size: int = 1024) -> dict[str, Any]:
    """Score the source with its own fingerprint and compare with the threshold on `per_model`'s negatives.

    Returns:
        `{"source_score", "threshold", "fpr_target", "n_negative", "passed", "queries"}`; the queries are
        the check's own, outside every suspect's count.
    """
    oracle = Oracle(source, access=method.access, batch_size=batch_size)
    score = float(method.score(fingerprint, oracle))
    negatives = [float(r["score"]) for r in per_model if r["role"] == "negative"]
    threshold = threshold_at(negatives, fpr)
    return {"source_score": score, "threshold": threshold if math.isfinite(threshold) else None, "fpr_target": fpr,
            "n_negative": len(negatives), "passed": score > threshold, "queries": oracle.queries}
