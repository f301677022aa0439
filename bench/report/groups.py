"""Per-attack scores over trials (the paper's Table 1 shape) and whether positives and negatives separate.

For every leaderboard row (one method config on one benchmark, its trials) and every suspect group
(a positive's attack, a negative's kind), the group's mean score in each trial, then the mean and
sample standard deviation of those per-trial means. Per row, two separation checks:

- **trials separated**: in how many trials every positive scores above every negative (AUC = 1);
- **groups separated**: whether the lowest positive group mean (over trials) lies above the highest
  negative group mean, the form of the ADV-TRA paper's Table 1 claim (its lowest positive detection
  rate, P-80% 0.68, above its highest negative, SAST 0.14).

Written by `fpbench leaderboard` as ``groups.md`` and ``groups.csv`` next to the leaderboard;
deterministic (fixed orders and formats). Rows of a positive-set view other than ``all`` are left
out here: a group's scores do not depend on which other positives a view keeps.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from bench.io import atomic_write_text
from bench.report.cells import fmt, md_code, md_text, with_spread
from bench.report.model import Board
from bench.report.positive_sets import ALL

GROUP_COLUMNS = ["zoo", "benchmark", "method", "variant", "config", "version", "group", "role", "trials", "n",
                 "mean", "std"]  # fmt: skip
SEPARATION_COLUMNS = ["zoo", "benchmark", "method", "variant", "config", "version", "trials", "trials_separated",
                      "lowest_positive_group", "lowest_positive_mean", "highest_negative_group",
                      "highest_negative_mean", "groups_separated"]  # fmt: skip


def _all_view_rows(board: Board) -> list[dict[str, Any]]:
    rows = board.rows.to_dict("records")
    return [r for r in rows if r["positives"] == ALL]


def _stats(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else math.nan


def _row_tables(row: dict[str, Any], results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ident = {k: row[k] for k in ("zoo", "benchmark", "method", "variant", "config", "version")}
    per_group: dict[str, dict[str, Any]] = {}
    separated = 0
    for result in results:
        models = result["per_model"]
        positives = [m["score"] for m in models if m["role"] == "positive"]
        negatives = [m["score"] for m in models if m["role"] == "negative"]
        separated += int(bool(positives and negatives) and min(positives) > max(negatives))
        for group in sorted({m["group"] for m in models}):
            scores = [float(m["score"]) for m in models if m["group"] == group]
            entry = per_group.setdefault(group, {"role": next(m["role"] for m in models if m["group"] == group),
                                                 "means": [], "n": []})  # fmt: skip
            entry["means"].append(statistics.fmean(scores))
            entry["n"].append(len(scores))
    groups = []
    for group, entry in sorted(per_group.items(), key=lambda kv: (kv[1]["role"] != "positive", kv[0])):
        mean, std = _stats(entry["means"])
        groups.append({**ident, "group": group, "role": entry["role"], "trials": len(entry["means"]),
                       "n": min(entry["n"]), "mean": mean, "std": std})  # fmt: skip
    pos = [g for g in groups if g["role"] == "positive"]
    neg = [g for g in groups if g["role"] == "negative"]
    low = min(pos, key=lambda g: (g["mean"], g["group"])) if pos else None
    high = max(neg, key=lambda g: (g["mean"], g["group"])) if neg else None
    separation = {**ident, "trials": len(results), "trials_separated": separated,
                  "lowest_positive_group": low["group"] if low else "", "lowest_positive_mean": low["mean"] if low else math.nan,
                  "highest_negative_group": high["group"] if high else "",
                  "highest_negative_mean": high["mean"] if high else math.nan,
                  "groups_separated": bool(low and high and low["mean"] > high["mean"])}  # fmt: skip
    return groups, separation


def group_tables(board: Board) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-group table :data:`GROUP_COLUMNS`, per-row separation table :data:`SEPARATION_COLUMNS`)
    from the results the board aggregates (its `all` view)."""
    groups: list[dict[str, Any]] = []
    separations: list[dict[str, Any]] = []
    for row in _all_view_rows(board):
        results = [board.results[(ALL, rel)] for rel in row["result_files"]]
        row_groups, separation = _row_tables(row, results)
        groups += row_groups
        separations.append(separation)
    return pd.DataFrame(groups, columns=GROUP_COLUMNS), pd.DataFrame(separations, columns=SEPARATION_COLUMNS)


def groups_markdown(groups: pd.DataFrame, separations: pd.DataFrame) -> str:
    """One table per benchmark: a row per method config, a column per group (mean ± sd over trials)."""
    lines = ["# Scores per attack and negative kind", "",
             "Generated by `fpbench leaderboard` from the result files under `runs/`; do not edit by hand.",
             "Each cell: the group's mean score in each trial, then mean ± sd over the trials (n = suspects",
             "per trial). **sep. trials**: trials in which every positive outscored every negative (AUC = 1).",
             "**groups sep.**: the lowest positive group mean is above the highest negative group mean (the",
             "form of the ADV-TRA paper's Table 1 claim).", ""]  # fmt: skip
    for (zoo, bench), frame in groups.groupby(["zoo", "benchmark"], sort=True):
        lines += [f"## {md_text(zoo)} · bench {md_code(bench)}", "", *bench_table(frame, separations), ""]
    return "\n".join(lines)


def bench_table(frame: pd.DataFrame, separations: pd.DataFrame) -> list[str]:
    """The lines of one benchmark's table: ``frame`` holds its :data:`GROUP_COLUMNS` rows (one zoo and
    bench), a Markdown row per method config and a column per group present in ``frame``."""
    names = list(dict.fromkeys(frame.sort_values(["role", "group"], ascending=[False, True])["group"]))
    counts = {g: int(frame[frame["group"] == g]["n"].min()) for g in names}
    head = ["method", "trials", *(f"{md_text(g)} (n={counts[g]})" for g in names), "sep. trials", "groups sep."]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for (zoo, bench, variant, config, version), cells in frame.groupby(["zoo", "benchmark", "variant", "config",
                                                                        "version"], sort=False):
        by_group = {r["group"]: r for r in cells.to_dict("records")}
        sep = separations[(separations["zoo"] == zoo) & (separations["benchmark"] == bench)
                          & (separations["config"] == config) & (separations["version"] == version)]  # fmt: skip
        s = sep.iloc[0] if len(sep) else None
        row = [md_text(variant), str(int(cells["trials"].max())),
               *(with_spread(by_group[g]["mean"], by_group[g]["std"]) if g in by_group else "" for g in names),
               f"{int(s['trials_separated'])}/{int(s['trials'])}" if s is not None else "",
               ("yes" if s["groups_separated"] else "no") if s is not None else ""]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return lines


def groups_block(board: Board, zoo: str, variant: str = "") -> str:
    """The body of a ``table=groups`` block (:mod:`bench.report.blocks`): per benchmark of ``zoo``, its
    per-group table as in ``groups.md``, restricted to the rows labelled ``variant`` when one is given."""
    groups, separations = group_tables(board)
    rows = groups[(groups["zoo"] == zoo) & ((groups["variant"] == variant) if variant else True)]
    if rows.empty:
        which = f"row {md_code(variant)}" if variant else "rows"
        return f"\nNo {which} of zoo {md_code(zoo)} in the result files.\n"
    parts = [f"Bench {md_code(bench)}: each cell the group's mean score in each trial, then mean ± sd over the "
             "trials (n = suspects per trial); **sep. trials**: trials in which every positive outscored every "
             "negative; **groups sep.**: the lowest positive group mean is above the highest negative one.\n\n"
             + "\n".join(bench_table(frame, separations))
             for bench, frame in rows.groupby("benchmark", sort=True)]  # fmt: skip
    return "\n" + "\n\n".join(parts) + "\n"


def write_group_tables(results_dir: str | Path, board: Board) -> tuple[Path, Path]:
    """Write ``groups.md`` and ``groups.csv`` (groups and separation in one file each) under ``results_dir``."""
    root = Path(results_dir)
    groups, separations = group_tables(board)
    md, csv = root / "groups.md", root / "groups.csv"
    atomic_write_text(md, groups_markdown(groups, separations))
    merged = groups.merge(separations.drop(columns=["trials"]), how="left",
                          on=["zoo", "benchmark", "method", "variant", "config", "version"])  # fmt: skip
    atomic_write_text(csv, merged.to_csv(index=False, float_format=lambda v: fmt(v, 4)))
    return md, csv
