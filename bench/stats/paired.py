"""Paired comparison of two methods on the same suspects over several trials, by a bootstrap that follows
the benchmark's design.

Each replicate draws the trials with replacement (the same draws for both methods), then the positive
clusters and the negative clusters with replacement. A cluster's draw count is its weight in **every**
trial where its label appears, so a negative shared by all trials is drawn once per replicate, not
once per trial (keyed by label or model id, never by position). The statistic is the mean over the
drawn trials of the weighted AUC (or TPR@FPR) difference. Rules and reasons: ``docs/statistics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrialScores:
    """One method's scores on one trial's suspects.

    Attributes:
        model_ids: Suspect ids, unique within the trial; a model used in several trials keeps its id.
        roles: 1 for a positive (derived), 0 for a negative, per suspect.
        scores: One finite score per suspect, higher = more likely derived.
        clusters: The resampling unit of each suspect (e.g. the attack config of a positive, the kind of
            a negative); a label names the same unit in every trial. None: each suspect is its own unit.
    """

    model_ids: Sequence[str]
    roles: Sequence[int]
    scores: Sequence[float]
    clusters: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.model_ids)
        if len(self.roles) != n or len(self.scores) != n or (self.clusters is not None and len(self.clusters) != n):
            raise ValueError(f"TrialScores needs one role, score (and cluster) per model id; got {n} ids, "
                             f"{len(self.roles)} roles, {len(self.scores)} scores.")
        if len(set(self.model_ids)) != n:
            raise ValueError("TrialScores.model_ids repeats an id; a suspect appears once per trial.")
        roles = set(np.asarray(self.roles).tolist())
        if not roles <= {0, 1} or len(roles) < 2:
            raise ValueError(f"TrialScores.roles must hold both 1 (positive) and 0 (negative), got {sorted(roles)}.")
        if not np.all(np.isfinite(np.asarray(self.scores, dtype=np.float64))):
            raise ValueError("TrialScores.scores holds NaN or infinite values; every suspect needs a finite score.")

    def unit(self, i: int) -> tuple[int, str]:
        """The resampling unit of suspect ``i``: (role, cluster label, or the model id without clusters)."""
        return int(self.roles[i]), str(self.model_ids[i] if self.clusters is None else self.clusters[i])


@dataclass(frozen=True)
class _Trial:
    """One trial's suspects aligned for both methods: unit index and scores per class."""

    pos_units: np.ndarray
    neg_units: np.ndarray
    a_pos: np.ndarray
    a_neg: np.ndarray
    b_pos: np.ndarray
    b_neg: np.ndarray


def _align(a: Sequence[TrialScores], b: Sequence[TrialScores]) -> tuple[list[_Trial], int, int]:
    """Both methods' trials on shared unit indices: (trials, positive units, negative units)."""
    if not a or len(a) != len(b):
        raise ValueError(f"a has {len(a)} trials and b {len(b)}: pass the same trials, in the same order, for both.")
    units: dict[int, dict[str, int]] = {0: {}, 1: {}}
    unit_of: dict[str, tuple[int, str]] = {}
    trials = []
    for t, (ta, tb) in enumerate(zip(a, b)):
        where_b = {m: i for i, m in enumerate(tb.model_ids)}
        if where_b.keys() != set(ta.model_ids):
            odd = sorted(set(ta.model_ids) ^ where_b.keys())[:5]
            raise ValueError(f"trial {t}: a and b scored different suspects (e.g. {odd}); compare on shared suspects.")
        idx_b = np.array([where_b[m] for m in ta.model_ids])
        index: list[int] = []
        for i, model in enumerate(ta.model_ids):
            unit, other = ta.unit(i), tb.unit(int(idx_b[i]))
            other = other if other != unit else unit_of.setdefault(model, unit)
            if other != unit:
                raise ValueError(f"trial {t}: suspect {model!r} has (role, cluster) {unit} here and {other} in b or "
                                 "an earlier trial; a model keeps one role and one cluster everywhere.")
            index.append(units[unit[0]].setdefault(unit[1], len(units[unit[0]])))
        roles, unit_index = np.asarray(ta.roles) == 1, np.asarray(index)
        sa, sb = np.asarray(ta.scores, np.float64), np.asarray(tb.scores, np.float64)[idx_b]
        trials.append(_Trial(unit_index[roles], unit_index[~roles], sa[roles], sa[~roles], sb[roles], sb[~roles]))
    return trials, len(units[1]), len(units[0])


def _wins(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """``W[i, j]`` = 1 if positive i outscores negative j, 0.5 on a tie, else 0."""
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def _auc_difference(trial: _Trial, w_pos: np.ndarray, w_neg: np.ndarray, _: float) -> np.ndarray:
    """Weighted AUC(a) - AUC(b) per weight row (exact: the AUC of the sample with those multiplicities)."""
    diff = _wins(trial.a_pos, trial.a_neg) - _wins(trial.b_pos, trial.b_neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((w_pos @ diff) * w_neg).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def _weighted_tpr(pos: np.ndarray, neg: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray, target: float) -> np.ndarray:
    """Per weight row, the largest TPR among ROC points (one per distinct score) with FPR <= target."""
    cuts = np.unique(np.r_[pos, neg])
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (w_pos @ (pos[:, None] >= cuts)) / w_pos.sum(axis=1, keepdims=True)
        fpr = (w_neg @ (neg[:, None] >= cuts)) / w_neg.sum(axis=1, keepdims=True)
    best = np.where(fpr <= target, tpr, 0.0).max(axis=1)  # 0.0 is the ROC point (0, 0) above every score
    return np.where(np.isfinite(tpr[:, 0]) & np.isfinite(fpr[:, 0]), best, np.nan)


def _tpr_difference(trial: _Trial, w_pos: np.ndarray, w_neg: np.ndarray, target: float) -> np.ndarray:
    return (_weighted_tpr(trial.a_pos, trial.a_neg, w_pos, w_neg, target)
            - _weighted_tpr(trial.b_pos, trial.b_neg, w_pos, w_neg, target))  # fmt: skip


STATISTICS = {"auc": _auc_difference, "tpr": _tpr_difference}


def _replicate_values(trials: list[_Trial], statistic: str, target: float, trial_counts: np.ndarray,
                      pos_weights: np.ndarray, neg_weights: np.ndarray) -> np.ndarray:
    """Per replicate, the mean over its drawn trials (with multiplicity) of the per-trial difference."""
    per_trial = np.column_stack([STATISTICS[statistic](t, pos_weights[:, t.pos_units], neg_weights[:, t.neg_units],
                                                       target) for t in trials])  # fmt: skip
    finite = np.isfinite(per_trial)  # a trial whose drawn clusters leave a class empty has no value
    counts = trial_counts * finite
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(finite, per_trial, 0.0) * counts).sum(axis=1) / counts.sum(axis=1)


def paired_difference(a: Sequence[TrialScores], b: Sequence[TrialScores], *, statistic: str = "auc",
                      fpr_target: float | None = None, n_boot: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, Any]:
    """Mean over trials of statistic(a) - statistic(b), with a design-aware paired bootstrap.

    Args:
        a: Method A's scores, one :class:`TrialScores` per trial.
        b: Method B's scores on the same trials (same order) and the same suspects per trial.
        statistic: ``"auc"`` (ties count half) or ``"tpr"`` (largest TPR with FPR <= ``fpr_target``,
            no interpolation, as :func:`bench.metrics.tpr_at_fpr`).
        fpr_target: The FPR bound of ``"tpr"``, in [0, 1).
        n_boot: Bootstrap replicates (>= 1).
        confidence: Two-sided level of the percentile interval, in (0, 1).
        seed: Seed of ``numpy.random.default_rng``; the same inputs and seed give the same answer.

    Returns:
        ``{"statistic", "diff", "low", "high", "p_value", "n_boot", "n_valid", "trials",
        "positive_clusters", "negative_clusters"}``; ``p_value`` = 2 min(share <= 0, share >= 0),
        floored at 1 / n_valid and capped at 1. ``n_valid`` counts replicates with a value (a
        replicate is void when every drawn trial lost a class; it happens only with very few clusters).

    Raises:
        ValueError: On mismatched trials or suspects, or an option out of range.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r}; choose one of {sorted(STATISTICS)}.")
    target = float(fpr_target) if fpr_target is not None else math.nan
    if statistic == "tpr" and not 0 <= target < 1:
        raise ValueError(f"statistic='tpr' needs fpr_target in [0, 1), got {fpr_target!r}; e.g. fpr_target=0.1.")
    if n_boot < 1 or not 0 < confidence < 1:
        raise ValueError(f"n_boot={n_boot}, confidence={confidence}: need n_boot >= 1 and 0 < confidence < 1.")
    trials, n_pos_units, n_neg_units = _align(a, b)
    ones = (np.ones((1, n_pos_units)), np.ones((1, n_neg_units)))
    diff = float(_replicate_values(trials, statistic, target, np.ones((1, len(trials))), *ones)[0])
    rng = np.random.default_rng(seed)

    def draw(k: int) -> np.ndarray:
        return rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(np.float64)

    boot = _replicate_values(trials, statistic, target, draw(len(trials)), draw(n_pos_units), draw(n_neg_units))
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        raise ValueError("every bootstrap replicate left a trial without positives or negatives; give the trials "
                         "shared cluster labels (or none) so that each replicate draws units of both classes.")
    alpha = 1.0 - confidence
    low, high = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    p_value = min(1.0, max(1.0 / boot.size, 2 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0)))))
    return {"statistic": statistic, "diff": diff, "low": low, "high": high, "p_value": p_value, "n_boot": n_boot,
            "n_valid": int(boot.size), "trials": len(trials), "positive_clusters": n_pos_units,
            "negative_clusters": n_neg_units}
