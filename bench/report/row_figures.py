"""What a row may print about its TPR and its ties, computed from each trial's ``per_model`` with
:mod:`bench.stats` (never from per-result blocks, so old result files get the same treatment).

- **TPR columns.** A TPR@FPR figure is only what the negatives can certify: a column is headed
  ``T1%F`` only where every row's negatives certify 1 % (:func:`bench.stats.certifies`, about 300
  negatives at 95 %); elsewhere it becomes ``TPR@0FP``, the TPR at zero false positives, whose FPR
  has a 95 % upper bound of about 3/n− (shown in the legend). Targets that all collapse show that
  column once (:func:`tpr_columns`).
- **Ties.** ``tie_fraction`` and the AUC with ties counted as losses / as wins
  (:func:`bench.stats.tie_summary`), means over trials.

Rules: ``docs/statistics.md`` (what the statistics mean), ``docs/leaderboard.md`` (how the board uses them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.metrics import format_fpr, fpr_column, fpr_label, fpr_percent
from bench.report.trials import spread
from bench.stats import certifies, fpr_upper_bound, tie_summary, tpr_column

ZERO_FP = "tpr0fp"  # column prefix of the TPR at zero false positives
ZERO_FP_LABEL = "TPR@0FP"
FPR_BOUND_LEVEL = 0.95  # one-sided level of the FPR upper bounds a board prints
TIE_FIGURES = ("tie_fraction", "auc_ties_low", "auc_ties_high")
TIE_WIDTH_SHOWN = 0.01  # the tie interval is printed next to the AUC when wider than this


def class_scores(result: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """(positive scores, negative scores) of a result's ``per_model``."""
    records = result["per_model"]
    return ([float(r["score"]) for r in records if r["role"] == "positive"],
            [float(r["score"]) for r in records if r["role"] == "negative"])  # fmt: skip


def trial_figures(result: Mapping[str, Any], fpr_targets: Sequence[float]) -> dict[str, float]:
    """One trial's TPR at each target (:func:`bench.stats.tpr_column`, keyed by ``fpr_column``), its
    TPR at zero false positives (:data:`ZERO_FP`) and its tie figures (:data:`TIE_FIGURES`). NaN for
    a target the result does not carry (not in its ``eval.fpr_targets``) and for every figure when the
    trial lacks positives or negatives."""
    pos, neg = class_scores(result)
    keys = [ZERO_FP, *map(fpr_column, fpr_targets), *TIE_FIGURES]
    if not pos or not neg:
        return dict.fromkeys(keys, math.nan)
    carried = {float(key) for key in result["metrics"].get("tpr_at_fpr") or {}}
    ties = tie_summary(pos, neg)
    out = {ZERO_FP: tpr_column(pos, neg, 0.0, FPR_BOUND_LEVEL)["tpr"],
           **{fpr_column(t): tpr_column(pos, neg, t, FPR_BOUND_LEVEL)["tpr"] if float(t) in carried else math.nan
              for t in fpr_targets},
           "tie_fraction": ties["tie_fraction"], "auc_ties_low": ties["auc_ties_as_losses"],
           "auc_ties_high": ties["auc_ties_as_wins"]}  # fmt: skip
    return {key: float(out[key]) for key in keys}


def row_certifies(fpr_target: float, n_negative: int) -> bool:
    """Whether a row whose smallest trial has ``n_negative`` negatives can certify ``fpr_target``."""
    return certifies(fpr_target, n_negative, FPR_BOUND_LEVEL)


def row_tpr_label(fpr_target: float, n_negative: int) -> str:
    """``T1%F`` when the row's negatives certify the target, else :data:`ZERO_FP_LABEL`."""
    return fpr_label(fpr_target) if row_certifies(fpr_target, n_negative) else ZERO_FP_LABEL


def min_negatives(fpr_target: float) -> int:
    """The fewest negatives that can certify ``fpr_target`` (299 for 1 %, 29 for 10 % at 95 %)."""
    n = max(1, math.floor(math.log(1 - FPR_BOUND_LEVEL) / math.log(1 - fpr_target)))
    while not row_certifies(fpr_target, n):
        n += 1
    return n


@dataclass(frozen=True)
class TprColumn:
    """A TPR column of a rendered table: the frame key of its figure, its heading and the targets it stands for."""

    key: str
    label: str
    targets: tuple[float, ...]

    @property
    def zero_fp(self) -> bool:
        return self.key == ZERO_FP


def tpr_columns(frame: pd.DataFrame, fpr_targets: Sequence[float]) -> list[TprColumn]:
    """The TPR columns a table of these rows shows: ``T<t>%F`` where every row's n− certifies the
    target, else one :data:`ZERO_FP_LABEL` column standing for every target that collapses."""
    counts = [int(n) for n in frame["n_neg"]] if len(frame) else []
    columns: list[TprColumn] = []
    collapsed: list[float] = []
    for target in fpr_targets:
        if all(row_certifies(target, n) for n in counts):
            columns.append(TprColumn(fpr_column(target), fpr_label(target), (target,)))
            continue
        if not collapsed:
            columns.append(TprColumn(ZERO_FP, ZERO_FP_LABEL, ()))  # placeholder at the first collapsed target
        collapsed.append(target)
    return [TprColumn(ZERO_FP, ZERO_FP_LABEL, tuple(collapsed)) if c.zero_fp else c for c in columns]


def zero_fp_bounds(frame: pd.DataFrame) -> str:
    """``FPR ≤ 5.8 % at 95 %, n− = 50`` for each distinct n− of the rows (joined with ``; ``)."""
    counts = sorted({int(n) for n in frame["n_neg"]}) if len(frame) else []
    return "; ".join(f"FPR ≤ {fpr_upper_bound(0, n, FPR_BOUND_LEVEL) * 100:.2g} % at {FPR_BOUND_LEVEL * 100:g} %, "
                     f"n− = {n}" for n in counts)  # fmt: skip


def tpr_legend(frame: pd.DataFrame, fpr_targets: Sequence[float]) -> list[tuple[str, str]]:
    """``(term, definition)`` pairs that define the TPR columns of a table of these rows (plain text)."""
    shown = tpr_columns(frame, fpr_targets)
    out = []
    certified = [c for c in shown if not c.zero_fp]
    if certified:
        names = " / ".join(c.label for c in certified)
        limits = ", ".join(f"{min_negatives(t)} for {fpr_percent(t)} %" for c in certified for t in c.targets)
        out.append((names, "the largest true-positive rate among ROC points whose false-positive rate is at most "
                           f"{' / '.join(f'{fpr_percent(c.targets[0])} %' for c in certified)}, without "
                           "interpolation. A column carries this name only when every row's negatives can certify "
                           f"the target (95 % upper bound of the FPR at zero false positives within it: n− ≥ {limits})."))
    for column in shown:
        if column.zero_fp:
            lost = " / ".join(fpr_label(t) for t in column.targets)
            out.append((ZERO_FP_LABEL, f"shown instead of {lost}, which these negatives cannot certify: the "
                                       "true-positive rate at zero false positives (the threshold just above the "
                                       "highest negative; a positive tied with it is not counted). Its FPR is 0 on "
                                       f"these negatives and at most: {zero_fp_bounds(frame)} (one-sided "
                                       "Clopper–Pearson bound). Read it together with n−."))
    return out


def _suspect_ci(result: Mapping[str, Any], tpr_key: str | None) -> tuple[float, float]:
    ci = result["metrics"].get("ci") or {}
    pair = ci.get("auc") if tpr_key is None else (ci.get("tpr_at_fpr") or {}).get(tpr_key)
    return (float(pair[0]), float(pair[1])) if pair else (math.nan, math.nan)


def _spread_of(name: str, values: list[float], confidence: float, one_trial_ci: tuple[float, float]) -> dict[str, Any]:
    """``name``, ``name_std``, ``name_ci_low/high``: over trials, or ``one_trial_ci`` for a single trial."""
    stats = spread(values, confidence)
    low, high = (stats.low, stats.high) if len(values) > 1 else one_trial_ci
    return {name: stats.mean, f"{name}_std": stats.std, f"{name}_ci_low": low, f"{name}_ci_high": high}


def aggregate(results: Iterable[Mapping[str, Any]], fpr_targets: Sequence[float], confidence: float) -> dict[str, Any]:
    """AUC, TPR per target (the target's figure where the row's n− certifies it, else TPR@0FP), TPR@0FP
    and the tie figures of one row's trials: mean ± sd and CI over trials (one trial: its CI over
    suspects, stored by the evaluation, for the AUC and a certified target; none for TPR@0FP).

    Args:
        results: The row's results, one per trial, in trial order.
        fpr_targets: The board's FPR targets.
        confidence: Level of the CIs.

    Returns:
        The row's figure columns (``auc*``, per target ``t<x>f*`` and ``t<x>f_label``, ``tpr0fp*``,
        ``tpr0fp_fpr_upper``, :data:`TIE_FIGURES`).
    """
    trials = list(results)
    n_negative = min(int(r["metrics"]["n_negative"]) for r in trials)
    per_trial = [trial_figures(r, fpr_targets) for r in trials]
    out = _spread_of("auc", [float(r["metrics"]["auc"]) for r in trials], confidence, _suspect_ci(trials[0], None))
    for target in fpr_targets:
        name, certified = fpr_column(target), row_certifies(target, n_negative)
        one_trial = _suspect_ci(trials[0], format_fpr(target)) if certified else (math.nan, math.nan)
        # A trial that does not carry the target (NaN) stays NaN, whichever figure stands for it.
        values = [f[name] if certified or math.isnan(f[name]) else f[ZERO_FP] for f in per_trial]
        out.update(_spread_of(name, values, confidence, one_trial))
        out[f"{name}_label"] = row_tpr_label(target, n_negative)
    out.update(_spread_of(ZERO_FP, [f[ZERO_FP] for f in per_trial], confidence, (math.nan, math.nan)))
    out[f"{ZERO_FP}_fpr_upper"] = fpr_upper_bound(0, n_negative, FPR_BOUND_LEVEL) if n_negative else math.nan
    out.update({name: _mean([f[name] for f in per_trial]) for name in TIE_FIGURES})
    return out


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def tie_interval(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """The row's ``(auc_ties_low, auc_ties_high)`` when wider than :data:`TIE_WIDTH_SHOWN`, else None."""
    low, high = row.get("auc_ties_low"), row.get("auc_ties_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high) or high - low <= TIE_WIDTH_SHOWN:
        return None
    return float(low), float(high)
