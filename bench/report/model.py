"""The board's model: its rows (one field per :func:`bench.report.columns.frame_fields`), its paired
comparisons (:data:`COMPARISON_COLUMNS`) and what both were computed from. Built by
:func:`bench.report.leaderboard.build_board`; read by every renderer (Markdown, CSV, blocks, the page).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.budgets import DEFAULT_BUDGET
from bench.metrics import DEFAULT_FPR_TARGETS
from bench.report.columns import frame_fields


def columns(fpr_targets: Sequence[float] = DEFAULT_FPR_TARGETS) -> list[str]:
    """The row fields of a board for these FPR targets (one ``t<percent>f`` block per target), from the column spec."""
    return frame_fields(fpr_targets)


COMPARISON_COLUMNS = [
    "zoo", "dataset", "benchmark", "positives", "a", "b", "a_config", "b_config", "shared_trials", "delta_auc",
    "ci_low", "ci_high", "confidence", "p_value", "p_holm", "n_boot", "distinguishable", "note",
]  # fmt: skip


@dataclass
class Board:
    """The leaderboard (:func:`columns`) and its paired comparisons (:data:`COMPARISON_COLUMNS`)."""

    rows: pd.DataFrame
    comparisons: pd.DataFrame
    # The FPR targets of the TPR columns: the union over the results, ascending (eval.fpr_targets).
    fpr_targets: list[float] = field(default_factory=lambda: list(DEFAULT_FPR_TARGETS))
    # The results the rows aggregate, by (positives view, result file relative to the results dir):
    # the file's own result for `all`, the derived one (suspects restricted, metrics recomputed) for `paper`.
    results: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    budget: int = DEFAULT_BUDGET  # queries per suspect of the `auc_at_budget` column (AUC@<budget>)
