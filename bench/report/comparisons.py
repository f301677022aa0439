"""Paired comparisons and ranks of one benchmark's rows (one positives view), on :mod:`bench.stats`.

- Each trial of a row becomes a :class:`bench.stats.TrialScores` from its ``per_model`` on the
  suspects both rows scored with the same role: role positive = 1 / negative = 0, the resampling
  cluster = the suspect's ``group`` (else its ``attack`` for a positive, ``kind`` for a negative,
  else the suspect alone).
- Two rows are compared on the trials both have (matched by trial key) with
  :func:`bench.stats.paired_difference` (trials, positive clusters and negative clusters resampled; a
  negative shared by the trials weighted once per replicate), and only when they share at least
  :data:`MIN_TRIALS` such trials.
- The p-values of all comparisons of the benchmark and view are Holm-adjusted
  (:func:`bench.stats.holm`); a pair is distinguishable when the adjusted p < 1 − confidence.
- rank = 1 + the number of rows significantly better (:func:`bench.stats.ranks`); a row with fewer
  than :data:`MIN_TRIALS` trials is neither ranked nor compared.

Rules and reasons: ``docs/leaderboard.md`` and ``docs/statistics.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

from bench.report import trials as tr
from bench.stats import TrialScores, holm, paired_difference, ranks

log = logging.getLogger(__name__)
MIN_TRIALS = 3  # below this a bootstrap over trials says nothing about trial-to-trial variation
FEW_TRIALS_NOTE = f"ranks are not tested below {MIN_TRIALS} trials"
Trials = Mapping[tr.TrialKey, Mapping[str, Any]]


@dataclass(frozen=True)
class RowComparison:
    """Row A against row B: mean over their shared trials of AUC(A) − AUC(B) on the shared suspects.

    Attributes:
        shared_trials: Trials compared (both rows have them, with positives and negatives among the
            shared suspects); 0 when not compared.
        delta: Observed difference; ``low``/``high`` its percentile interval.
        p_value: Raw two-sided bootstrap p-value; ``p_holm`` after the Holm adjustment over the benchmark.
        n_boot: Replicates drawn.
        note: Why the rows were not compared ("" when they were).
    """

    shared_trials: int
    delta: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p_value: float = math.nan
    n_boot: int = 0
    note: str = ""
    p_holm: float = math.nan

    @property
    def compared(self) -> bool:
        return self.shared_trials > 0


def suspect_cluster(record: Mapping[str, Any]) -> str:
    """The resampling unit of a ``per_model`` record: a positive's group (its attack config: the seeds of one
    config are drawn together), else its attack; a negative is its own unit, drawn once per replicate for
    every trial that scores it. Not the negative kind: 4 kinds are too few clusters for a percentile
    bootstrap (it separates identical methods more often: docs/statistics.md, "Negatives by kind")."""
    if record["role"] != "positive":
        return f"model:{record['model_id']}"
    label = record.get("group") or record.get("attack")
    return str(label) if label else f"model:{record['model_id']}"


def trial_pair(result_a: Mapping[str, Any], result_b: Mapping[str, Any]) -> tuple[TrialScores, TrialScores] | None:
    """Both results' scores on the suspects both scored with the same role (sorted by id); None when
    those lack positives or negatives."""
    a = {m["model_id"]: m for m in result_a["per_model"]}
    b = {m["model_id"]: m for m in result_b["per_model"]}
    shared = sorted(k for k in a.keys() & b.keys() if a[k]["role"] == b[k]["role"])
    roles = [int(a[k]["role"] == "positive") for k in shared]
    if len(set(roles)) < 2:
        return None
    clusters = [suspect_cluster(a[k]) for k in shared]
    return (TrialScores(shared, roles, [float(a[k]["score"]) for k in shared], clusters),
            TrialScores(shared, roles, [float(b[k]["score"]) for k in shared], clusters))  # fmt: skip


def compare_rows(trials_a: Trials, trials_b: Trials, n_boot: int, confidence: float, seed: int) -> RowComparison:
    """:func:`bench.stats.paired_difference` of the AUC on the shared trials (see the module docstring).

    Returns:
        The :class:`RowComparison`, ``shared_trials`` 0 with a ``note`` when fewer than
        :data:`MIN_TRIALS` trials can be paired or the scores cannot be aligned.
    """
    shared = sorted(trials_a.keys() & trials_b.keys(), key=tr.trial_sort_key)
    pairs = [p for key in shared if (p := trial_pair(trials_a[key], trials_b[key])) is not None]
    if len(pairs) < MIN_TRIALS:
        return RowComparison(0, n_boot=n_boot, note=f"{len(pairs)} shared trial(s) with positives and negatives; "
                                                 f"comparisons need at least {MIN_TRIALS}")  # fmt: skip
    try:
        out = paired_difference([a for a, _ in pairs], [b for _, b in pairs], statistic="auc", n_boot=n_boot,
                                confidence=confidence, seed=seed)  # fmt: skip
    except ValueError as err:  # e.g. a suspect whose role or cluster differs between trials
        log.warning("rows not compared: %s", err)
        return RowComparison(0, n_boot=n_boot, note=str(err))
    return RowComparison(len(pairs), out["diff"], out["low"], out["high"], out["p_value"], n_boot)


@dataclass(frozen=True)
class RankedBenchmark:
    """One benchmark's comparisons (pairs of row ids, in row order) and ranks (None: not ranked)."""

    comparisons: list[tuple[str, str, RowComparison]]
    ranks: dict[str, int | None]


def holm_resolution(n_boot: int, comparisons: int, confidence: float) -> int:
    """Replicates enough for Holm over ``comparisons`` tests: a bootstrap p-value is at least 1/n_boot, so the
    smallest Holm-adjusted p is comparisons/n_boot; it must sit 10x under 1 - confidence, else every
    separable pair reads the same floor (45 comparisons at the results' n = 1000: 0.045)."""
    return max(int(n_boot), math.ceil(10 * comparisons / (1.0 - confidence)))


def rank_benchmark(rows: Sequence[tuple[str, Trials]], n_boot: int, confidence: float, seed: int) -> RankedBenchmark:
    """Compare every pair of rows with at least :data:`MIN_TRIALS` trials, Holm-adjust, and rank.

    Args:
        rows: ``(row id, trials by key)`` in board order; ids unique.
        n_boot, confidence, seed: The bootstrap settings (``eval.bootstrap`` of the results).

    Returns:
        The :class:`RankedBenchmark`. Rows with fewer trials are left out of the comparisons and get
        rank None; the others get 1 + the number of rows significantly better (Holm-adjusted p
        < 1 − confidence and ΔAUC in their favour).
    """
    eligible = [(name, trials) for name, trials in rows if len(trials) >= MIN_TRIALS]
    n_boot = holm_resolution(n_boot, len(eligible) * (len(eligible) - 1) // 2, confidence)
    pairs = [(a, b, compare_rows(ta, tb, n_boot, confidence, seed)) for (a, ta), (b, tb) in combinations(eligible, 2)]
    adjusted = holm({f"{a}\n{b}": c.p_value for a, b, c in pairs if c.compared})
    pairs = [(a, b, replace(c, p_holm=adjusted[f"{a}\n{b}"]) if c.compared else c) for a, b, c in pairs]
    alpha = 1.0 - confidence
    wins = {(a, b) if c.delta > 0 else (b, a) for a, b, c in pairs if distinguishable(c, alpha) and c.delta != 0}
    ranked = ranks([name for name, _ in eligible], lambda x, y: (x, y) in wins)
    return RankedBenchmark(pairs, {name: ranked.get(name) for name, _ in rows})


def distinguishable(comparison: RowComparison, alpha: float) -> bool:
    """Whether the Holm-adjusted p-value of a compared pair is below ``alpha`` (= 1 − confidence)."""
    return comparison.compared and comparison.p_holm < alpha
