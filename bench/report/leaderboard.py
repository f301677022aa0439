"""The leaderboard: one row per (zoo, method, method version, config without the trial keys).

Rows, trials, benchmarks, paired comparisons and rank groups are defined in :mod:`bench.report.trials`
and ``docs/leaderboard.md``. A row's trials are aggregated as mean ± sample sd (ddof=1) with a
Student-t CI over trials; a single-trial row shows that result's bootstrap CI over suspects instead.
Rows of one benchmark are compared pairwise (hierarchical paired bootstrap of the AUC difference) and
grouped into ranks. A row whose fingerprint missed its generation target in any trial is marked and
not ranked. Output is byte-identical for the same files: fixed orders and float formats, seeded
bootstraps, no timestamps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from bench.io import atomic_write_text
from bench.metrics import DEFAULT_FPR_TARGETS, format_fpr, fpr_column, result_fpr_targets
from bench.report import trials as tr
from bench.report.leaderboard_text import comparisons_csv, leaderboard_csv, leaderboard_markdown
from bench.report.variants import is_default, method_config, paper_value, variant_label
from bench.results import ResultError, check_result, iter_results, list_result_files, read_result

log = logging.getLogger(__name__)

_FIGURE_SUFFIXES = ("", "_std", "_ci_low", "_ci_high")  # per figure: mean, sd over trials, CI


def columns(fpr_targets: Sequence[float] = DEFAULT_FPR_TARGETS) -> list[str]:
    """The leaderboard columns for these FPR targets (one ``t<percent>f`` block per target)."""
    return [
        "zoo", "dataset", "benchmark", "rank", "method", "variant", "config", "version", "trials",
        *(f"auc{s}" for s in _FIGURE_SUFFIXES), "ci_over",
        *(f"{fpr_column(t)}{s}" for t in fpr_targets for s in _FIGURE_SUFFIXES),
        "n_pos", "n_neg", "queries", "gen_s", "verify_s", "paper", "below_target", "target_note", "result_files",
    ]  # fmt: skip


COLUMNS = columns()  # the columns for the default eval.fpr_targets [0.01, 0.1]
COMPARISON_COLUMNS = [
    "zoo", "dataset", "benchmark", "a", "b", "a_config", "b_config", "shared_trials", "delta_auc",
    "ci_low", "ci_high", "confidence", "p_value", "n_boot", "distinguishable", "note",
]  # fmt: skip



def figures(fpr_targets: Sequence[float]) -> list[tuple[str, str | None]]:
    """``(column prefix, tpr_at_fpr key)`` per figure; the key is None for the AUC."""
    return [("auc", None), *((fpr_column(t), format_fpr(t)) for t in fpr_targets)]


@dataclass
class Board:
    """The leaderboard (:func:`columns`) and its paired comparisons (:data:`COMPARISON_COLUMNS`)."""

    rows: pd.DataFrame
    comparisons: pd.DataFrame
    # The FPR targets of the TPR columns: the union over the results, ascending (eval.fpr_targets).
    fpr_targets: list[float] = field(default_factory=lambda: list(DEFAULT_FPR_TARGETS))


@dataclass
class _Row:
    key: tuple[str, str, str, str]
    benchmark: str
    trials: dict[tr.TrialKey, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def results(self) -> dict[tr.TrialKey, dict[str, Any]]:
        return {k: r for k, (_, r) in sorted(self.trials.items(), key=lambda kv: tr.trial_sort_key(kv[0]))}


def _figure(result: dict[str, Any], tpr_key: str | None) -> float:
    value = result["metrics"]["auc"] if tpr_key is None else result["metrics"]["tpr_at_fpr"].get(tpr_key)
    return math.nan if value is None else float(value)


def _suspect_ci(result: dict[str, Any], tpr_key: str | None) -> tuple[float, float]:
    ci = result["metrics"].get("ci") or {}
    pair = ci.get("auc") if tpr_key is None else (ci.get("tpr_at_fpr") or {}).get(tpr_key)
    return (float(pair[0]), float(pair[1])) if pair else (math.nan, math.nan)


def _target_note(misses: list[tuple[tr.TrialKey, dict[str, Any]]], trials: int) -> str:
    if not misses:
        return ""
    parts = [f"{t.get('name', 'target')} {float(t.get('achieved', math.nan)):.3f} < floor "
             f"{float(t.get('floor', math.nan)):.3f} ({tr.format_trial(k)})" for k, t in misses]  # fmt: skip
    return f"generation missed its target in {len(misses)} of {trials} trial(s): " + "; ".join(parts)


def _record(row: _Row, label: str, fpr_targets: Sequence[float]) -> dict[str, Any]:
    results = row.results()
    first = next(iter(results.values()))
    _, confidence, _ = tr.bootstrap_settings(first)
    zoo, method, version, config = row.key
    record: dict[str, Any] = {
        "zoo": zoo, "dataset": first["zoo"]["dataset"], "benchmark": row.benchmark[:8], "rank": None,
        "method": method, "variant": label, "config": config[:8], "version": version, "trials": len(results),
    }  # fmt: skip
    for name, tpr_key in figures(fpr_targets):
        stats = tr.spread([_figure(r, tpr_key) for r in results.values()], confidence)
        low, high = (stats.low, stats.high) if len(results) > 1 else _suspect_ci(first, tpr_key)
        record.update({name: stats.mean, f"{name}_std": stats.std, f"{name}_ci_low": low, f"{name}_ci_high": high})
    record["ci_over"] = "" if math.isnan(record["auc_ci_low"]) else ("trials" if len(results) > 1 else "suspects")
    misses = tr.target_misses(results.items())
    record.update({
        # The smallest count over trials: the figure rests on at least this many suspects.
        "n_pos": min(int(r["metrics"]["n_positive"]) for r in results.values()),
        "n_neg": min(int(r["metrics"]["n_negative"]) for r in results.values()),
        "queries": _mean([float(r["queries_per_suspect"]) for r in results.values()]),
        "gen_s": _mean([float(r["timing_s"]["generate"]) for r in results.values()]),
        "verify_s": _mean([float(r["timing_s"]["verify"]) for r in results.values()]),
        "paper": paper_value(method, first["zoo"]["dataset"]) if is_default(method, method_config(first)) else "",
        "below_target": bool(misses), "target_note": _target_note(misses, len(results)),
        "result_files": [rel for _, (rel, _) in sorted(row.trials.items(), key=lambda kv: tr.trial_sort_key(kv[0]))],
    })  # fmt: skip
    return record


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _group(files: list[tuple[str, dict[str, Any]]]) -> list[_Row]:
    rows: dict[tuple[str, str, str, str], _Row] = {}
    for rel, result in files:
        key = tr.row_key(result)
        row = rows.setdefault(key, _Row(key, tr.benchmark_key(result)))
        trial = tr.trial_key(result)
        if trial in row.trials:  # cannot happen for files written by fpbench (same config, same path)
            log.warning("%s repeats trial %s of %s; kept %s.", rel, tr.format_trial(trial), key[1], row.trials[trial][0])
            continue
        row.trials[trial] = (rel, result)
    return [rows[k] for k in sorted(rows)]


def _labels(rows: list[_Row]) -> dict[tuple[str, str, str, str], str]:
    """Variant label per row; two versions of one method config in one benchmark get ``v<version>``."""
    labels = {row.key: variant_label(row.key[1], method_config(next(iter(row.results().values()))), row.key[3][:8])
              for row in rows}  # fmt: skip
    count: dict[tuple[str, str], int] = {}
    for row in rows:
        count[(row.benchmark, labels[row.key])] = count.get((row.benchmark, labels[row.key]), 0) + 1
    return {row.key: labels[row.key] + (f" v{row.key[2]}" if count[(row.benchmark, labels[row.key])] > 1 else "")
            for row in rows}  # fmt: skip


def _sort_key(record: dict[str, Any]) -> tuple[Any, ...]:
    rank = record["rank"] if record["rank"] is not None else 10**9
    auc = -record["auc"] if not math.isnan(record["auc"]) else math.inf
    return record["zoo"], record["benchmark"], rank, auc, record["variant"], record["config"], record["version"]


def _benchmark(rows: list[_Row], records: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rank one benchmark's rows (in place) and return its comparisons, pairs in row order."""
    ids = {row.key: "|".join((records[row.key]["variant"], row.key[3], row.key[2])) for row in rows}
    first = next(iter(rows[0].results().values()))
    n_boot, confidence, seed = tr.bootstrap_settings(first)
    ordered = sorted(rows, key=lambda r: _sort_key(records[r.key]))
    comparisons: dict[tuple[str, str], tr.Comparison] = {}
    out = []
    for a, b in combinations(ordered, 2):
        comparison = tr.paired_comparison(a.results(), b.results(), n_boot, confidence, seed)
        comparisons[(ids[a.key], ids[b.key])] = comparison
        ra, rb = records[a.key], records[b.key]
        out.append({
            "zoo": ra["zoo"], "dataset": ra["dataset"], "benchmark": ra["benchmark"], "a": ra["variant"],
            "b": rb["variant"], "a_config": ra["config"], "b_config": rb["config"],
            "shared_trials": comparison.shared_trials, "delta_auc": comparison.delta, "ci_low": comparison.low,
            "ci_high": comparison.high, "confidence": confidence, "p_value": comparison.p_value,
            "n_boot": comparison.n_boot,
            "distinguishable": ("yes" if comparison.distinguishable else "no") if comparison.compared else "not compared",
            "note": comparison.note,
        })  # fmt: skip
    means = {ids[r.key]: records[r.key]["auc"] for r in rows if not records[r.key]["below_target"]}
    ranks = tr.rank_groups(means, comparisons)
    for row in rows:
        records[row.key]["rank"] = ranks.get(ids[row.key])
    return out


def build_board(results_dir: str | Path) -> Board:
    """Aggregate every result file under ``results_dir/runs`` into rows and paired comparisons.

    Args:
        results_dir: Root of the results tree.

    Returns:
        The :class:`Board`; its TPR columns follow the FPR targets the results carry (their union,
        ascending; :func:`columns`). Rows are sorted by zoo, benchmark, rank (unranked last), AUC
        descending, variant; ``result_files`` holds POSIX paths relative to ``results_dir``,
        ordered by trial; ``rank`` is missing (pandas NA) for a row that is not ranked.

    Raises:
        ResultError: If a result file does not validate.
    """
    root = Path(results_dir)
    files = [(path.relative_to(root).as_posix(), result) for path, result in iter_results(root)]
    targets = result_fpr_targets(result for _, result in files)
    rows = _group(files)
    labels = _labels(rows)
    records = {row.key: _record(row, labels[row.key], targets) for row in rows}
    comparisons: list[dict[str, Any]] = []
    for benchmark in sorted({row.benchmark for row in rows}):
        comparisons += _benchmark([r for r in rows if r.benchmark == benchmark], records)
    frame = pd.DataFrame(sorted(records.values(), key=_sort_key), columns=columns(targets))
    frame["rank"] = frame["rank"].astype("Int64")
    return Board(frame, pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS), targets)


def build_leaderboard(results_dir: str | Path) -> pd.DataFrame:
    """The rows of :func:`build_board` (one per zoo × method × version × config without trial keys)."""
    return build_board(results_dir).rows


def check_results(results_dir: str | Path) -> list[str]:
    """Validate every result file and re-check its metrics against its per-model scores.

    Args:
        results_dir: Root of the results tree.

    Returns:
        ``"path: message"`` lines, one per problem; empty when every file is sound.
    """
    problems: list[str] = []
    for path in list_result_files(results_dir):
        try:
            result = read_result(path)
        except ResultError as err:
            # The message already starts with the path.
            problems.append(str(err))
            continue
        except OSError as err:
            problems.append(f"{path}: cannot be read ({err}).")
            continue
        problems.extend(f"{path}: {message}" for message in check_result(result))
    return problems


def write_leaderboard(results_dir: str | Path, board: Board | None = None) -> tuple[Path, Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv`` and ``leaderboard_comparisons.csv`` (atomically).

    Args:
        results_dir: Root of the results tree.
        board: :func:`build_board` of ``results_dir`` when the caller has built it (None: build it).

    Returns:
        ``(markdown_path, csv_path)``; the comparisons CSV lies beside them.

    Raises:
        ResultError: If a result file does not validate.
    """
    root = Path(results_dir)
    board = build_board(root) if board is None else board
    md_path, csv_path = root / "leaderboard.md", root / "leaderboard.csv"
    atomic_write_text(md_path, leaderboard_markdown(board))
    atomic_write_text(csv_path, leaderboard_csv(board.rows))
    atomic_write_text(root / "leaderboard_comparisons.csv", comparisons_csv(board.comparisons))
    return md_path, csv_path
