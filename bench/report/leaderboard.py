"""The leaderboard: one row per (zoo, method, method version, config without the trial keys, positives view).

This module builds the board and writes its files; the model (:class:`~bench.report.model.Board`)
and its columns (:mod:`bench.report.columns`) live apart: the renderers take a Board and read its
columns there. Rows, trials and benchmarks are defined in :mod:`bench.report.trials` and
``docs/leaderboard.md``. A row's trials are aggregated as mean ± sample sd (ddof=1) with a Student-t
CI over trials; a single-trial row shows that result's bootstrap CI over suspects instead. The TPR
figures follow what the negatives certify and the tie figures come from ``per_model``
(:mod:`bench.report.row_figures`).
Rows of one benchmark with at least 3 trials are compared pairwise (design-aware paired bootstrap,
Holm-adjusted) and ranked: rank = 1 + the rows significantly better (:mod:`bench.report.comparisons`).
A row whose fingerprint missed its generation target in any trial is ranked and marked. A result
whose positives mix the ADV-TRA paper's Table 2 attack families with others also appears in the
``paper`` positives view (:mod:`bench.report.positive_sets`), compared and ranked among the ``paper``
rows. Output is byte-identical for the same files: fixed orders and float formats, seeded bootstraps,
no timestamps.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.budgets import DEFAULT_BUDGET
from bench.io import atomic_write_text
from bench.metrics import aruc, auc, result_fpr_targets
from bench.report import positive_sets as ps
from bench.report import row_figures as rf
from bench.report import trials as tr
from bench.report.check import ZooChecker, check_integrity
from bench.report.comparisons import distinguishable, rank_benchmark
from bench.report.frontier import FRONTIER_FPR, cost_text, method_frontier, write_frontier
from bench.report.groups import write_group_tables
from bench.report.leaderboard_text import comparisons_csv, leaderboard_csv, leaderboard_markdown
from bench.report.model import COMPARISON_COLUMNS, Board, columns
from bench.report.variants import is_default, method_config, paper_value, variant_label
from bench.results import check_result, iter_results, list_result_files, try_read_result
from bench.submitted import SubmissionsFileError, read_submissions, submission_problems, submitted_by
from bench.zoo.store import ZooError

log = logging.getLogger(__name__)


@dataclass
class _Row:
    key: tuple[str, str, str, str, str]  # tr.row_key: (zoo, method, version, config hash, positives view)
    benchmark: str
    trials: dict[tr.TrialKey, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def results(self) -> dict[tr.TrialKey, dict[str, Any]]:
        return {k: r for k, (_, r) in sorted(self.trials.items(), key=lambda kv: tr.trial_sort_key(kv[0]))}


def _aruc(result: dict[str, Any]) -> float:
    """The stored ARUC, or (results written before it existed) ARUC recomputed from per_model."""
    stored = result["metrics"].get("aruc")
    if stored is not None:
        return float(stored)
    records = result["per_model"]
    return aruc([r["score"] for r in records], [int(r["role"] == "positive") for r in records])


def auc_at_budget(result: dict[str, Any], budget: int) -> float:
    """AUC at `budget` queries per suspect: the full AUC when the whole fingerprint fits, else the AUC of the
    suspects' `budget_scores` at that budget (recomputed, so a derived positives view is right too); NaN
    when it was not measured or the method could not be subsampled to it."""
    if float(result["queries_per_suspect"]) <= budget:
        return float(result["metrics"]["auc"])
    records = result["per_model"]
    key = str(budget)
    if not records or not all(key in (r.get("budget_scores") or {}) for r in records):
        return math.nan
    return auc([r["budget_scores"][key] for r in records], [int(r["role"] == "positive") for r in records])


def _target_note(misses: list[tuple[tr.TrialKey, dict[str, Any]]], trials: int) -> str:
    if not misses:
        return ""
    parts = [f"{t.get('name', 'target')} {float(t.get('achieved', math.nan)):.3f} < floor "
             f"{float(t.get('floor', math.nan)):.3f} ({tr.format_trial(k)})" for k, t in misses]  # fmt: skip
    return f"generation missed its target in {len(misses)} of {trials} trial(s): " + "; ".join(parts)


def _record(row: _Row, label: str, fpr_targets: Sequence[float], budget: int) -> dict[str, Any]:
    results = row.results()
    first = next(iter(results.values()))
    _, confidence, _ = tr.bootstrap_settings(first)
    zoo, method, version, config, view = row.key
    record: dict[str, Any] = {
        "zoo": zoo, "dataset": first["zoo"]["dataset"], "benchmark": row.benchmark[:8], "positives": view, "rank": None,
        "method": method, "variant": label, "config": config[:8], "version": version, "trials": len(results),
    }  # fmt: skip
    record.update(rf.aggregate(results.values(), fpr_targets, confidence))
    record["ci_over"] = "" if math.isnan(record["auc_ci_low"]) else ("trials" if len(results) > 1 else "suspects")
    record["aruc"] = _mean([_aruc(r) for r in results.values()])
    record.update(_evasion(list(results.values()), budget))
    at_budget = [auc_at_budget(r, budget) for r in results.values()]  # every trial or "—"
    record["auc_at_budget"] = math.nan if any(math.isnan(v) for v in at_budget) else _mean(at_budget)
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


def _evasion(results: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """The row's overall evasion cost (`bench.report.frontier`), with the whole fingerprint and at ``budget``
    queries per suspect: NaN and no text when no result records accuracies or scores at that budget."""
    out: dict[str, Any] = {}
    for suffix, at in (("", None), ("_at_budget", budget)):
        overall = method_frontier(results, FRONTIER_FPR, at)["overall"]
        cost = overall["evasion_cost"]
        known = overall.get("measured") is not False and not (cost is None and overall["max_drop_reached"] is None)
        out[f"evasion_cost{suffix}"] = math.nan if cost is None or not known else float(cost)
        out[f"evasion{suffix}"] = cost_text(overall) if known else ""
    return out


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _group(files: list[tuple[str, str, dict[str, Any]]]) -> list[_Row]:
    """Rows of ``(relative path, positives view, result)`` triples; trials already unique (tr.unique_trials)."""
    rows: dict[tuple[str, str, str, str, str], _Row] = {}
    for rel, view, result in files:
        key = tr.row_key(result, view)
        rows.setdefault(key, _Row(key, tr.benchmark_key(result))).trials[tr.trial_key(result)] = (rel, result)
    return [rows[k] for k in sorted(rows)]


def _labels(rows: list[_Row]) -> dict[tuple[str, str, str, str, str], str]:
    """Variant label per row; two versions of one method config in one benchmark get ``v<version>``."""
    labels = {row.key: variant_label(row.key[1], method_config(next(iter(row.results().values()))), row.key[3][:8])
              for row in rows}  # fmt: skip
    count: dict[tuple[str, str, str], int] = {}
    for row in rows:
        where = (row.benchmark, row.key[4], labels[row.key])
        count[where] = count.get(where, 0) + 1
    return {row.key: labels[row.key] + (f" v{row.key[2]}" if count[(row.benchmark, row.key[4], labels[row.key])] > 1 else "")
            for row in rows}  # fmt: skip


def _sort_key(record: dict[str, Any]) -> tuple[Any, ...]:
    rank = record["rank"] if record["rank"] is not None else 10**9
    auc = -record["auc"] if not math.isnan(record["auc"]) else math.inf
    return (record["zoo"], record["benchmark"], ps.view_order(record["positives"]), rank, auc, record["variant"],
            record["config"], record["version"])  # fmt: skip


def _benchmark(rows: list[_Row], records: dict[tuple, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rank one benchmark's rows of one positives view (in place); return their comparisons, pairs in row order."""
    ids = {row.key: "|".join((records[row.key]["variant"], row.key[3], row.key[2])) for row in rows}
    by_id = {ids[row.key]: records[row.key] for row in rows}
    n_boot, confidence, seed = tr.bootstrap_settings(next(iter(rows[0].results().values())))
    ordered = sorted(rows, key=lambda r: _sort_key(records[r.key]))
    ranked = rank_benchmark([(ids[r.key], r.results()) for r in ordered], n_boot, confidence, seed)
    out = []
    for a, b, comparison in ranked.comparisons:
        ra, rb = by_id[a], by_id[b]
        out.append({
            "zoo": ra["zoo"], "dataset": ra["dataset"], "benchmark": ra["benchmark"], "positives": ra["positives"],
            "a": ra["variant"], "b": rb["variant"], "a_config": ra["config"], "b_config": rb["config"],
            "shared_trials": comparison.shared_trials, "delta_auc": comparison.delta, "ci_low": comparison.low,
            "ci_high": comparison.high, "confidence": confidence, "p_value": comparison.p_value,
            "p_holm": comparison.p_holm, "n_boot": comparison.n_boot,
            "distinguishable": (("yes" if distinguishable(comparison, 1 - confidence) else "no")
                                if comparison.compared else "not compared"),
            "note": comparison.note,
        })  # fmt: skip
    for row in rows:
        records[row.key]["rank"] = ranked.ranks[ids[row.key]]
    return out


def _submissions(root: Path) -> dict[str, dict[str, Any]]:
    """The folder's record of submitted result files; an unreadable one marks nothing (``--check`` reports it)."""
    try:
        return read_submissions(root)
    except SubmissionsFileError as err:
        log.warning("%s Rows are shown without submission marks.", err)
        return {}


def build_board(results_dir: str | Path, budget: int = DEFAULT_BUDGET) -> Board:
    """Aggregate every result file under ``results_dir/runs`` into rows and paired comparisons.

    Args:
        results_dir: Root of the results tree.
        budget: queries per suspect of the matched-budget column ``auc_at_budget`` (:func:`auc_at_budget`).

    Returns:
        The :class:`Board`; its TPR columns follow the FPR targets the results carry (their union,
        ascending; :func:`columns`). Rows are sorted by zoo, benchmark, positives view (``all``
        first), rank (unranked last), AUC descending, variant; ``result_files`` holds POSIX paths
        relative to ``results_dir``, ordered by trial; ``rank`` is missing (pandas NA) for a row
        that is not ranked. A file that cannot be read or validated is skipped with a warning
        (:func:`bench.results.iter_results`); a copy of a trial counts once (:func:`tr.unique_trials`).
    """
    root = Path(results_dir)
    files = tr.unique_trials([(path.relative_to(root).as_posix(), result) for path, result in iter_results(root)])
    trials_per_row = Counter(tr.row_key(result) for _, result in files)
    # A derived view's CI over suspects is shown only for a single-trial row; the bootstrap is skipped otherwise.
    viewed = [(rel, view, result) for rel, original in files
              for view, result in ps.views(original, ci=trials_per_row[tr.row_key(original)] == 1)]  # fmt: skip
    targets = result_fpr_targets(result for _, _, result in viewed)
    rows = _group(viewed)
    labels = _labels(rows)
    records = {row.key: _record(row, labels[row.key], targets, budget) for row in rows}
    comparisons: list[dict[str, Any]] = []
    for benchmark, view in sorted({(row.benchmark, row.key[4]) for row in rows}, key=lambda b: (b[0], ps.view_order(b[1]))):
        comparisons += _benchmark([r for r in rows if (r.benchmark, r.key[4]) == (benchmark, view)], records)
    frame = pd.DataFrame(sorted(records.values(), key=_sort_key), columns=columns(targets))
    frame["rank"] = frame["rank"].astype("Int64")
    submissions = _submissions(root)
    frame["submitted_by"] = [submitted_by(files, submissions) for files in frame["result_files"]]
    results = {(view, rel): result for rel, view, result in viewed}
    return Board(frame, pd.DataFrame(comparisons, columns=COMPARISON_COLUMNS), targets, results, budget)


def check_results(results_dir: str | Path, zoo_dir: str | Path | None = None) -> list[str]:
    """Validate every result file and re-check its metrics, config hash, place and CI (:mod:`bench.report.check`).

    Args:
        results_dir: Root of the results tree.
        zoo_dir: Folder holding zoos (``paths.zoo_dir``); when given, each result is also checked
            against the zoo whose manifest has its ``zoo.manifest_sha256`` (which must be the zoo
            ``zoo.name`` names; none found is a problem): manifest, checkpoints, roles, accuracies.

    Returns:
        ``"path: message"`` lines, one per problem; empty when every file is sound.
    """
    zoos = ZooChecker(zoo_dir) if zoo_dir is not None else None
    problems: list[str] = []
    for path in list_result_files(results_dir):
        result, problem = try_read_result(path)  # a folder, binary, too deep, not JSON, off-schema
        if result is None:
            problems.append(problem)  # the message already starts with the path
            continue
        messages = check_result(result) + check_integrity(path, result, results_dir)
        try:
            messages += zoos.check(result) if zoos is not None else []
        except ZooError as err:  # a damaged manifest: the message names its file, line and fix
            messages.append(str(err))
        problems.extend(f"{path}: {message}" for message in messages)
    return problems + submission_problems(results_dir)


def write_leaderboard(results_dir: str | Path, board: Board | None = None) -> tuple[Path, Path]:
    """Write ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard_comparisons.csv``, the per-attack
    tables ``groups.md`` / ``groups.csv`` (:mod:`bench.report.groups`) and the evasion frontier
    ``frontier.md`` (:mod:`bench.report.frontier`), each atomically.

    Args:
        results_dir: Root of the results tree.
        board: :func:`build_board` of ``results_dir`` when the caller has built it (None: build it).

    Returns:
        ``(markdown_path, csv_path)``; the comparisons CSV lies beside them.
    """
    root = Path(results_dir)
    board = build_board(root) if board is None else board
    md_path, csv_path = root / "leaderboard.md", root / "leaderboard.csv"
    atomic_write_text(md_path, leaderboard_markdown(board))
    atomic_write_text(csv_path, leaderboard_csv(board.rows))
    atomic_write_text(root / "leaderboard_comparisons.csv", comparisons_csv(board.comparisons))
    write_group_tables(root, board)
    write_frontier(root, files=[(rel, result) for (view, rel), result in board.results.items() if view == ps.ALL])
    return md_path, csv_path
