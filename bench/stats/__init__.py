"""Honest statistics for a fingerprinting board (numpy and scipy; no torch, no files).

- :mod:`bench.stats.columns`: what the negatives certify (:func:`fpr_upper_bound`, :func:`certifies`,
  :func:`tpr_column`), tie credit in the AUC (:func:`tie_summary`), an exact :func:`weighted_auc`, and
  the cross-fitted deployment decision (:func:`crossfit_decision`).
- :mod:`bench.stats.paired`: :func:`paired_difference` of two methods over trials, by a bootstrap that
  resamples trials, positive clusters and negative clusters (shared models drawn once per replicate).
- :mod:`bench.stats.ranking`: :func:`holm` adjusted p-values and the rank rule (:func:`ranks`,
  :data:`RANK_LEGEND`).
- :mod:`bench.stats_sim`: synthetic benchmarks with a known truth, false-separation rate and power.

Rules, reasons and the simulation results: ``docs/statistics.md``.
"""

from bench.stats.columns import (
    calibrated_threshold,
    certifies,
    crossfit_decision,
    fpr_label,
    fpr_upper_bound,
    tie_summary,
    tpr_column,
    weighted_auc,
)
from bench.stats.paired import TrialScores, paired_difference
from bench.stats.ranking import RANK_LEGEND, holm, ranks

__all__ = ["RANK_LEGEND", "TrialScores", "calibrated_threshold", "certifies", "crossfit_decision", "fpr_label",
           "fpr_upper_bound", "holm", "paired_difference", "ranks", "tie_summary", "tpr_column", "weighted_auc"]
