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

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from bench.io import atomic_write_text
from bench.report import columns as cols
from bench.report import row_figures as rf
from bench.report import site_sections as sections
from bench.report.leaderboard import build_board
from bench.report.model import Board
from bench.report.plots import write_plots
from bench.report.trials import format_trial, trial_key

COMMAND = "fpbench leaderboard --html --results-dir RESULTS_DIR"
_FILTERS = (("dataset", "dataset"), ("zoo", "zoo"), ("positives", "positives"), ("method", "method"))


def _json_value(value: Any) -> Any:
    """JSON-safe value: NaN and pandas NA become null, numpy scalars Python ones."""
    if value is None or (not isinstance(value, (str, list)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _trial(result: dict[str, Any], fpr_targets: Sequence[float], tpr: Sequence[rf.TprColumn]) -> dict[str, Any]:
    """A trial's key, AUC and the TPR of each shown column (of its positives view), for the row details."""
    figures = rf.trial_figures(result, fpr_targets)
    return {"trial": format_trial(trial_key(result)), "auc": result["metrics"]["auc"],
            **{c.key: _json_value(figures[c.key]) for c in tpr}}  # fmt: skip


def _rows(board: Board, tpr: Sequence[rf.TprColumn]) -> list[dict[str, Any]]:
    rows = []
    for record in cols.numbered(board.rows.to_dict("records")):  # footnotes numbered as in leaderboard.md
        row = {key: _json_value(value) for key, value in record.items() if key != "result_files"}
        row["result_files"] = list(record["result_files"])
        row["trial_results"] = [{"file": f, **_trial(board.results[(record["positives"], f)], board.fpr_targets, tpr)}
                                for f in row["result_files"]]  # fmt: skip
        rows.append(row)
    return rows


def _cells(rows: list[dict[str, Any]], columns: Sequence[cols.Shown]) -> list[list[Markup]]:
    """Each row's cells as the column spec writes them for the page (already escaped HTML)."""
    return [[Markup(col.cell(row)) for col in columns] for row in rows]


def _filters(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One select per filterable field, with the values the rows hold."""
    return [{"key": key, "label": label, "options": sorted({str(row[key]) for row in rows})} for key, label in _FILTERS]


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
    columns = cols.shown(cols.HTML, ctx)
    notes = sections.footnotes(board, rows)
    page = sections.environment().get_template("page.html")
    return page.render(
        css=Markup(_asset("site.css")), js=Markup(_asset("site.js")), data=Markup(_json_for_html(data)),
        command=COMMAND, rows=rows, n_files=n_files, filters=_filters(rows), columns=columns,
        cells=_cells(rows, columns), few_trials=notes["few_trials"], targets=notes["targets"],
        legend=sections.legend(board), comparisons=sections.comparisons(board),
        plots=sections.plots(root, sorted({row["zoo"] for row in rows})), sweeps=sections.sweeps(root),
    )


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
