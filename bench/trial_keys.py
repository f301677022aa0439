"""The trial keys of a result's config: what a repeated run varies (`seed`, `zoo.source.seed`).

A leaf below both `bench.published` (comparing a run with the published benchmark) and `bench.report`
(rows and benchmarks), so that results never import the reports (docs/architecture.md, "Import
direction"). `bench.report.trials` re-exports `strip_trial_keys`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def strip_trial_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a result's ``config`` without the trial keys ``seed`` and ``zoo.source.seed``."""
    out = copy.deepcopy(dict(config))
    out.pop("seed", None)
    zoo = out.get("zoo")
    if isinstance(zoo, dict) and isinstance(zoo.get("source"), dict):
        zoo["source"].pop("seed", None)
    return out
