"""Trials as the unit of evidence: rows, benchmarks, statistics over trials, paired comparisons, ranks.

Pure functions over result dicts (numpy and scipy; no torch, no files). The exact rules are in
``docs/leaderboard.md``; in short:

- A **trial** is one result file, identified by its trial key ``(seed, zoo.source.seed)``.
- A **row** is (zoo name, method name, method version, the config without the trial keys,
  positives view): the trials of one method config on one zoo (views: ``bench.report.positive_sets``).
- A copied result is not a second trial (:func:`unique_trials`).
- A **benchmark** is (zoo name, the config without the method and without the trial keys): rows
  of one benchmark were evaluated on the same suspects and are compared with each other.
- A row's figures are the mean ± sample standard deviation (ddof=1) over its trials, with a
  Student-t confidence interval over trials.
- Two rows of one benchmark are compared by a hierarchical paired bootstrap of the AUC difference
  (trials, then positives and negatives within a trial, the same draws for both rows).
- Rank groups: the best remaining row and every row it is not significantly better than share a
  rank; repeat on the rest.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.io import sha256_json

log = logging.getLogger(__name__)
DEFAULT_BOOTSTRAP_N = 2000  # resamples of a paired comparison when the results do not set eval.bootstrap.n
DEFAULT_CONFIDENCE = 0.95  # two-sided level when the results do not set eval.bootstrap.confidence
TrialKey = tuple[int, int | None]


def strip_trial_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a result's ``config`` without the trial keys ``seed`` and ``zoo.source.seed``."""
    out = copy.deepcopy(dict(config))
    out.pop("seed", None)
    zoo = out.get("zoo")
    if isinstance(zoo, dict) and isinstance(zoo.get("source"), dict):
        zoo["source"].pop("seed", None)
    return out


def trial_key(result: Mapping[str, Any]) -> TrialKey:
    """``(seed, zoo.source.seed)`` of a result; the source seed is None when the config has none."""
    zoo = result["config"].get("zoo")
    source = zoo.get("source") if isinstance(zoo, dict) else None
    source_seed = source.get("seed") if isinstance(source, dict) else None
    return int(result["seed"]), None if source_seed is None else int(source_seed)


def trial_sort_key(key: TrialKey) -> tuple[int, int]:
    """Orders trial keys (None source seed first)."""
    return key[0], -(2**62) if key[1] is None else key[1]


def format_trial(key: TrialKey) -> str:
    """``seed=1`` or ``seed=1,source_seed=3``."""
    return f"seed={key[0]}" if key[1] is None else f"seed={key[0]},source_seed={key[1]}"


def row_key(result: Mapping[str, Any], positives: str = "all") -> tuple[str, str, str, str, str]:
    """(zoo name, method name, method version, sha256 of the config without the trial keys, positives view).

    ``positives`` is the view of the result (``all`` or ``paper``, :mod:`bench.report.positive_sets`):
    the rows of two views are aggregated, compared and ranked apart.
    """
    method = result["method"]
    return (result["zoo"]["name"], method["name"], str(method["version"]),
            sha256_json(strip_trial_keys(result["config"])), positives)  # fmt: skip


def benchmark_key(result: Mapping[str, Any]) -> str:
    """sha256 of (zoo name, the config without ``method`` and without the trial keys)."""
    config = strip_trial_keys(result["config"])
    config.pop("method", None)
    return sha256_json({"zoo": result["zoo"]["name"], "config": config})


def unique_trials(files: Iterable[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, Mapping[str, Any]]]:
    """The files with each trial once: a copied result must not count as a second trial.

    Files are taken in the lexicographic order of their paths; a file whose (row, trial key) an
    earlier file already holds is dropped with a warning naming both. Same zoo manifest sha256: a
    copy. A different manifest: the two conflict (the same config and seeds evaluated on zoos that
    differ, e.g. rebuilt with other code); the first is kept and the warning says so.

    Args:
        files: ``(relative path, result)`` pairs.

    Returns:
        The kept pairs, sorted by path.
    """
    kept: dict[tuple[tuple[str, ...], TrialKey], tuple[str, Mapping[str, Any]]] = {}
    for rel, result in sorted(files, key=lambda f: f[0]):
        key = (row_key(result), trial_key(result))
        if key not in kept:
            kept[key] = (rel, result)
            continue
        first, earlier = kept[key]
        what = f"trial {format_trial(key[1])} of {result['method']['name']} (config {key[0][3][:8]})"
        if earlier["zoo"]["manifest_sha256"] == result["zoo"]["manifest_sha256"]:
            log.warning("%s repeats %s on the same zoo manifest (a copy?); counted once, from %s.",
                        rel, what, first)  # fmt: skip
        else:
            log.warning("%s and %s conflict: %s on different zoo manifests (%s vs %s); kept %s, the first by "
                        "path; delete the stale one.", first, rel, what, earlier["zoo"]["manifest_sha256"][:8],
                        result["zoo"]["manifest_sha256"][:8], first)  # fmt: skip
    return sorted(kept.values(), key=lambda f: f[0])


def bootstrap_settings(result: Mapping[str, Any]) -> tuple[int, float, int]:
    """(n, confidence, seed) of the paired bootstrap: the result's ``eval.bootstrap``, else defaults.

    ``n`` below 1 (the per-result CI switched off) still gets :data:`DEFAULT_BOOTSTRAP_N`: a
    comparison cannot be made without resamples.
    """
    evaluation = result["config"].get("eval")
    boot = evaluation.get("bootstrap") if isinstance(evaluation, dict) else None
    boot = boot if isinstance(boot, dict) else {}
    n = int(boot.get("n") or 0)
    return (n if n >= 1 else DEFAULT_BOOTSTRAP_N, float(boot.get("confidence", DEFAULT_CONFIDENCE)),
            int(boot.get("seed", 0)))  # fmt: skip


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (ddof=1) and Student-t CI over the finite values of trials.

    ``std``, ``low`` and ``high`` are NaN with fewer than two finite values; ``n`` counts them.
    """

    mean: float
    std: float
    low: float
    high: float
    n: int


def spread(values: Iterable[float], confidence: float = DEFAULT_CONFIDENCE, bounds: tuple[float, float] = (0.0, 1.0)) -> Spread:
    """Mean ± sd and the t-interval ``mean ± t_{(1+c)/2, n-1} * sd / sqrt(n)``, clipped to ``bounds``.

    Args:
        values: One figure per trial; NaN (a trial without the figure) is left out.
        confidence: Two-sided level in (0, 1).
        bounds: The range the figure lives in (AUC and TPR: [0, 1]); the interval is clipped to it.

    Returns:
        The :class:`Spread`; all NaN when no value is finite.
    """
    from scipy.stats import t as student_t

    finite = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return Spread(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(finite.mean())
    if finite.size < 2:
        return Spread(mean, math.nan, math.nan, math.nan, 1)
    std = float(finite.std(ddof=1))
    half = float(student_t.ppf((1 + confidence) / 2, finite.size - 1)) * std / math.sqrt(finite.size)
    return Spread(mean, std, max(bounds[0], mean - half), min(bounds[1], mean + half), int(finite.size))


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of rows A and B: AUC(A) − AUC(B) over their shared trials and suspects.

    Attributes:
        shared_trials: Trials both rows have (and in which the shared suspects hold positives and
            negatives); 0 means the rows were not compared.
        delta: Mean over those trials of the AUC difference on the shared suspects.
        low, high: Percentile interval of the bootstrap distribution of ``delta``.
        p_value: Two-sided bootstrap p-value, ``min(1, 2 * min(P(d <= 0), P(d >= 0)))``.
        n_boot: Resamples drawn.
        note: Why the rows were not compared ("" when they were).
    """

    shared_trials: int
    delta: float
    low: float
    high: float
    p_value: float
    n_boot: int
    note: str = ""

    @property
    def compared(self) -> bool:
        return self.shared_trials > 0

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 0 (False when not compared)."""
        return self.compared and (self.low > 0 or self.high < 0)


def pair_wins(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """``W[i, j] = 1`` if positive i outscores negative j, ``0.5`` on a tie, else 0; ``W.mean()`` is the AUC."""
    p, n = positive[:, None], negative[None, :]
    return (p > n).astype(np.float64) + 0.5 * (p == n)


def _scores(result: Mapping[str, Any]) -> dict[str, tuple[str, float]]:
    return {m["model_id"]: (m["role"], float(m["score"])) for m in result["per_model"]}


def trial_difference(result_a: Mapping[str, Any], result_b: Mapping[str, Any]) -> np.ndarray | None:
    """``W_a - W_b`` (:func:`pair_wins`) over the suspects both results scored with the same role.

    Suspects are ordered by model id. None when the shared suspects lack positives or negatives.
    """
    a, b = _scores(result_a), _scores(result_b)
    shared = sorted(k for k in a.keys() & b.keys() if a[k][0] == b[k][0])
    pos = [k for k in shared if a[k][0] == "positive"]
    neg = [k for k in shared if a[k][0] == "negative"]
    if not pos or not neg:
        return None

    def wins(s: dict[str, tuple[str, float]]) -> np.ndarray:
        return pair_wins(np.array([s[k][1] for k in pos]), np.array([s[k][1] for k in neg]))

    return wins(a) - wins(b)


def _resample_counts(rng: np.random.Generator, draws: int, size: int) -> np.ndarray:
    """``draws`` resamples of ``size`` items with replacement, as counts per item: shape (draws, size)."""
    picks = rng.integers(0, size, size=(draws, size)) + size * np.arange(draws)[:, None]
    return np.bincount(picks.ravel(), minlength=draws * size).reshape(draws, size).astype(np.float64)


def paired_comparison(
    trials_a: Mapping[TrialKey, Mapping[str, Any]],
    trials_b: Mapping[TrialKey, Mapping[str, Any]],
    n: int = DEFAULT_BOOTSTRAP_N,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Comparison:
    """Hierarchical paired bootstrap of AUC(A) − AUC(B).

    Each resample draws the shared trials with replacement, then within every drawn trial the
    positives and the negatives separately with replacement, the same suspects for A and B; the
    resample's figure is the mean over its drawn trials of the AUC difference (ties count 1/2).
    With one shared trial only the suspects are resampled. The draws come from
    ``numpy.random.default_rng(seed)``: the same inputs and seed give the same answer.

    Args:
        trials_a: Row A's results by trial key.
        trials_b: Row B's results by trial key.
        n: Resamples (>= 1).
        confidence: Two-sided level of the percentile interval, in (0, 1).
        seed: Seed of the generator.

    Returns:
        The :class:`Comparison` (``shared_trials`` 0 and a ``note`` when nothing is shared).

    Raises:
        ValueError: If ``n`` or ``confidence`` is out of range.
    """
    if n < 1:
        raise ValueError(f"n={n} resamples: a paired comparison needs n >= 1 (e.g. eval.bootstrap.n=2000).")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be in (0, 1), e.g. 0.95.")
    shared = sorted(trials_a.keys() & trials_b.keys(), key=trial_sort_key)
    if not shared:
        return Comparison(0, math.nan, math.nan, math.nan, math.nan, n, "no shared trials")
    matrices = [d for key in shared if (d := trial_difference(trials_a[key], trials_b[key])) is not None]
    if not matrices:
        return Comparison(0, math.nan, math.nan, math.nan, math.nan, n,
                          "no shared trial has positives and negatives among the shared suspects")  # fmt: skip
    delta = float(np.mean([d.mean() for d in matrices]))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(matrices), size=(n, len(matrices)))
    diffs = np.zeros((n, len(matrices)))
    for index, matrix in enumerate(matrices):
        where = picks == index
        draws = int(where.sum())
        if draws == 0:
            continue
        n_pos, n_neg = matrix.shape
        # Multinomial counts = how often each suspect is drawn; the resampled AUC difference is
        # counts_pos @ D @ counts_neg / (n_pos * n_neg).
        counts_pos, counts_neg = _resample_counts(rng, draws, n_pos), _resample_counts(rng, draws, n_neg)
        diffs[where] = ((counts_pos @ matrix) * counts_neg).sum(axis=1) / (n_pos * n_neg)
    boot = diffs.mean(axis=1)
    alpha = 1 - confidence
    low, high = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    p_value = min(1.0, 2 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    return Comparison(len(matrices), delta, low, high, p_value, n)


def leader_better(leader: str, other: str, comparisons: Mapping[tuple[str, str], Comparison]) -> bool:
    """Whether the comparison of ``leader`` with ``other`` (either direction) shows the leader better."""
    if (forward := comparisons.get((leader, other))) is not None:
        return forward.compared and forward.low > 0
    if (backward := comparisons.get((other, leader))) is not None:
        return backward.compared and backward.high < 0
    return False


def rank_groups(means: Mapping[str, float], comparisons: Mapping[tuple[str, str], Comparison]) -> dict[str, int]:
    """Rank groups of one benchmark's rows.

    Rule: order the rows by mean AUC (high first; ties by row id). The first row leads group 1;
    every other row joins it unless its comparison with the leader shows the leader significantly
    better (the interval of leader − row lies above 0); rows not compared (no shared trials) join.
    Remove the group and repeat with the rest for groups 2, 3, ...

    Args:
        means: Mean AUC per row id; rows with a NaN mean get no rank.
        comparisons: Comparisons keyed ``(row_a, row_b)``, either direction.

    Returns:
        Rank (1 = best) per ranked row id.
    """
    remaining = sorted((k for k, v in means.items() if not math.isnan(v)), key=lambda k: (-means[k], k))
    ranks: dict[str, int] = {}
    rank = 1
    while remaining:
        leader = remaining[0]
        group = [leader] + [k for k in remaining[1:] if not leader_better(leader, k, comparisons)]
        for k in group:
            ranks[k] = rank
        remaining = [k for k in remaining if k not in ranks]
        rank += 1
    return ranks


def target_misses(results: Iterable[tuple[TrialKey, Mapping[str, Any]]]) -> list[tuple[TrialKey, dict[str, Any]]]:
    """The trials whose fingerprint missed its generation target (``fingerprint.generation_target.met`` false).

    A result without ``fingerprint`` or ``target`` (or with null) has no target and never misses.
    """
    misses = []
    for key, result in results:
        fingerprint = result.get("fingerprint")
        target = fingerprint.get("generation_target") if isinstance(fingerprint, dict) else None
        if isinstance(target, dict) and target.get("met") is False:
            misses.append((key, dict(target)))
    return misses
