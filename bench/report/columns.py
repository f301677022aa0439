"""The board's one column specification: every table of the board reads its columns from :data:`SPEC`.

A :class:`Column` says, once, what the board knows about a column: its key, its heading (a string, or
a function of the board: ``AUC@<budget>``; the TPR column's heading is what the negatives resolve,
``T10%F`` or ``TPR@0FP``: :func:`bench.report.row_figures.tpr_columns`), the row fields it holds (in
the order of ``Board.rows`` and of ``leaderboard.csv``), and one cell formatter per output that shows
it. The outputs:

- :data:`MARKDOWN`: the full board in ``leaderboard.md`` (and the README's ``leaderboard:start`` block);
- :data:`COMPACT`: the headline table of the ``board:start`` blocks in README.md and docs;
- :data:`HTML`: the page's table (its tooltip and sort type come from here too);
- the CSV: every field of every column, in :data:`SPEC` order (:func:`frame_fields`).

A column without a cell for an output is not in that output; a column with no cell at all holds
fields that only the CSV shows (or that another column's cell reads, like the tie interval).
Renderers: :mod:`bench.report.leaderboard_text`, :mod:`bench.report.blocks`, :mod:`bench.report.site`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.metrics import fpr_column, fpr_percent
from bench.report import cells as c
from bench.report import row_figures as rf
from bench.report.positive_sets import ALL, PAPER, VIEW_NOTES

MARKDOWN, COMPACT, HTML = "markdown", "compact", "html"  # the outputs a column may show in
OUTPUTS = (MARKDOWN, COMPACT, HTML)
SUFFIXES = ("", "_std", "_ci_low", "_ci_high")  # per figure: mean, sd over trials, CI


@dataclass(frozen=True)
class Context:
    """What a heading or a cell may read beyond its row: the TPR columns the shown rows resolve, the
    query budget of ``AUC@<budget>`` and, for the compact block, how a result folder is linked."""

    tpr: tuple[rf.TprColumn, ...]
    budget: int
    link: Callable[[str], str] = str


Cell = Callable[[Mapping[str, Any], str, Context], str]  # (row, the shown column's key, context) -> text


@dataclass(frozen=True)
class Column:
    """One column of the board.

    Attributes:
        key: The column's name; the row field the page sorts it by; shown TPR columns take the key of
            their :class:`~bench.report.row_figures.TprColumn`.
        heading: The heading, or a function of the :class:`Context`.
        fields: The row fields it holds, or a function of the board's FPR targets giving them.
        cells: One formatter per output that shows the column.
        numeric: Right-aligned in Markdown, sorted as a number on the page.
        tip: The page's header tooltip.
        headings: A heading for one output that differs from ``heading``.
    """

    key: str
    heading: str | Callable[[Context], str]
    fields: tuple[str, ...] | Callable[[Sequence[float]], tuple[str, ...]]
    cells: Mapping[str, Cell] = field(default_factory=dict)
    numeric: bool = False
    tip: str = ""
    headings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Shown:
    """A column as one output shows it for one board: key, heading, alignment/sort, tooltip, cell."""

    key: str
    heading: str
    numeric: bool
    tip: str
    cell: Callable[[Mapping[str, Any]], str]


def _text(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return c.md_text(row[key])


def _code(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return c.md_code(row[key])


def _plain(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return str(row[key])


def _html(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return html.escape(str(row[key]))


def _html_code(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return f"<code>{html.escape(str(row[key]))}</code>"


def _places(decimals: int, empty: str = "") -> Cell:
    return lambda row, key, ctx: c.fmt(row[key], decimals) or empty


def _rank(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return c.rank_text(row["rank"])


def _flag(row: Mapping[str, Any]) -> str:
    """`` ⚠<n>``: the footnote mark of a row below its generation target (renderers number ``footnote``)."""
    return f" {c.WARNING}{row['footnote']}" if row["below_target"] else ""


def _submitted(row: Mapping[str, Any]) -> str:
    """`` (submitted: <who>)`` for a row whose results came in through a submission (`bench.submitted`)."""
    return f" (submitted: {row['submitted_by']})" if row.get("submitted_by") else ""


def _method_md(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return c.md_text(row["variant"] + _submitted(row)) + _flag(row)


def _method_html(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    flag = (f' <span class="below-target" title="{html.escape(row["target_note"])}">{c.WARNING}{row["footnote"]}</span>'
            if row["below_target"] else "")
    return c.breakable(row["variant"] + _submitted(row)) + flag


def _auc_md(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return c.auc_text(dict(row))


def _auc_compact(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    spread = f" ± {c.dash(row['auc_std'])}" if row["trials"] > 1 else ""
    return c.dash(row["auc"]) + spread + c.ties_text(dict(row))


def _auc_html(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    figures = {k: c.nan(row[k]) for k in ("auc", "auc_std")} | {k: row[k] for k in rf.TIE_FIGURES}
    return html.escape(c.auc_text(figures))


def _ci_md(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return c.ci_text(c.nan(row["auc_ci_low"]), c.nan(row["auc_ci_high"]), row["ci_over"])


def _ci_compact(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    low, high = c.fmt(row["auc_ci_low"]), c.fmt(row["auc_ci_high"])
    return f"{low}–{high}" if low and high else c.MISSING


def _tpr_md(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return c.with_spread(c.nan(row[key]), c.nan(row[f"{key}_std"]))


def _tpr_compact(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return c.dash(row[key]) + (f" ± {c.dash(row[key + '_std'])}" if row["trials"] > 1 else "")


def _tpr_html(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return html.escape(_tpr_md(row, key, ctx))


def _runs_md(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return " ".join(c.md_link(Path(p).stem, p) for p in row["result_files"])


def _runs_compact(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    files = row["result_files"]
    folder = "/".join(files[0].split("/")[:-1]) if files else ""
    return c.md_link(f"{len(files)} file(s)", ctx.link(folder))


def _runs_html(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    """The page's per-trial details; ``row["trial_results"]`` is built by :mod:`bench.report.site`."""
    items = "".join(
        f'<li><a href="{html.escape(c.href(t["file"]))}">{html.escape(Path(t["file"]).name)}</a> '
        f"{t['trial']}: AUC {c.fmt(t['auc'])}" + "".join(f", {col.label} {c.fmt(t[col.key])}" for col in ctx.tpr)
        + "</li>" for t in row["trial_results"])  # fmt: skip
    count = len(row["trial_results"])
    return f"<details><summary>{count} file{'s' if count != 1 else ''}</summary><ul>{items}</ul></details>"


def _evasion_md(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    text = row[key.replace("evasion_cost", "evasion")]  # the cell's text field: evasion, evasion_at_budget
    return c.md_text(text) if text else c.MISSING


def _evasion_html(row: Mapping[str, Any], key: str, ctx: Context) -> str:
    return html.escape(row[key.replace("evasion_cost", "evasion")] or c.MISSING)


def _tpr_fields(targets: Sequence[float]) -> tuple[str, ...]:
    per_target = [f"{fpr_column(t)}{s}" for t in targets for s in (*SUFFIXES, "_label")]
    return (*per_target, *(f"{rf.ZERO_FP}{s}" for s in SUFFIXES), f"{rf.ZERO_FP}_fpr_upper")


def _tpr_tip(column: rf.TprColumn) -> str:
    if column.zero_fp:
        return "TPR at zero false positives; mean over trials"
    return f"TPR at FPR ≤ {fpr_percent(column.targets[0])}%; mean over trials"


TPR = "tpr"  # the key of the TPR column, shown once per TprColumn the rows resolve
_EVERY = {MARKDOWN: _text, HTML: _html}  # full board and page, plain text
SPEC: tuple[Column, ...] = (
    Column("zoo", "zoo", ("zoo",), _EVERY, tip="zoo name (zoo.name of the recipe)"),
    Column("dataset", "dataset", ("dataset",), _EVERY, tip="dataset the zoo was trained on"),
    Column("benchmark", "bench", ("benchmark",), {MARKDOWN: _code, HTML: _html_code},
           tip="rows with the same bench id were evaluated on the same suspects"),
    Column("positives", "positives", ("positives",), _EVERY, tip=f"{ALL}: {VIEW_NOTES[ALL]}; {PAPER}: {VIEW_NOTES[PAPER]}"),
    Column("rank", "rank", ("rank",), {MARKDOWN: _rank, COMPACT: _rank, HTML: _rank}, numeric=True,
           tip="1 + the number of rows of the bench significantly better (Holm); — = fewer than 3 trials"),
    Column("method", "method", ("method", "variant"), {MARKDOWN: _method_md, COMPACT: _method_md, HTML: _method_html},
           tip="method and what its config changes from the method's defaults"),
    Column("config", "config", ("config",), {MARKDOWN: _code, HTML: _html_code},
           tip="first 8 hex digits of the sha256 of the config without the trial seeds"),
    Column("version", "version", ("version",)),
    Column("trials", "trials", ("trials",), {MARKDOWN: _plain, COMPACT: _plain, HTML: _html}, numeric=True,
           tip="number of result files (trials) aggregated in this row"),
    Column("auc", "AUC", ("auc", "auc_std"), {MARKDOWN: _auc_md, COMPACT: _auc_compact, HTML: _auc_html}, numeric=True,
           tip="area under the ROC curve; mean ± sd over trials; (ties a–b): ties as losses / as wins"),
    Column("auc_ci_low", "AUC CI", ("auc_ci_low", "auc_ci_high", "ci_over"),
           {MARKDOWN: _ci_md, COMPACT: _ci_compact, HTML: lambda row, key, ctx: html.escape(_ci_md(row, key, ctx))},
           numeric=True, tip="t-interval of the mean over trials († one trial: bootstrap over suspects)",
           headings={COMPACT: "AUC 95 % CI"}),
    Column(TPR, "TPR", _tpr_fields, {MARKDOWN: _tpr_md, COMPACT: _tpr_compact, HTML: _tpr_html}, numeric=True),
    Column("ties", "ties", rf.TIE_FIGURES),  # read by the AUC cell
    Column("aruc", "ARUC", ("aruc",), {MARKDOWN: _places(3, c.MISSING)}, numeric=True),
    Column("evasion_cost", "evasion cost", ("evasion_cost", "evasion"), {MARKDOWN: _evasion_md, HTML: _evasion_html},
           numeric=True, tip="the smallest accuracy drop (points) at which a family's positives evade the threshold "
           "calibrated for FPR 1% (detection < 0.5), the minimum over families; median [range] over trials; "
           "'none up to X': no configuration evaded up to the largest drop X tested (docs/frontier.md)"),
    Column("auc_at_budget", lambda ctx: f"AUC@{ctx.budget}", ("auc_at_budget",), {MARKDOWN: _places(3, c.MISSING)},
           numeric=True),
    Column("evasion_cost_at_budget", lambda ctx: f"evasion cost@{ctx.budget}",
           ("evasion_cost_at_budget", "evasion_at_budget"), {MARKDOWN: _evasion_md, HTML: _evasion_html}, numeric=True,
           tip="the evasion cost with every suspect scored as a verifier limited to the matched query budget would "
           "score it (the whole fingerprint when it fits); — = no scores at that budget (docs/frontier.md)"),
    Column("n_pos", "n+", ("n_pos",), {MARKDOWN: _plain, HTML: _html}, numeric=True,
           tip="positive suspects (smallest count over trials)"),
    Column("n_neg", "n−", ("n_neg",), {MARKDOWN: _plain, HTML: _html}, numeric=True,
           tip="negative suspects (smallest count over trials)"),
    Column("queries", "queries", ("queries",), {MARKDOWN: _places(0), COMPACT: _places(0), HTML: _places(0)},
           numeric=True, tip="queries per suspect; mean over trials"),
    Column("gen_s", "gen s", ("gen_s",), {MARKDOWN: _places(1), HTML: _places(1)}, numeric=True,
           tip="fingerprint generation time in seconds; mean over trials"),
    Column("verify_s", "verify s", ("verify_s",), {MARKDOWN: _places(1), HTML: _places(1)}, numeric=True,
           tip="verification time in seconds; mean over trials"),
    Column("paper", "paper", ("paper",), _EVERY,
           tip="AUC/T1%F/T10%F reported in the ADV-TRA paper (default config only), not measured here"),
    Column("target", "target", ("below_target", "target_note")),  # read by the method cell and the footnotes
    Column("submitted", "submitted by", ("submitted_by",)),  # read by the method cell; "" for the maintainers' own rows
    Column("result_files", "result files", ("result_files",), {MARKDOWN: _runs_md, COMPACT: _runs_compact, HTML: _runs_html},
           tip="the result JSON files this row aggregates", headings={MARKDOWN: "runs", COMPACT: "results"}),
)  # fmt: skip


def frame_fields(fpr_targets: Sequence[float]) -> list[str]:
    """The row fields of a board (``Board.rows``, ``leaderboard.csv``) for these FPR targets, in order."""
    return [name for column in SPEC for name in (column.fields(fpr_targets) if callable(column.fields) else column.fields)]


def context(rows: pd.DataFrame, fpr_targets: Sequence[float], budget: int, link: Callable[[str], str] = str) -> Context:
    """The :class:`Context` of a table of ``rows``: its TPR columns follow what their negatives resolve."""
    return Context(tuple(rf.tpr_columns(rows, fpr_targets)), budget, link)


def shown(output: str, ctx: Context) -> list[Shown]:
    """The columns ``output`` shows for a board, in order, the TPR column once per column its rows resolve."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown board output {output!r}; choose one of {', '.join(OUTPUTS)}.")
    out = []
    for column in SPEC:
        cell = column.cells.get(output)
        if cell is None:
            continue
        if column.key == TPR:
            out += [Shown(t.key, t.label, column.numeric, _tpr_tip(t), _bind(cell, t.key, ctx)) for t in ctx.tpr]
            continue
        heading = column.headings.get(output) or (column.heading(ctx) if callable(column.heading) else column.heading)
        out.append(Shown(column.key, heading, column.numeric, column.tip, _bind(cell, column.key, ctx)))
    return out


def numbered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with ``footnote`` set, which the method cells read: the number of a row below its generation
    target among the rows of its table (1, 2, ...), None for the others."""
    count = 0
    for row in rows:
        count += bool(row["below_target"])
        row["footnote"] = count if row["below_target"] else None
    return rows


def _bind(cell: Cell, key: str, ctx: Context) -> Callable[[Mapping[str, Any]], str]:
    return lambda row: cell(row, key, ctx)


def markdown_table(columns: Sequence[Shown], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The lines of a Markdown table of ``rows`` under ``columns`` (numbers right-aligned)."""
    head = "| " + " | ".join(col.heading for col in columns) + " |"
    align = "|" + "|".join("---:" if col.numeric else "---" for col in columns) + "|"
    return [head, align, *("| " + " | ".join(col.cell(row) for col in columns) + " |" for row in rows)]
