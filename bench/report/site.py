"""The leaderboard web page: ``results/site/index.html``, one static, self-contained file.

Inline CSS and vanilla JS (kept as ``static/site.css`` and ``static/site.js`` beside this module and
copied into the page), no CDN and no fetch, so it works from ``file://`` or any static host.
Rows are rendered here (the table reads fine without JS); the JS only reorders and hides them, using
the raw numbers embedded as JSON, never the formatted "0.953 ± 0.012" text. Plots are linked by
relative path (``../plots/...``, ``../sweeps/...``) and result files as ``../runs/...``, so the
page must stay at ``<results_dir>/site/``. The view state is read from (and written to) URL query
or hash parameters — ``sort``, ``dir``, ``dataset``, ``zoo``, ``positives``, ``method``, ``q`` and ``click`` (header
keys to click, comma-separated) — through the same functions the controls use, which is how
the browser test drives it. Below the table: footnotes of rows whose fingerprint missed its generation
target, and the paired comparisons per benchmark (static tables, as in ``leaderboard.md``). Output is
byte-identical for the same files: no timestamps.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from bench.io import atomic_write_text, inside
from bench.report import columns as cols
from bench.report import row_figures as rf
from bench.report.leaderboard import build_board
from bench.report.model import Board
from bench.report.plots import write_plots
from bench.report.site_sections import comparisons, figure, footnotes, legend, sweeps
from bench.report.trials import format_trial, trial_key

PLOTS = (("roc.png", "ROC curves"), ("scores_box.png", "positive vs negative scores"),
         ("groups_heatmap.png", "mean score per attack / negative kind"),
         ("score_vs_accuracy_drop.png", "score against the suspect's accuracy drop"))  # fmt: skip
COMMAND = "fpbench leaderboard --html --results-dir RESULTS_DIR"
_FILTERS = (("dataset", "dataset"), ("zoo", "zoo"), ("positives", "positives"), ("method", "method"))


def _number(value: Any) -> Any:
    """JSON-safe value: NaN and pandas NA become null, numpy scalars Python ones."""
    if value is None or (not isinstance(value, (str, list)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _trial(result: dict[str, Any], fpr_targets: Sequence[float], tpr: Sequence[rf.TprColumn]) -> dict[str, Any]:
    """A trial's key, AUC and the TPR of each shown column (of its positives view), for the row details."""
    figures = rf.trial_figures(result, fpr_targets)
    return {"trial": format_trial(trial_key(result)), "auc": result["metrics"]["auc"],
            **{c.key: _number(figures[c.key]) for c in tpr}}  # fmt: skip


def _rows(board: Board, tpr: Sequence[rf.TprColumn]) -> list[dict[str, Any]]:
    rows = []
    for record in cols.numbered(board.rows.to_dict("records")):  # footnotes numbered as in leaderboard.md
        row = {key: _number(value) for key, value in record.items() if key != "result_files"}
        row["result_files"] = list(record["result_files"])
        row["trial_results"] = [{"file": f, **_trial(board.results[(record["positives"], f)], board.fpr_targets, tpr)}
                                for f in row["result_files"]]  # fmt: skip
        rows.append(row)
    return rows


def _table(rows: list[dict[str, Any]], ctx: cols.Context) -> str:
    columns = cols.shown(cols.HTML, ctx)
    head = "".join(
        f'<th scope="col" data-key="{col.key}" data-type="{"number" if col.numeric else "text"}" aria-sort="none" '
        f'title="{html.escape(col.tip)}"><button type="button">{html.escape(col.heading)}'
        '<span class="sort-indicator" aria-hidden="true"></span></button></th>'
        for col in columns
    )
    body = "\n".join(
        f'<tr data-index="{i}">'
        + "".join(f'<td data-key="{col.key}" class="{"number" if col.numeric else "text"}">{col.cell(row)}</td>'
                  for col in columns)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f'<table id="leaderboard">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _filters(rows: list[dict[str, Any]]) -> str:
    parts = []
    for key, label in _FILTERS:
        values = sorted({str(row[key]) for row in rows})
        options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
        parts.append(
            f'<label>{label} <select id="filter-{key}" data-key="{key}"><option value="">all</option>{options}'
            "</select></label>"
        )
    parts.append('<label>text <input id="filter-text" type="search" placeholder="any text in a row"></label>')
    shown = f"{len(rows)} of {len(rows)} rows shown"
    parts.append(f'<output id="row-count" aria-live="polite" data-shown="{len(rows)}">{shown}</output>')
    return '<div id="filters" role="search">' + "\n".join(parts) + "</div>"


def _plot_exists(results_dir: Path, zoo: str, name: str) -> bool:
    """Whether ``plots/<zoo>/<name>`` is a file; a zoo name (from a result file) that leads out of
    ``plots/`` has no plot."""
    try:
        return inside(results_dir / "plots", zoo, name).is_file()
    except ValueError:
        return False


def _plots(results_dir: Path, zoos: list[str]) -> str:
    sections = []
    for zoo in zoos:
        figures = "".join(figure(f"plots/{zoo}/{name}", f"{zoo}: {caption}")
                          for name, caption in PLOTS if _plot_exists(results_dir, zoo, name))
        if figures:
            sections.append(f'<section class="zoo-plots" data-zoo="{html.escape(zoo)}"><h3>{html.escape(zoo)}</h3>'
                            f'<div class="figures">{figures}</div></section>')  # fmt: skip
    text = "\n".join(sections) or "<p>No plots: no result files yet.</p>"
    return f'<section id="plots"><h2>Plots</h2>\n{text}\n</section>'


def _json_for_html(data: Any) -> str:
    """Deterministic JSON that cannot end its ``<script>`` block (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    """The text of ``static/<name>``, read from the installed package (works from a wheel too)."""
    return resources.files("bench.report").joinpath("static", name).read_text(encoding="utf-8")


def render_site(results_dir: str | Path, board: Board | None = None) -> str:
    """The page's HTML for the result files (and plots already written) under ``results_dir``.

    Args:
        results_dir: Root of the results tree.
        board: :func:`build_board` of ``results_dir`` when the caller has built it (None: build it).

    Returns:
        The complete ``index.html`` text.
    """
    root = Path(results_dir)
    board = build_board(root) if board is None else board
    ctx = cols.context(board.rows, board.fpr_targets, board.budget)
    rows = _rows(board, ctx.tpr)
    data = {"columns": [col.key for col in cols.shown(cols.HTML, ctx)], "rows": rows}
    n_files = len({f for row in rows for f in row["result_files"]})  # a file can feed an `all` and a `paper` row
    empty = "" if rows else "<p>No result files found. Run <code>fpbench run RECIPE</code> first.</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fpbench leaderboard</title>
<style>
{_asset("site.css")}</style>
</head>
<body>
<header><h1>fpbench leaderboard</h1>
<p>{len(rows)} row(s) from {n_files} result file(s) under <code>runs/</code>; generated from those files only,
do not edit by hand. Regenerate with <code>{COMMAND}</code> (<code>RESULTS_DIR</code> is the folder
holding <code>runs/</code>, default <code>results</code>).</p></header>
<main>
{_filters(rows)}
{empty}{_table(rows, ctx)}
<p id="no-rows" hidden>No rows match the filters.</p>
{footnotes(board, rows)}
{legend(board)}
{comparisons(board) if rows else ""}
{_plots(root, sorted({row["zoo"] for row in rows}))}
{sweeps(root)}
</main>
<footer><p>Regenerate: <code>{COMMAND}</code></p></footer>
<script type="application/json" id="leaderboard-data">{_json_for_html(data)}</script>
<script>
{_asset("site.js")}</script>
</body>
</html>
"""


def write_site(results_dir: str | Path, board: Board | None = None) -> Path:
    """Write ``results_dir/site/index.html``: the sortable, filterable leaderboard with its plots.

    Plots are (re)written first with :func:`bench.report.plots.write_plots`.

    Args:
        results_dir: Root of the results tree.
        board: :func:`build_board` of ``results_dir`` when the caller has built it (None: build it).

    Returns:
        The path of ``index.html``.
    """
    root = Path(results_dir)
    write_plots(root)
    path = root / "site" / "index.html"
    atomic_write_text(path, render_site(root, board))
    return path
