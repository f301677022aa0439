"""ROC, AUC, TPR at a fixed FPR, per-group means and stratified bootstrap CIs for suspect scores.

Convention: label 1 = positive (derived from the source), 0 = negative (independent); a higher score
means "more likely derived". ROC points follow ``sklearn.metrics.roc_curve(drop_intermediate=False)``:
one point per distinct score (descending), preceded by the point (0, 0) at threshold ``+inf``; tied
scores form a single point, so a tie between a positive and a negative is a diagonal ROC segment
(AUC counts it as half a correct pair, exactly as ``roc_auc_score``). Intermediate collinear points
are kept on purpose: scikit-learn's default ``drop_intermediate=True`` removes them, and a removed
point can be the last one under an FPR bound, which would lower the non-interpolated TPR@FPR.

Why not torchmetrics: ``torchmetrics.functional.classification.binary_roc``/``binary_auroc`` (1.9) handle
ties like scikit-learn but return float32 (AUC off by ~1e-8, past the 1e-9 the benchmark promises) and
apply a sigmoid to scores outside [0, 1], which can merge distinct large scores into ties. The curve is
a sort plus two cumulative sums, so it is computed here in float64 numpy, which also keeps the
1,000-resample bootstrap cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


@dataclass
class BootstrapConfig:
    """Percentile bootstrap over suspects (positives and negatives resampled separately).

    Attributes:
        n: Number of resamples; 0 disables confidence intervals (``ci`` is then ``None``).
        confidence: Two-sided confidence level of the percentile interval.
        seed: Seed of the ``numpy.random.Generator`` drawing the resamples (same seed, same CI).
    """

    n: int = 1000
    confidence: float = 0.95
    seed: int = 0


MAX_BOOTSTRAP_N = 1_000_000  # ~minutes of resampling; more adds no precision a CI can show, only memory and time


def validate_bootstrap(config: Any, where: str = "eval.bootstrap") -> None:
    """Raise ValueError unless ``0 <= n <= MAX_BOOTSTRAP_N`` and ``0 < confidence < 1`` (naming the key)."""
    if not 0 <= config.n <= MAX_BOOTSTRAP_N:
        raise ValueError(f"{where}.n={config.n} must be in [0, {MAX_BOOTSTRAP_N}] (0: no confidence intervals; "
                         "1000 is the usual choice).")
    if not 0.0 < config.confidence < 1.0:
        raise ValueError(f"{where}.confidence={config.confidence} must be in (0, 1), e.g. 0.95.")


def format_fpr(target: float) -> str:
    """The stable string key of an FPR target in result dicts: ``0.01 -> "0.01"``, ``0.1 -> "0.1"``."""
    return repr(float(target))


DEFAULT_FPR_TARGETS = (0.01, 0.1)  # eval.fpr_targets default: the paper's T1%F and T10%F


def fpr_percent(target: float) -> str:
    """An FPR target as a percent without trailing zeros: ``0.01 -> "1"``, ``0.001 -> "0.1"``."""
    return f"{round(float(target) * 100, 10):g}"


def fpr_label(target: float) -> str:
    """The display name of the TPR at an FPR target: ``0.01 -> "T1%F"``, ``0.05 -> "T5%F"``."""
    return f"T{fpr_percent(target)}%F"


def fpr_column(target: float) -> str:
    """The table column of the TPR at an FPR target: ``0.01 -> "t1f"``, ``0.001 -> "t0_1f"``."""
    return f"t{fpr_percent(target).replace('.', '_')}f"


def result_fpr_targets(results: Iterable[dict[str, Any]]) -> list[float]:
    """The FPR targets the results carry (keys of ``metrics.tpr_at_fpr``), united and sorted ascending.

    Sorted, not in file order, so a table over many results has one column order whatever the order
    the files are read in. Without results (or targets) it is :data:`DEFAULT_FPR_TARGETS`.
    """
    found = {float(key) for result in results for key in (result.get("metrics") or {}).get("tpr_at_fpr") or {}}
    return sorted(found) if found else list(DEFAULT_FPR_TARGETS)


def _check_inputs(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length ({s.size} vs {y.size}); pass one label per score.")
    if not np.all(np.isfinite(s)):
        bad = np.flatnonzero(~np.isfinite(s))[:5].tolist()
        raise ValueError(f"scores contain NaN or infinite values at positions {bad}; every suspect needs a finite score.")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"labels must be 0 (negative) or 1 (positive), got values {sorted(set(y.tolist()))[:5]}.")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(
            f"ROC needs both classes, got {n_pos} positives and {y.size - n_pos} negatives; "
            "the zoo must contain derived (label 1) and independent (label 0) suspects."
        )
    return s, y


def _roc(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of validated inputs; same arithmetic as scikit-learn's ``_binary_clf_curve``."""
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    # The last index of each run of equal scores: ties collapse into one ROC point.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = 1.0 + last - tps
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, s[last]]
    return fps / fps[-1], tps / tps[-1], thresholds


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    # fpr[0] == 0, so the mask is never empty.
    return float(tpr[fpr <= target].max())


def _check_target(target: float) -> float:
    t = float(target)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"FPR target {target!r} is outside [0, 1]; use e.g. 0.01 for T1%F.")
    return t


def roc_points(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with every distinct score as a threshold.

    Args:
        scores: One finite score per suspect, higher = more likely derived.
        labels: 1 for positives (derived), 0 for negatives (independent).

    Returns:
        ``(fpr, tpr, thresholds)`` equal to ``sklearn.metrics.roc_curve(labels, scores,
        drop_intermediate=False)``: thresholds descending, starting at ``inf`` with fpr = tpr = 0.

    Raises:
        ValueError: On NaN/infinite scores, labels other than 0/1, or a missing class.
    """
    return _roc(*_check_inputs(scores, labels))


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (trapezoidal; ties count half), equal to ``roc_auc_score``.

    Args:
        scores: One finite score per suspect, higher = more likely derived.
        labels: 1 for positives, 0 for negatives.

    Returns:
        The AUC in [0, 1].
    """
    fpr, tpr, _ = roc_points(scores, labels)
    return _auc(fpr, tpr)


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, target: float) -> float:
    """Largest TPR among ROC points whose FPR is at most ``target`` (no interpolation).

    Args:
        scores: One finite score per suspect, higher = more likely derived.
        labels: 1 for positives, 0 for negatives.
        target: FPR bound in [0, 1], e.g. 0.01 for T1%F.

    Returns:
        The TPR in [0, 1]; with fewer negatives than ``1/target`` this is the TPR at FPR = 0.
    """
    fpr, tpr, _ = roc_points(scores, labels)
    return _tpr_at(fpr, tpr, _check_target(target))


def _aruc(s: np.ndarray, y: np.ndarray) -> float:
    """ARUC of validated inputs: the exact integral of min(R, U) over tau in [0, 1] (see :func:`aruc`)."""
    low, high = float(s.min()), float(s.max())
    if high == low:
        return 0.0  # one score for every suspect: no threshold tells the two classes apart
    u = (s - low) / (high - low)
    values = np.unique(u)  # ascending breakpoints of R and U; the first is 0.0, the last 1.0
    pos, neg = np.sort(u[y == 1]), np.sort(u[y == 0])
    # On (values[k], values[k+1]]: R = share of positives >= values[k+1], U = share of negatives <= values[k].
    robustness = 1.0 - np.searchsorted(pos, values[1:], side="left") / pos.size
    uniqueness = np.searchsorted(neg, values[:-1], side="right") / neg.size
    return float(np.sum(np.diff(values) * np.minimum(robustness, uniqueness)))


def aruc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the robustness-uniqueness curves (IPGuard, Cao et al., AsiaCCS 2021), exact.

    Scores are mapped to [0, 1] by min-max over the pooled scores (docs/metrics.md, "ARUC"); for a
    threshold tau, robustness R(tau) = share of positives with mapped score >= tau and uniqueness
    U(tau) = share of negatives with mapped score < tau; ARUC = integral over [0, 1] of min(R, U),
    summed exactly over the steps of the two functions. Invariant to the suspects' order and to any
    transform ``a * score + b`` with ``a > 0``; 0.0 when every suspect has the same score.

    Args:
        scores: One finite score per suspect, higher = more likely derived.
        labels: 1 for positives, 0 for negatives.

    Returns:
        ARUC in [0, 1]: 1.0 only when every negative has the lowest score and every positive the highest.
    """
    return _aruc(*_check_inputs(scores, labels))


def _resolution_note(n_negative: int, targets: Sequence[float]) -> str | None:
    coarse = [t for t in targets if t > 0 and n_negative < 1.0 / t]
    if not coarse:
        return None
    parts = [f"FPR <= {format_fpr(t)} (1/FPR = {1.0 / t:g})" for t in coarse]
    return (
        f"Only {n_negative} negatives: the TPR at {', '.join(parts)} rests on fewer negatives than 1/FPR, "
        f"so the smallest non-zero FPR measurable is 1/{n_negative} = {1.0 / n_negative:.3g} and that "
        "figure is the TPR at zero false positives."
    )


def _bootstrap(
    s: np.ndarray, y: np.ndarray, targets: Sequence[float], config: BootstrapConfig
) -> dict[str, Any] | None:
    validate_bootstrap(config, "bootstrap")
    if config.n == 0:
        return None
    rng = np.random.default_rng(config.seed)
    pos, neg = s[y == 1], s[y == 0]
    labels = np.r_[np.ones(pos.size, np.int64), np.zeros(neg.size, np.int64)]
    aucs = np.empty(config.n)
    tprs = np.empty((config.n, len(targets)))
    for b in range(config.n):
        # Stratified: each resample keeps the observed numbers of positives and negatives.
        sample = np.r_[pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size, neg.size)]]
        fpr, tpr, _ = _roc(sample, labels)
        aucs[b] = _auc(fpr, tpr)
        tprs[b] = [_tpr_at(fpr, tpr, t) for t in targets]
    q = [100 * (1 - config.confidence) / 2, 100 * (1 + config.confidence) / 2]

    def interval(values: np.ndarray) -> list[float]:
        return [float(v) for v in np.percentile(values, q)]

    return {
        "auc": interval(aucs),
        "tpr_at_fpr": {format_fpr(t): interval(tprs[:, i]) for i, t in enumerate(targets)},
        "n": int(config.n),
        "confidence": float(config.confidence),
    }


def _mean_or_none(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def group_summary(
    s: np.ndarray, y: np.ndarray, groups: Sequence[str], extras: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Per-group count, mean score, label and ``mean_<extra>`` (NaN extras ignored), keys sorted."""
    names = np.asarray([str(g) for g in groups], dtype=object)
    if names.size != s.size:
        raise ValueError(f"groups has {names.size} entries for {s.size} scores; pass one group per suspect.")
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names.tolist())):
        mask = names == name
        group_labels = set(y[mask].tolist())
        if len(group_labels) != 1:
            raise ValueError(
                f"group {name!r} mixes positives and negatives; name positives by attack and negatives "
                "by kind (SAST/SADT/DAST/DADT) so that the names differ."
            )
        entry: dict[str, Any] = {
            "n": int(mask.sum()),
            "mean_score": float(s[mask].mean()),
            "label": int(group_labels.pop()),
        }
        for key in sorted(extras):
            entry[f"mean_{key}"] = _mean_or_none(extras[key][mask])
        out[name] = entry
    return out


def compute_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    groups: Sequence[str] | None,
    *,
    fpr_targets: Sequence[float] = (0.01, 0.1),
    bootstrap: BootstrapConfig | None = None,
    extras: dict[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """All metrics of one evaluation as a JSON-able, deterministic dict.

    Args:
        scores: One finite score per suspect, higher = more likely derived.
        labels: 1 for positives, 0 for negatives.
        groups: Per suspect, the attack name (positives) or negative kind (SAST/SADT/DAST/DADT);
            ``None`` gives an empty ``groups`` entry.
        fpr_targets: FPR bounds for ``tpr_at_fpr`` (keys formatted by :func:`format_fpr`).
        bootstrap: Resampling settings for ``ci``; ``None`` means ``BootstrapConfig()``.
        extras: Extra per-suspect values (e.g. ``{"agreement": [...]}``), averaged per group.

    Returns:
        ``{"auc", "aruc", "tpr_at_fpr", "n_positive", "n_negative", "resolution_note", "ci", "groups", "roc"}``
        with plain Python numbers; ``ci`` is ``None`` when ``bootstrap.n == 0``.

    Raises:
        ValueError: On invalid scores/labels, mismatched lengths, or a group holding both classes.
    """
    s, y = _check_inputs(scores, labels)
    targets = [_check_target(t) for t in fpr_targets]
    extra_arrays: dict[str, np.ndarray] = {}
    for key, values in (extras or {}).items():
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size != s.size:
            raise ValueError(f"extras[{key!r}] has {arr.size} values for {s.size} scores; pass one per suspect.")
        extra_arrays[str(key)] = arr
    fpr, tpr, _ = _roc(s, y)
    n_negative = int((y == 0).sum())
    return {
        "auc": _auc(fpr, tpr),
        "aruc": _aruc(s, y),
        "tpr_at_fpr": {format_fpr(t): _tpr_at(fpr, tpr, t) for t in targets},
        "n_positive": int(y.sum()),
        "n_negative": n_negative,
        "resolution_note": _resolution_note(n_negative, targets),
        "ci": _bootstrap(s, y, targets, bootstrap or BootstrapConfig()),
        "groups": group_summary(s, y, groups, extra_arrays) if groups is not None else {},
        "roc": {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]},
    }


def isclose(a: float, b: float, tol: float = 1e-9) -> bool:
    """Absolute float comparison used when re-checking stored metrics."""
    return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=tol)
