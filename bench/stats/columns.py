"""What a board may print for one method on one set of suspects: the TPR@FPR its negatives certify,
the tie credit in its AUC, an exact weighted AUC, and the cross-fitted deployment decision.

Pure functions (numpy and scipy; no torch, no files). Rules and reasons: ``docs/statistics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.stats import beta

from bench.metrics import roc_points


def fpr_upper_bound(false_positives: int, n_negative: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper confidence bound of a false-positive rate.

    Args:
        false_positives: Negatives accused at the threshold, ``0 <= k <= n``.
        n_negative: Negatives judged, ``n >= 1``.
        confidence: One-sided level in (0, 1).

    Returns:
        ``beta.ppf(confidence, k + 1, n - k)``; 1.0 when ``k == n``. At ``k = 0`` it is
        ``1 - (1 - confidence) ** (1 / n)``, about ``3 / n`` at 95 % (the rule of three).

    Raises:
        ValueError: On counts or a level out of range.
    """
    if n_negative < 1 or not 0 <= false_positives <= n_negative:
        raise ValueError(f"false_positives={false_positives} of n_negative={n_negative}: need 0 <= k <= n and n >= 1.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1), e.g. 0.95.")
    if false_positives == n_negative:
        return 1.0
    return float(beta.ppf(confidence, false_positives + 1, n_negative - false_positives))


def certifies(fpr_target: float, n_negative: int, confidence: float = 0.95) -> bool:
    """Whether ``n_negative`` negatives can certify an FPR of at most ``fpr_target`` at all.

    True when the upper bound at zero false positives is within the target: about 300 negatives for
    1 %, 30 for 10 % at 95 %.
    """
    return n_negative >= 1 and fpr_upper_bound(0, n_negative, confidence) <= fpr_target


def fpr_label(fpr_target: float) -> str:
    """``0.01 -> "T1%F"``, ``0.1 -> "T10%F"``, ``0.005 -> "T0.5%F"``."""
    return f"T{fpr_target * 100:.6g}%F"


def _class_scores(scores: Iterable[float], what: str) -> np.ndarray:
    values = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError(f"{what} is empty; a ROC needs at least one positive and one negative score.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} holds NaN or infinite values; every suspect needs a finite score.")
    return values


def tpr_column(scores_pos: Iterable[float], scores_neg: Iterable[float], fpr_target: float,
               confidence: float = 0.95) -> dict[str, Any]:
    """The TPR@FPR figure a board may print, with the FPR its negatives actually support.

    When the negatives certify the target (:func:`certifies`), the figure is the largest TPR among
    ROC points with FPR <= target (no interpolation, as :func:`bench.metrics.tpr_at_fpr`), labelled
    ``T1%F``. Otherwise the column is the TPR at zero false positives (label ``TPR@0FP``): the
    threshold sits above the highest negative, so positives tied with it are not counted; when
    several negatives tie at the top, the next ROC point adds them all at once, and the 0-FP point is
    the smallest FPR the negatives resolve.

    Args:
        scores_pos: Scores of the positives (derived suspects).
        scores_neg: Scores of the negatives (independent suspects).
        fpr_target: FPR bound in [0, 1), e.g. 0.01.
        confidence: One-sided level of the FPR upper bound.

    Returns:
        ``{"label", "tpr", "fpr", "false_positives", "n_negative", "fpr_upper", "certified",
        "certifiable"}``: ``fpr`` and ``false_positives`` of the ROC point used, ``fpr_upper`` its
        Clopper-Pearson bound, ``certified`` whether that bound is <= the target, ``certifiable``
        whether these negatives could certify the target at all (it decides the label).
    """
    if not 0 <= fpr_target < 1:
        raise ValueError(f"fpr_target={fpr_target} must be in [0, 1), e.g. 0.01 for T1%F.")
    pos, neg = _class_scores(scores_pos, "scores_pos"), _class_scores(scores_neg, "scores_neg")
    n = neg.size
    certifiable = certifies(fpr_target, n, confidence)
    bound = fpr_target if certifiable else 0.0
    fpr, tpr, _ = roc_points(np.r_[pos, neg], np.r_[np.ones(pos.size), np.zeros(n)])
    allowed = np.flatnonzero(fpr <= bound)
    best = allowed[np.argmax(tpr[allowed])]  # first maximum: the smallest FPR reaching that TPR
    false_positives = int(np.rint(fpr[best] * n))
    upper = fpr_upper_bound(false_positives, n, confidence)
    return {"label": fpr_label(fpr_target) if certifiable else "TPR@0FP", "tpr": float(tpr[best]),
            "fpr": float(fpr[best]), "false_positives": false_positives, "n_negative": int(n),
            "fpr_upper": upper, "certified": bool(upper <= fpr_target), "certifiable": bool(certifiable)}


def _pair_weights(pos: np.ndarray, neg: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray) -> tuple[Any, Any, Any]:
    """(weight of pairs won by the positive, weight of tied pairs, total weight), by one sort of the negatives."""
    order = np.argsort(neg, kind="mergesort")
    sorted_neg = neg[order]
    cumulative = np.r_[0, np.cumsum(w_neg[order])]
    below = cumulative[np.searchsorted(sorted_neg, pos, side="left")]
    up_to = cumulative[np.searchsorted(sorted_neg, pos, side="right")]
    return (w_pos * below).sum(), (w_pos * (up_to - below)).sum(), w_pos.sum() * w_neg.sum()


def tie_summary(scores_pos: Iterable[float], scores_neg: Iterable[float]) -> dict[str, float]:
    """How much of the AUC is tie credit: AUC = P(s+ > s-) + 1/2 P(s+ = s-), and its two extremes.

    Exact integer counts over all positive-negative pairs, O((P + N) log N).

    Returns:
        ``{"tie_fraction", "auc", "auc_ties_as_losses", "auc_ties_as_wins", "pairs"}``.
    """
    pos, neg = _class_scores(scores_pos, "scores_pos"), _class_scores(scores_neg, "scores_neg")
    wins, ties, total = _pair_weights(pos, neg, np.ones(pos.size, np.int64), np.ones(neg.size, np.int64))
    wins, ties, total = int(wins), int(ties), int(total)
    return {"tie_fraction": ties / total, "auc": (2 * wins + ties) / (2 * total),
            "auc_ties_as_losses": wins / total, "auc_ties_as_wins": (wins + ties) / total, "pairs": total}


def weighted_auc(scores_pos: Iterable[float], scores_neg: Iterable[float],
                 weights_pos: Iterable[float] | None = None, weights_neg: Iterable[float] | None = None) -> float:
    """Exact AUC with per-suspect weights (ties count half): the AUC of the sample in which suspect i
    appears ``w_i`` times, e.g. bootstrap multiplicities. Unit weights give :func:`bench.metrics.auc`.

    Raises:
        ValueError: On negative weights, a length mismatch, or a class whose weights sum to 0.
    """
    pos, neg = _class_scores(scores_pos, "scores_pos"), _class_scores(scores_neg, "scores_neg")
    w_pos = np.ones(pos.size) if weights_pos is None else np.asarray(weights_pos, dtype=np.float64).reshape(-1)
    w_neg = np.ones(neg.size) if weights_neg is None else np.asarray(weights_neg, dtype=np.float64).reshape(-1)
    if w_pos.shape != pos.shape or w_neg.shape != neg.shape:
        raise ValueError(f"weights ({w_pos.size}, {w_neg.size}) must match the scores ({pos.size}, {neg.size}).")
    if np.any(w_pos < 0) or np.any(w_neg < 0) or w_pos.sum() <= 0 or w_neg.sum() <= 0:
        raise ValueError("weights must be >= 0 with a positive sum in each class.")
    wins, ties, total = _pair_weights(pos, neg, w_pos, w_neg)
    return float((wins + 0.5 * ties) / total)


def calibrated_threshold(negatives: Sequence[float] | np.ndarray, fpr_target: float) -> float:
    """The deployment threshold on calibration negatives: with ``k = floor(fpr_target * n)`` false
    positives allowed, the (k+1)-th highest score; -inf when k >= n. A suspect is derived when its score
    is strictly above it. The one rule of `fpbench verify` and the self-check (`bench.self_check` imports it).
    """
    if not 0 <= fpr_target < 1:
        raise ValueError(f"fpr_target={fpr_target} must be in [0, 1), e.g. 0.01.")
    ordered = np.sort(np.asarray(negatives, dtype=np.float64))[::-1]
    if ordered.size == 0:
        raise ValueError("There are no negatives to calibrate a threshold on.")
    allowed = math.floor(fpr_target * ordered.size + 1e-9)
    return float(ordered[allowed]) if allowed < ordered.size else -math.inf


def crossfit_decision(scores_pos: Iterable[float], scores_neg: Iterable[float], fpr_target: float,
                      folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """The decision a deployment would make, judged on negatives it did not calibrate on.

    The negatives are split into ``folds`` folds (a permutation from ``numpy.random.default_rng(seed)``
    of their input order, then :func:`numpy.array_split`). Fold f's threshold is
    :func:`calibrated_threshold` on the other folds' negatives; fold f's negatives are judged against it
    (every negative exactly once) and every positive against every fold's threshold.

    Returns:
        ``{"fpr", "false_positives", "n_negative", "tpr", "tpr_per_fold", "thresholds", "folds",
        "fpr_target"}``: ``fpr`` = false positives / negatives, ``tpr`` = mean over folds.

    Raises:
        ValueError: ``folds`` outside [2, n_negative] or ``fpr_target`` outside [0, 1).
    """
    pos, neg = _class_scores(scores_pos, "scores_pos"), _class_scores(scores_neg, "scores_neg")
    if not 2 <= folds <= neg.size:
        raise ValueError(f"folds={folds} with {neg.size} negatives: need 2 <= folds <= n_negative "
                         "(each fold must hold a negative and calibrate on the others).")
    if not 0 <= fpr_target < 1:
        raise ValueError(f"fpr_target={fpr_target} must be in [0, 1), e.g. 0.01.")
    parts = np.array_split(np.random.default_rng(seed).permutation(neg.size), folds)
    thresholds, tprs, false_positives = [], [], 0
    for part in parts:
        threshold = calibrated_threshold(np.delete(neg, part), fpr_target)
        false_positives += int((neg[part] > threshold).sum())
        thresholds.append(threshold)
        tprs.append(float((pos > threshold).mean()))
    return {"fpr": false_positives / neg.size, "false_positives": false_positives, "n_negative": int(neg.size),
            "tpr": float(np.mean(tprs)), "tpr_per_fold": tprs, "thresholds": thresholds, "folds": folds,
            "fpr_target": float(fpr_target)}
