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
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from bench.io import atomic_write_text, inside
from bench.metrics import DEFAULT_FPR_TARGETS, fpr_percent
from bench.report import leaderboard_text as lbtext
from bench.report import row_figures as rf
from bench.report.leaderboard import Board, build_board
from bench.report.plots import write_plots
from bench.report.positive_sets import ALL, PAPER, VIEW_NOTES
from bench.report.site_sections import breakable, comparisons, figure, footnotes, href, legend, sweeps
from bench.report.trials import format_trial, trial_key

# (key in the data, header label, sort type, header tooltip); the TPR columns come from table_columns
_COLUMNS: list[tuple[str, str, str, str]] = [
    ("zoo", "zoo", "text", "zoo name (zoo.name of the recipe)"),
    ("dataset", "dataset", "text", "dataset the zoo was trained on"),
    ("benchmark", "bench", "text", "rows with the same bench id were evaluated on the same suspects"),
    ("positives", "positives", "text", f"{ALL}: {VIEW_NOTES[ALL]}; {PAPER}: {VIEW_NOTES[PAPER]}"),
    ("rank", "rank", "number", "1 + the number of rows of the bench significantly better (Holm); — = fewer than 3 trials"),
    ("method", "method", "text", "method and what its config changes from the method's defaults"),
    ("config", "config", "text", "first 8 hex digits of the sha256 of the config without the trial seeds"),
    ("trials", "trials", "number", "number of result files (trials) aggregated in this row"),
    ("auc", "AUC", "number", "area under the ROC curve; mean ± sd over trials; (ties a–b): ties as losses / as wins"),
    ("auc_ci_low", "AUC CI", "number", "t-interval of the mean over trials († one trial: bootstrap over suspects)"),
    ("n_pos", "n+", "number", "positive suspects (smallest count over trials)"),
    ("n_neg", "n−", "number", "negative suspects (smallest count over trials)"),
    ("queries", "queries", "number", "queries per suspect; mean over trials"),
    ("gen_s", "gen s", "number", "fingerprint generation time in seconds; mean over trials"),
    ("verify_s", "verify s", "number", "verification time in seconds; mean over trials"),
    ("paper", "paper", "text", "AUC/T1%F/T10%F reported in the ADV-TRA paper (default config only), not measured here"),
    ("result_files", "result files", "text", "the result JSON files this row aggregates"),
]
_TPR_AFTER = "auc_ci_low"  # the TPR columns follow the AUC CI


def table_columns(tpr: Sequence[rf.TprColumn]) -> list[tuple[str, str, str, str]]:
    """The page's columns, with the TPR columns a table of these rows shows (:func:`rf.tpr_columns`)."""
    at = [key for key, *_ in _COLUMNS].index(_TPR_AFTER) + 1
    cells = [(c.key, c.label, "number", "TPR at zero false positives; mean over trials" if c.zero_fp else
              f"TPR at FPR ≤ {fpr_percent(c.targets[0])}%; mean over trials") for c in tpr]  # fmt: skip
    return [*_COLUMNS[:at], *cells, *_COLUMNS[at:]]


TABLE_COLUMNS = table_columns(rf.tpr_columns(pd.DataFrame({"n_neg": []}), DEFAULT_FPR_TARGETS))  # no rows yet
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


def _fmt(value: float | None, decimals: int = 3) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def _spread(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return _fmt(mean) if std is None else f"{_fmt(mean)} ± {_fmt(std)}"


def _trial(result: dict[str, Any], fpr_targets: Sequence[float], tpr: Sequence[rf.TprColumn]) -> dict[str, Any]:
    """A trial's key, AUC and the TPR of each shown column (of its positives view), for the row details."""
    figures = rf.trial_figures(result, fpr_targets)
    return {"trial": format_trial(trial_key(result)), "auc": result["metrics"]["auc"],
            **{c.key: _number(figures[c.key]) for c in tpr}}  # fmt: skip


def _rows(board: Board, tpr: Sequence[rf.TprColumn]) -> list[dict[str, Any]]:
    rows, notes = [], 0
    for record in board.rows.to_dict("records"):
        row = {key: _number(value) for key, value in record.items() if key != "result_files"}
        row["result_files"] = list(record["result_files"])
        row["trial_results"] = [{"file": f, **_trial(board.results[(record["positives"], f)], board.fpr_targets, tpr)}
                                for f in row["result_files"]]  # fmt: skip
        notes += bool(row["below_target"])
        row["footnote"] = notes if row["below_target"] else None  # numbered as in leaderboard.md
        rows.append(row)
    return rows


def _cell(key: str, row: dict[str, Any], tpr: Sequence[rf.TprColumn]) -> str:
    if key == "auc":
        return html.escape(lbtext.auc_text({k: math.nan if row[k] is None else row[k] for k in ("auc", "auc_std")}
                                           | {k: row[k] for k in rf.TIE_FIGURES}))
    if key == "auc_ci_low":
        nan = math.nan
        low, high = row["auc_ci_low"], row["auc_ci_high"]
        return html.escape(lbtext.ci_text(nan if low is None else low, nan if high is None else high, row["ci_over"]))
    if key == "rank":
        return lbtext.MISSING if row["rank"] is None else str(row["rank"])
    if key == "method":
        flag = ""
        if row["below_target"]:
            flag = (f' <span class="below-target" title="{html.escape(row["target_note"])}">'
                    f'{lbtext.WARNING}{row["footnote"]}</span>')  # fmt: skip
        return breakable(row["variant"]) + flag
    if key in [c.key for c in tpr]:
        return html.escape(_spread(row[key], row[f"{key}_std"]))
    if key == "queries":
        return _fmt(row[key], 0)
    if key in ("gen_s", "verify_s"):
        return _fmt(row[key], 1)
    if key == "result_files":
        items = "".join(
            f'<li><a href="{html.escape(href(t["file"]))}">{html.escape(Path(t["file"]).name)}</a> '
            f"{t['trial']}: AUC {_fmt(t['auc'])}"
            + "".join(f", {c.label} {_fmt(t[c.key])}" for c in tpr) + "</li>"
            for t in row["trial_results"]
        )
        count = len(row["trial_results"])
        return (
            f"<details><summary>{count} file{'s' if count != 1 else ''}</summary><ul>{items}</ul></details>"
        )
    if key in ("config", "benchmark"):
        return f"<code>{html.escape(str(row[key]))}</code>"
    return html.escape(str(row[key]))


def _table(rows: list[dict[str, Any]], tpr: Sequence[rf.TprColumn]) -> str:
    columns = table_columns(tpr)
    head = "".join(
        f'<th scope="col" data-key="{key}" data-type="{kind}" aria-sort="none" title="{html.escape(tip)}">'
        f'<button type="button">{html.escape(label)}<span class="sort-indicator" aria-hidden="true"></span>'
        "</button></th>"
        for key, label, kind, tip in columns
    )
    body = "\n".join(
        f'<tr data-index="{i}">'
        + "".join(
            f'<td data-key="{key}" class="{kind}">{_cell(key, row, tpr)}</td>' for key, _, kind, _ in columns
        )
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
    tpr = rf.tpr_columns(board.rows, board.fpr_targets)
    rows = _rows(board, tpr)
    data = {"columns": [key for key, *_ in table_columns(tpr)], "rows": rows}
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
{empty}{_table(rows, tpr)}
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
