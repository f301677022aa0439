"""Generated blocks: tables in README.md and docs/*.md written from result files, never typed.

A block sits between ``<!-- board:start ARGS -->`` and ``<!-- board:end -->``; ARGS are
``key=value`` words: ``zoo=NAME`` (required), ``view=all|paper`` (default: both, one table each),
``results=DIR`` (the results folder, relative to the repository root; default ``results``).
``fpbench leaderboard --readme FILE`` rewrites the blocks of that file; ``fpbench leaderboard
--check`` fails on a block of any file :data:`DOC_FILES` names that differs from what its result
files give now (:func:`stale_blocks`). The table is the compact headline (issue "Honest
statistics", item 10): rank, method, trials, AUC with its interval, the TPR columns the negatives
resolve, queries, one link to the row's result files; then one generated sentence on what the
comparisons support. The full board (every column, per-trial links) is ``results/leaderboard.md``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.io import atomic_write_text
from bench.metrics import fpr_label
from bench.report.leaderboard_text import md_link, md_text
from bench.report.positive_sets import VIEW_NOTES, view_order
from bench.report.row_figures import tie_interval, tpr_columns, zero_fp_bounds
from bench.stats import RANK_LEGEND

END = "<!-- board:end -->"
BLOCK = re.compile(r"(?P<start><!-- board:start(?P<args>(?: [a-z_]+=[^\s>]+)*) -->)(?P<body>.*?)"
                   + re.escape(END), re.S)
DOC_FILES = ("README.md", "results/README.md", "docs/*.md")  # where `--readme`/`--check` look for blocks


def block_args(text: str) -> dict[str, str]:
    """``{"zoo", "view", "results"}`` of a start marker's ``key=value`` words (unknown keys refused)."""
    args = dict(word.split("=", 1) for word in text.split())
    unknown = sorted(set(args) - {"zoo", "view", "results"})
    if unknown or "zoo" not in args:
        raise ValueError(f"board block '{text.strip()}': give zoo=NAME [view=all|paper] [results=DIR]; "
                         f"unknown: {unknown}.")
    return {"view": "", "results": "results", **args}


def _fmt(value: float, decimals: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{decimals}f}"


def _auc_cell(row: dict[str, Any]) -> str:
    cell = _fmt(row["auc"]) + (f" ± {_fmt(row['auc_std'])}" if row["trials"] > 1 else "")
    ties = tie_interval(row)
    return cell + (f" (ties {ties[0]:.3f}–{ties[1]:.3f})" if ties else "")


def _ci_cell(row: dict[str, Any]) -> str:
    low, high = row["auc_ci_low"], row["auc_ci_high"]
    return "—" if any(v is None or math.isnan(v) for v in (low, high)) else f"{low:.3f}–{high:.3f}"


def compact_table(rows: pd.DataFrame, comparisons: pd.DataFrame, fpr_targets: list[float], link: Callable[[str], str]) -> str:
    """One view of one benchmark as the compact headline table, its footnotes and its one-sentence reading."""
    columns = tpr_columns(rows, fpr_targets)
    head = ["rank", "method", "trials", "AUC", "AUC 95 % CI", *(c.label for c in columns), "queries", "results"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:", "---", "---:", "---:", "---:",
                                                            *["---:"] * len(columns), "---:", "---"]) + "|"]
    marks = []
    for row in rows.to_dict("records"):
        mark = ""
        if row["below_target"]:
            marks.append(f"⚠{len(marks) + 1} {md_text(row['variant'])}: {md_text(row['target_note'])}.")
            mark = f" ⚠{len(marks)}"
        rank = "—" if row["rank"] is None or pd.isna(row["rank"]) else str(int(row["rank"]))
        folder = "/".join(row["result_files"][0].split("/")[:-1]) if row["result_files"] else ""
        tprs = [_fmt(row[c.key]) + (f" ± {_fmt(row[c.key + '_std'])}" if row["trials"] > 1 else "") for c in columns]
        lines.append("| " + " | ".join([rank, md_text(row["variant"]) + mark, str(row["trials"]), _auc_cell(row),
                                         _ci_cell(row), *tprs,
                                         f"{row['queries']:.0f}", md_link(f"{len(row['result_files'])} file(s)",
                                                                          link(folder))]) + " |")
    notes = [*marks, RANK_LEGEND]
    for column in columns:
        if column.zero_fp:
            lost = " or ".join(fpr_label(t) for t in column.targets)
            notes.append(f"TPR@0FP: the TPR at zero false positives ({zero_fp_bounds(rows)}), shown instead of {lost}: "
                         "these negatives are too few to certify that FPR at 95 %.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + reading(rows, comparisons) + "\n"


def reading(rows: pd.DataFrame, comparisons: pd.DataFrame) -> str:
    """The one generated sentence on what the table supports."""
    trials = int(rows["trials"].min()) if len(rows) else 0
    if trials < 3:
        return (f"**What it supports:** nothing about order: {trials} trial(s) per row, and ranks are tested from "
                "3 trials on (docs/statistics.md); the figures are a demonstration.")
    compared = comparisons[comparisons["distinguishable"].isin(["yes", "no"])]
    apart = compared[compared["distinguishable"] == "yes"]
    pairs = "; ".join(f"{md_text(a)} > {md_text(b)} (Δ AUC {d:+.3f}, Holm p {p:.3f})" if d > 0 else
                      f"{md_text(b)} > {md_text(a)} (Δ AUC {-d:+.3f}, Holm p {p:.3f})"
                      for a, b, d, p in apart[["a", "b", "delta_auc", "p_holm"]].itertuples(index=False))
    n_neg = int(rows["n_neg"].min())
    told = f"{len(apart)} tell rows apart: {pairs}" if len(apart) else "none tells two rows apart"
    rest = "Every other difference" if len(apart) else "Every difference"
    return (f"**What it supports:** of {len(compared)} paired comparisons ({trials} trials, {n_neg} negatives shared "
            f"by every trial, Holm-adjusted at 95 %), {told}. {rest} in this table is within what these suspects "
            "can resolve (docs/statistics.md gives the power).")


def render_block(args: dict[str, str], board: Any, link: Callable[[str], str]) -> str:
    """The body of one block (without its markers)."""
    rows = board.rows[board.rows["zoo"] == args["zoo"]]
    comparisons = board.comparisons[board.comparisons["zoo"] == args["zoo"]]
    views = [args["view"]] if args["view"] else sorted(set(rows["positives"]), key=view_order)
    parts = []
    for view in views:
        view_rows = rows[rows["positives"] == view].reset_index(drop=True)
        if view_rows.empty:
            parts.append(f"No `{view}` rows of zoo `{args['zoo']}` in the result files.")
            continue
        parts.append(f"Positives `{view}`: {VIEW_NOTES.get(view, view)}.\n\n"
                     + compact_table(view_rows, comparisons[comparisons["positives"] == view], board.fpr_targets, link))
    return "\n" + "\n\n".join(parts).rstrip() + "\n"


def regenerate(path: Path, repo_root: Path, boards: Callable[[Path], Any]) -> str:
    """The text of ``path`` with every block rewritten from ``boards(results_dir)``."""
    text = path.read_text(encoding="utf-8")

    def replace(match: re.Match[str]) -> str:
        args = block_args(match.group("args"))
        results_dir = repo_root / args["results"]
        prefix = Path(os.path.relpath(results_dir.resolve(), path.resolve().parent)).as_posix()
        body = render_block(args, boards(results_dir), lambda rel: f"{prefix}/{rel}")
        return match.group("start") + body + END

    return BLOCK.sub(replace, text)


def doc_files(repo_root: Path) -> list[Path]:
    """The markdown files that may hold blocks."""
    return sorted({p for pattern in DOC_FILES for p in repo_root.glob(pattern) if p.is_file()})


def update_blocks(paths: Iterable[Path], repo_root: Path, boards: Callable[[Path], Any]) -> list[Path]:
    """Rewrite every block of ``paths``; returns the files that changed."""
    changed = []
    for path in paths:
        old = path.read_text(encoding="utf-8")
        if BLOCK.search(old) is None:
            continue
        new = regenerate(path, repo_root, boards)
        if new != old:
            atomic_write_text(path, new)
            changed.append(path)
    return changed


def stale_blocks(repo_root: Path, results_dir: Path, boards: Callable[[Path], Any]) -> list[str]:
    """Problems: blocks (of :func:`doc_files`) drawn from ``results_dir`` that differ from what it gives now."""
    problems = []
    for path in doc_files(repo_root):
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            args = block_args(match.group("args"))
            if (repo_root / args["results"]).resolve() != results_dir.resolve():
                continue
            prefix = Path(os.path.relpath(results_dir.resolve(), path.resolve().parent)).as_posix()
            body = render_block(args, boards(results_dir), lambda rel, p=prefix: f"{p}/{rel}")
            if body != match.group("body"):
                problems.append(f"{path.relative_to(repo_root)}: the generated block '{match.group('start')}' is out of "
                                "date with its result files; run `fpbench leaderboard --readme "
                                f"{path.relative_to(repo_root)}` (from the repository root).")
    return problems
