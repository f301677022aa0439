"""What the leaderboard page's sections show (:mod:`bench.report.site`), as plain data for its Jinja2
templates (``bench/report/templates/``): the notes under the table, the legend, the paired comparisons,
the plots and the sweeps. The templates escape every value; what is already markup (a cell written by
the column spec, a label with ``<wbr>`` breaks) is wrapped in :class:`markupsafe.Markup` here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bench.io import inside
from bench.report import leaderboard_text as lbtext
from bench.report import row_figures as rf
from bench.report.cells import WARNING, breakable, href
from bench.report.comparisons import FEW_TRIALS_NOTE, MIN_TRIALS
from bench.report.model import Board
from bench.report.positive_sets import ALL, PAPER, VIEW_NOTES
from bench.stats import RANK_LEGEND

PLOTS = (("roc.png", "ROC curves"), ("scores_box.png", "positive vs negative scores"),
         ("groups_heatmap.png", "mean score per attack / negative kind"),
         ("score_vs_accuracy_drop.png", "score against the suspect's accuracy drop"))  # fmt: skip


@cache
def environment() -> jinja2.Environment:
    """The page's template environment: templates read from the installed package, every value escaped,
    an undefined name an error (a template and its data cannot drift apart silently)."""
    return jinja2.Environment(loader=jinja2.PackageLoader("bench.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined)  # fmt: skip


def figure(rel: str, caption: str) -> dict[str, str]:
    """A linked image (a path relative to the results dir) with its caption."""
    return {"href": href(rel), "caption": caption}


def footnotes(board: Board, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The few-trials note and the notes of rows below their generation target, under the table."""
    return {"few_trials": lbtext.few_trials_note(board.rows) if rows else "",
            "targets": [{"number": row["footnote"], "mark": WARNING, "text": lbtext.target_footnote(row)}
                        for row in rows if row["below_target"]]}  # fmt: skip


def comparisons(board: Board) -> dict[str, Any]:
    """The paired comparisons, one table per benchmark and positives view."""
    sections = [{"zoo": zoo, "dataset": dataset, "benchmark": benchmark, "positives": positives,
                 "head": lbtext.comparison_head(records[0]["confidence"]),
                 "rows": [{"distinguishable": r["distinguishable"],
                           "cells": [Markup(breakable(cell)) for cell in lbtext.comparison_cells(r)]} for r in records]}
                for zoo, dataset, benchmark, positives, records in lbtext.comparison_sections(board.comparisons)]  # fmt: skip
    return {"intro": lbtext.COMPARISONS_INTRO.replace("**", ""), "sections": sections, "min_trials": MIN_TRIALS}


def _plot_exists(results_dir: Path, zoo: str, name: str) -> bool:
    """Whether ``plots/<zoo>/<name>`` is a file; a zoo name (from a result file) that leads out of
    ``plots/`` has no plot."""
    try:
        return inside(results_dir / "plots", zoo, name).is_file()
    except ValueError:
        return False


def plots(results_dir: Path, zoos: list[str]) -> list[dict[str, Any]]:
    """Per zoo with at least one plot written: its figures."""
    out = []
    for zoo in zoos:
        figures = [figure(f"plots/{zoo}/{name}", f"{zoo}: {caption}")
                   for name, caption in PLOTS if _plot_exists(results_dir, zoo, name)]  # fmt: skip
        if figures:
            out.append({"zoo": zoo, "figures": figures})
    return out


def sweeps(results_dir: Path) -> list[dict[str, Any]]:
    """One entry per sweep folder (``fpbench sweep`` writes ``sweeps/<name>/``): its CSVs and PNGs."""
    folder = results_dir / "sweeps"
    found = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".csv")) if folder.is_dir() else []
    by_sweep: dict[str, list[str]] = {}
    for path in found:
        rel = path.relative_to(results_dir).as_posix()
        parts = rel.split("/")
        if len(parts) > 2 and not any(part.startswith(".") for part in parts):
            by_sweep.setdefault(parts[1], []).append(rel)
    return [{"name": name,
             "tables": [{"href": href(r), "name": r.split("/", 2)[2]} for r in rels if r.endswith(".csv")],
             "figures": [figure(r, r.split("/", 2)[2]) for r in rels if r.endswith(".png")]}
            for name, rels in sorted(by_sweep.items())]  # fmt: skip


def legend(board: Board) -> Markup:
    """The legend: the TPR columns of these rows (with the FPR bounds of their n−), the rank rule, the views."""
    return Markup(environment().get_template("legend.html").render(
        tpr_items=rf.tpr_legend(board.rows, board.fpr_targets), rank_legend=RANK_LEGEND,
        few_trials=FEW_TRIALS_NOTE.capitalize(), all=ALL, paper=PAPER, all_note=VIEW_NOTES[ALL],
        paper_note=VIEW_NOTES[PAPER]))  # fmt: skip
