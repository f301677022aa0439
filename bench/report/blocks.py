"""Generated blocks: tables in README.md and docs/*.md written from result files, never typed.

A block sits between ``<!-- board:start ARGS -->`` and ``<!-- board:end -->``; ARGS are
``key=value`` words: ``zoo=NAME`` (required), ``results=DIR`` (the results folder, relative to the
repository root; default ``results``), ``table=board|groups|frontier|cost|throughput|reproduce`` (default ``board``)
and, per table:

- ``table=board``: ``view=all|paper`` (default: both, one table each). The compact headline (issue
  "Honest statistics", item 10; columns: :data:`bench.report.columns.COMPACT`): rank, method,
  trials, AUC with its interval, the TPR columns the negatives resolve, queries, one link to the
  row's result files; then one generated sentence on what the comparisons support. The full board
  (every column, per-trial links) is ``results/leaderboard.md``.
- ``table=groups``: ``variant=LABEL`` (a row's method label, e.g. ``adv_tra``; default: every row).
  The per-attack table of ``groups.md`` (:func:`bench.report.groups.groups_block`).
- ``table=frontier``: ``budget=N`` (queries per suspect; default: the whole fingerprint). The evasion costs
  of every row of the zoo, methods x families, median [range] over trials
  (:func:`bench.report.frontier.cost_table`; issue "Threat models, not a mixture", items 3 and 5), with a
  link to ``frontier.md``, which holds each configuration's detection.
- ``table=cost``: the wall time by phase and trial of a multi-trial run, ``<results>/perf/trials-<zoo>.json``
  (:func:`bench.report.cost_block.cost_block`).
- ``table=throughput``: the zoo-throughput benchmark, ``<results>/perf/zoo_throughput.json`` (paths, rounds,
  speedups, accuracy against seed noise; :func:`bench.report.throughput_block.throughput_block`).
- ``table=reproduce``: the ``fpbench reproduce`` reports ``<results>/reproduce/<zoo>*.json``
  (:func:`bench.report.reproduce_block.reproduce_block`).

``fpbench leaderboard --readme FILE`` rewrites the blocks of that file; ``fpbench leaderboard
--check`` fails on a block of any file :data:`DOC_FILES` names that differs from what its result
files give now, or whose arguments are wrong (:func:`stale_blocks`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from bench.budgets import DEFAULT_BUDGET
from bench.io import atomic_write_text
from bench.metrics import fpr_label
from bench.report import columns as cols
from bench.report.cells import md_text
from bench.report.cost_block import cost_block
from bench.report.frontier import cost_table, results_frontiers
from bench.report.groups import groups_block
from bench.report.model import Board
from bench.report.positive_sets import ALL, VIEW_NOTES, view_order
from bench.report.reproduce_block import reproduce_block
from bench.report.row_figures import zero_fp_bounds
from bench.report.throughput_block import throughput_block
from bench.stats import RANK_LEGEND

END = "<!-- board:end -->"
BLOCK = re.compile(r"(?P<start><!-- board:start(?P<args>(?: [a-z_]+=[^\s>]+)*) -->)(?P<body>.*?)"
                   + re.escape(END), re.S)
DOC_FILES = ("README.md", "results/README.md", "docs/*.md")  # where `--readme`/`--check` look for blocks


# table kind -> the keys it takes beside zoo, results and table
TABLES = {"board": ("view",), "groups": ("variant",), "frontier": ("budget",), "cost": (), "throughput": (),
          "reproduce": ()}


def block_args(text: str) -> dict[str, str]:
    """``{"zoo", "results", "table", "view", "variant"}`` of a start marker's ``key=value`` words.

    Raises:
        ValueError: no ``zoo``, an unknown table, or a key the table does not take, named with the fix.
    """
    args = dict(word.split("=", 1) for word in text.split())
    table = args.get("table", "board")
    if table not in TABLES:
        raise ValueError(f"board block '{text.strip()}': table={table} is not a table; give table=board (the "
                         "default), table=groups, table=frontier, table=cost, table=throughput or table=reproduce.")
    unknown = sorted(set(args) - {"zoo", "results", "table", *TABLES[table]})
    if unknown or "zoo" not in args:
        raise ValueError(f"board block '{text.strip()}': give zoo=NAME [results=DIR] and, for table={table}, "
                         f"{' '.join(f'[{k}=...]' for k in TABLES[table])}; unknown: {unknown}.")
    if table == "frontier" and not args.get("budget", "1").isdigit():
        raise ValueError(f"board block '{text.strip()}': budget={args['budget']} is not a number of queries per "
                         "suspect; give e.g. budget=100, or leave it out for the whole fingerprint.")
    return {"view": "", "variant": "", "budget": "", "results": "results", **args, "table": table}


def compact_table(rows: pd.DataFrame, comparisons: pd.DataFrame, fpr_targets: list[float], link: Callable[[str], str],
                  budget: int = DEFAULT_BUDGET) -> str:
    """One view of one benchmark as the compact headline table (columns: :data:`bench.report.columns.COMPACT`),
    its footnotes and its one-sentence reading."""
    ctx = cols.context(rows, fpr_targets, budget, link)
    records = cols.numbered(rows.to_dict("records"))
    marks = [f"⚠{row['footnote']} {md_text(row['variant'])}: {md_text(row['target_note'])}."
             for row in records if row["below_target"]]
    notes = [*marks, RANK_LEGEND]
    for column in ctx.tpr:
        if column.zero_fp:
            lost = " or ".join(fpr_label(t) for t in column.targets)
            notes.append(f"TPR@0FP: the TPR at zero false positives ({zero_fp_bounds(rows)}), shown instead of {lost}: "
                         "these negatives are too few to certify that FPR at 95 %.")
    table = "\n".join(cols.markdown_table(cols.shown(cols.COMPACT, ctx), records))
    return table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + reading(rows, comparisons) + "\n"


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


def render_block(args: dict[str, str], board: Board, link: Callable[[str], str], results_dir: Path) -> str:
    """The body of one block (without its markers)."""
    if args["table"] == "cost":
        return cost_block(results_dir, args["zoo"], link)
    if args["table"] == "throughput":
        return throughput_block(results_dir, args["zoo"], link)
    if args["table"] == "reproduce":
        return reproduce_block(results_dir, args["zoo"], link)
    if args["table"] == "groups":
        return groups_block(board, args["zoo"], args["variant"])
    if args["table"] == "frontier":
        budget = int(args["budget"]) if args["budget"] else None
        files = [(rel, result) for (view, rel), result in board.results.items() if view == ALL]  # read by the board
        frontiers = results_frontiers(results_dir, zoo=args["zoo"], files=files, budget=budget).get(args["zoo"], {})
        if not frontiers:
            return f"\nNo result files of zoo `{args['zoo']}`.\n"
        return (f"\n{cost_table(frontiers)}\nEach configuration's detection and accuracy drop: "
                f"[frontier.md]({link('frontier.md')}) (definitions: docs/frontier.md).\n")
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
                     + compact_table(view_rows, comparisons[comparisons["positives"] == view], board.fpr_targets, link,
                                   board.budget))
    return "\n" + "\n\n".join(parts).rstrip() + "\n"


def _linker(prefix: str) -> Callable[[str], str]:
    """Links from a markdown file to files of the results folder ``prefix`` (relative to that file)."""
    return lambda rel: f"{prefix}/{rel}"


def regenerate(path: Path, repo_root: Path, boards: Callable[[Path], Board]) -> str:
    """The text of ``path`` with every block rewritten from ``boards(results_dir)``."""
    text = path.read_text(encoding="utf-8")

    def replace(match: re.Match[str]) -> str:
        args = block_args(match.group("args"))
        results_dir = repo_root / args["results"]
        prefix = Path(os.path.relpath(results_dir.resolve(), path.resolve().parent)).as_posix()
        body = render_block(args, boards(results_dir), _linker(prefix), results_dir)
        return match.group("start") + body + END

    return BLOCK.sub(replace, text)


def doc_files(repo_root: Path) -> list[Path]:
    """The markdown files that may hold blocks."""
    return sorted({p for pattern in DOC_FILES for p in repo_root.glob(pattern) if p.is_file()})


def update_blocks(paths: Iterable[Path], repo_root: Path, boards: Callable[[Path], Board]) -> list[Path]:
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


def stale_blocks(repo_root: Path, results_dir: Path, boards: Callable[[Path], Board]) -> list[str]:
    """Problems: blocks (of :func:`doc_files`) drawn from ``results_dir`` that differ from what it gives now."""
    problems = []
    for path in doc_files(repo_root):
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            try:
                args = block_args(match.group("args"))
            except ValueError as err:  # a typo in a marker is a problem of that file, not a crash of --check
                problems.append(f"{path.relative_to(repo_root)}: {err}")
                continue
            if (repo_root / args["results"]).resolve() != results_dir.resolve():
                continue
            prefix = Path(os.path.relpath(results_dir.resolve(), path.resolve().parent)).as_posix()
            body = render_block(args, boards(results_dir), _linker(prefix), results_dir)
            if body != match.group("body"):
                problems.append(f"{path.relative_to(repo_root)}: the generated block '{match.group('start')}' is out of "
                                "date with its result files; run `fpbench leaderboard --readme "
                                f"{path.relative_to(repo_root)}` (from the repository root).")
    return problems
