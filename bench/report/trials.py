"""Trials as the unit of evidence: rows, benchmarks, statistics over trials, generation-target misses.

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
- Paired comparisons and ranks of a benchmark's rows: :mod:`bench.report.comparisons` (on
  :mod:`bench.stats`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.io import sha256_json
from bench.trial_keys import strip_trial_keys  # re-exported: callers import it here

log = logging.getLogger(__name__)
DEFAULT_BOOTSTRAP_N = 2000  # resamples of a paired comparison when the results do not set eval.bootstrap.n
DEFAULT_CONFIDENCE = 0.95  # two-sided level when the results do not set eval.bootstrap.confidence
TrialKey = tuple[int, int | None]


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
