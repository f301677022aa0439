"""The per-result blocks of issue "Honest statistics": ties, the cross-fitted decision, and what the
negatives certify, computed from one result's scores (`bench.results.make_result` stores them in
`metrics`; `fpbench leaderboard --check` recomputes them). Definitions: docs/statistics.md."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.metrics import format_fpr
from bench.stats.columns import crossfit_decision, tie_summary, tpr_column

DECISION_FOLDS = 5  # cross-fitting folds of the decision (fewer when there are fewer negatives)
DECISION_SEED = 0  # the fold split is part of the definition: the same scores give the same decision


def result_blocks(scores: Sequence[float], labels: Sequence[int], fpr_targets: Sequence[float]) -> dict[str, Any]:
    """`{"ties", "decision", "tpr_resolution"}` of one evaluation (empty blocks without both classes).

    - `ties`: `tie_fraction` of positive-negative pairs and the AUC with ties as losses / as wins.
    - `decision`: per FPR target, the TPR and realised FPR of a threshold calibrated on the other folds'
      negatives (`crossfit_decision`, `DECISION_FOLDS` folds, every negative judged once).
    - `tpr_resolution`: per FPR target, the label the figure may carry (`T1%F` only when the negatives
      certify it, else `TPR@0FP`), that figure, its false positives and the FPR's 95 % upper bound.
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        return {"ties": {}, "decision": {}, "tpr_resolution": {}}
    ties = {k: v for k, v in tie_summary(pos, neg).items() if k != "auc"}
    folds = min(DECISION_FOLDS, int(neg.size))
    decision = {}
    if folds >= 2:
        for target in fpr_targets:
            d = crossfit_decision(pos, neg, float(target), folds=folds, seed=DECISION_SEED)
            decision[format_fpr(target)] = {k: d[k] for k in ("tpr", "fpr", "false_positives", "n_negative", "folds")}
    resolution = {}
    for target in fpr_targets:
        column = tpr_column(pos, neg, float(target))
        resolution[format_fpr(target)] = {k: column[k] for k in ("label", "tpr", "false_positives", "fpr_upper",
                                                                   "certifiable")}
    return {"ties": ties, "decision": decision, "tpr_resolution": resolution}
