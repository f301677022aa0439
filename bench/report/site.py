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
from string import Template
from typing import Any
from urllib.parse import quote

import pandas as pd

from bench.io import atomic_write_text, inside
from bench.metrics import DEFAULT_FPR_TARGETS, format_fpr, fpr_column, fpr_label, fpr_percent
from bench.report import leaderboard_text as lbtext
from bench.report.leaderboard import Board, build_board
from bench.report.plots import write_plots
from bench.report.positive_sets import ALL, PAPER, VIEW_NOTES
from bench.report.trials import format_trial, trial_key

# (key in the data, header label, sort type, header tooltip); the TPR columns come from table_columns
_COLUMNS: list[tuple[str, str, str, str]] = [
    ("zoo", "zoo", "text", "zoo name (zoo.name of the recipe)"),
    ("dataset", "dataset", "text", "dataset the zoo was trained on"),
    ("benchmark", "bench", "text", "rows with the same bench id were evaluated on the same suspects"),
    ("positives", "positives", "text", f"{ALL}: {VIEW_NOTES[ALL]}; {PAPER}: {VIEW_NOTES[PAPER]}"),
    ("rank", "rank", "number", "rank group within the bench (1 = best); rows sharing a rank cannot be told apart"),
    ("method", "method", "text", "method and what its config changes from the method's defaults"),
    ("config", "config", "text", "first 8 hex digits of the sha256 of the config without the trial seeds"),
    ("trials", "trials", "number", "number of result files (trials) aggregated in this row"),
    ("auc", "AUC", "number", "area under the ROC curve; mean ± sd over trials"),
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


def table_columns(fpr_targets: Sequence[float] = DEFAULT_FPR_TARGETS) -> list[tuple[str, str, str, str]]:
    """The page's columns, with one TPR column per FPR target (``t1f``, "T1%F", ...)."""
    at = [key for key, *_ in _COLUMNS].index(_TPR_AFTER) + 1
    tpr = [(fpr_column(t), fpr_label(t), "number", f"TPR at FPR ≤ {fpr_percent(t)}%; mean over trials")
           for t in fpr_targets]  # fmt: skip
    return [*_COLUMNS[:at], *tpr, *_COLUMNS[at:]]


TABLE_COLUMNS = table_columns()  # the columns for the default eval.fpr_targets [0.01, 0.1]
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


def _breakable(label: str) -> str:
    """Escaped text that may wrap after its commas (long variant labels)."""
    return html.escape(label).replace(",", ",<wbr>")


def _href(rel: str) -> str:
    """Link from ``site/index.html`` to ``rel`` (a POSIX path relative to the results dir)."""
    return "../" + quote(rel)


def _trial(result: dict[str, Any], fpr_targets: Sequence[float]) -> dict[str, Any]:
    """A trial's key, AUC and TPR per FPR target (of its positives view), for the row details."""
    tpr = result["metrics"]["tpr_at_fpr"]
    return {"trial": format_trial(trial_key(result)), "auc": result["metrics"]["auc"],
            **{fpr_column(t): tpr.get(format_fpr(t)) for t in fpr_targets}}  # fmt: skip


def _rows(board: Board) -> list[dict[str, Any]]:
    rows, notes = [], 0
    for record in board.rows.to_dict("records"):
        row = {key: _number(value) for key, value in record.items() if key != "result_files"}
        row["result_files"] = list(record["result_files"])
        row["trial_results"] = [{"file": f, **_trial(board.results[(record["positives"], f)], board.fpr_targets)}
                                for f in row["result_files"]]  # fmt: skip
        notes += bool(row["below_target"])
        row["footnote"] = notes if row["below_target"] else None  # numbered as in leaderboard.md
        rows.append(row)
    return rows


def _footnotes(rows: list[dict[str, Any]]) -> str:
    items = "".join(f'<li id="target-{row["footnote"]}">{lbtext.WARNING}{row["footnote"]} '
                    f"{html.escape(lbtext.target_footnote(row))}</li>" for row in rows if row["below_target"])  # fmt: skip
    return f'<ul id="target-notes">{items}</ul>' if items else ""


def _comparisons(board: Board) -> str:
    """The paired comparisons, one static table per benchmark."""
    head = "<p>" + html.escape(lbtext.COMPARISONS_INTRO.replace("**", "")) + "</p>"
    sections = lbtext.comparison_sections(board.comparisons)
    if not sections:
        return f'<section id="comparisons"><h2>Paired comparisons</h2>{head}<p>No bench has two rows.</p></section>'
    parts = []
    for zoo, dataset, benchmark, positives, records in sections:
        labels = ["A", "B", "shared trials", "ΔAUC (A − B)", f"{records[0]['confidence'] * 100:g}% CI", "p",
                  "distinguishable"]  # fmt: skip
        header = "".join(f'<th scope="col">{html.escape(label)}</th>' for label in labels)
        body = "\n".join(
            f'<tr data-distinguishable="{html.escape(r["distinguishable"])}">'
            + "".join(f"<td>{_breakable(cell)}</td>" for cell in lbtext.comparison_cells(r)) + "</tr>"
            for r in records
        )
        parts.append(f'<section class="comparison" data-zoo="{html.escape(zoo)}" data-benchmark="{html.escape(benchmark)}" '
                     f'data-positives="{html.escape(positives)}"><h3>{html.escape(zoo)} ({html.escape(dataset)}), bench '
                     f"<code>{html.escape(benchmark)}</code>, positives {html.escape(positives)}</h3>"
                     f'<table class="comparisons"><thead><tr>{header}</tr></thead><tbody>\n{body}\n</tbody></table>'
                     "</section>")  # fmt: skip
    return f'<section id="comparisons"><h2>Paired comparisons</h2>{head}\n' + "\n".join(parts) + "\n</section>"


def _cell(key: str, row: dict[str, Any], fpr_targets: Sequence[float]) -> str:
    if key == "auc":
        return html.escape(_spread(row["auc"], row["auc_std"]))
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
        return _breakable(row["variant"]) + flag
    if key in map(fpr_column, fpr_targets):
        return html.escape(_spread(row[key], row[f"{key}_std"]))
    if key == "queries":
        return _fmt(row[key], 0)
    if key in ("gen_s", "verify_s"):
        return _fmt(row[key], 1)
    if key == "result_files":
        items = "".join(
            f'<li><a href="{html.escape(_href(t["file"]))}">{html.escape(Path(t["file"]).name)}</a> '
            f"{t['trial']}: AUC {_fmt(t['auc'])}"
            + "".join(f", {fpr_label(x)} {_fmt(t[fpr_column(x)])}" for x in fpr_targets) + "</li>"
            for t in row["trial_results"]
        )
        count = len(row["trial_results"])
        return (
            f"<details><summary>{count} file{'s' if count != 1 else ''}</summary><ul>{items}</ul></details>"
        )
    if key in ("config", "benchmark"):
        return f"<code>{html.escape(str(row[key]))}</code>"
    return html.escape(str(row[key]))


def _table(rows: list[dict[str, Any]], fpr_targets: Sequence[float]) -> str:
    columns = table_columns(fpr_targets)
    head = "".join(
        f'<th scope="col" data-key="{key}" data-type="{kind}" aria-sort="none" title="{html.escape(tip)}">'
        f'<button type="button">{html.escape(label)}<span class="sort-indicator" aria-hidden="true"></span>'
        "</button></th>"
        for key, label, kind, tip in columns
    )
    body = "\n".join(
        f'<tr data-index="{i}">'
        + "".join(
            f'<td data-key="{key}" class="{kind}">{_cell(key, row, fpr_targets)}</td>' for key, _, kind, _ in columns
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


def _figure(rel: str, caption: str) -> str:
    href = html.escape(_href(rel))
    return (f'<figure><a href="{href}"><img src="{href}" alt="{html.escape(caption)}" loading="lazy"></a>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


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
        figures = "".join(_figure(f"plots/{zoo}/{name}", f"{zoo}: {caption}")
                          for name, caption in PLOTS if _plot_exists(results_dir, zoo, name))
        if figures:
            sections.append(f'<section class="zoo-plots" data-zoo="{html.escape(zoo)}"><h3>{html.escape(zoo)}</h3>'
                            f'<div class="figures">{figures}</div></section>')  # fmt: skip
    text = "\n".join(sections) or "<p>No plots: no result files yet.</p>"
    return f'<section id="plots"><h2>Plots</h2>\n{text}\n</section>'


def _sweeps(results_dir: Path) -> str:
    """One subsection per sweep folder (``fpbench sweep`` writes ``sweeps/<name>/``): its CSVs and PNGs."""
    folder = results_dir / "sweeps"
    found = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".csv")) if folder.is_dir() else []
    by_sweep: dict[str, list[str]] = {}
    for path in found:
        rel = path.relative_to(results_dir).as_posix()
        parts = rel.split("/")
        if len(parts) > 2 and not any(part.startswith(".") for part in parts):
            by_sweep.setdefault(parts[1], []).append(rel)
    if not by_sweep:
        return '<section id="sweeps"><h2>Sweeps</h2><p>No sweep results (run <code>fpbench sweep</code>).</p></section>'
    sections = []
    for name, rels in sorted(by_sweep.items()):
        tables = " ".join(
            f'<a href="{html.escape(_href(r))}">{html.escape(r.split("/", 2)[2])}</a>'
            for r in rels
            if r.endswith(".csv")
        )
        figures = "".join(_figure(r, r.split("/", 2)[2]) for r in rels if r.endswith(".png"))
        sections.append(
            f'<section class="sweep"><h3>{html.escape(name)}</h3>'
            + (f"<p>Data: {tables}</p>" if tables else "")
            + (f'<div class="figures">{figures}</div>' if figures else "")
            + "</section>"
        )
    return '<section id="sweeps"><h2>Sweeps</h2>\n' + "\n".join(sections) + "\n</section>"


def _json_for_html(data: Any) -> str:
    """Deterministic JSON that cannot end its ``<script>`` block (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_LEGEND = """<section id="legend"><h2>How to read the table</h2><dl>
<dt>AUC</dt><dd>Area under the ROC curve of suspect scores: positives (derived from the source by a
removal attack) against negatives (independent models).</dd>
<dt>$tpr_names</dt><dd>The largest true-positive rate among ROC points whose false-positive rate is
at most $tpr_percents, without interpolation. With fewer negatives than 1/FPR (n− &lt; $first_inverse for $first_name) the
figure is the TPR at zero false positives: read it together with n−.</dd>
<dt>rows and trials</dt><dd>A row is one method config on one zoo; its trials (one result file each, told
apart by the seed and the source model's seed) are aggregated: the value is the mean over trials, ± the
standard deviation across them. <em>method</em> names the config by what differs from the method's
defaults, e.g. <code>adv_tra[score=agreement]</code>. Each trial's own numbers are under <em>result files</em>.</dd>
<dt>AUC CI</dt><dd>Student-t confidence interval of the mean AUC over trials; † marks a single-trial row,
whose interval is that result's bootstrap over suspects.</dd>
<dt>bench and rank</dt><dd>Rows with the same bench id were evaluated on the same suspects. Within a
bench, rows sharing a rank cannot be told apart by the paired comparison of their AUCs (below);
rank 1 is the best group; — = not ranked.</dd>
<dt>positives</dt><dd>Which positive suspects a row's figures count (negatives: always all of them).
<code>$all</code>: $all_note. <code>$paper</code>: $paper_note; the same results restricted to those positives,
their metrics recomputed; listed only for results whose positives include both kinds. The two views are
compared and ranked separately.</dd>
<dt>⚠</dt><dd>The method's fingerprint generation missed its own target in some trial (see the note
under the table): the row is listed but not ranked.</dd>
<dt>paper</dt><dd>AUC/T1%F/T10%F <strong>reported</strong> in the ADV-TRA paper (Table 2) for the same
method, at its default config, and dataset; not measured here.</dd>
<dt>queries, gen s, verify s</dt><dd>Queries per suspect; fingerprint generation and verification time
in seconds (means over trials).</dd></dl>
<p>Click a column header to sort (again to reverse). The view can be linked: parameters
<code>sort</code>, <code>dir</code>, <code>dataset</code>, <code>zoo</code>, <code>positives</code>,
<code>method</code> and <code>q</code>
in the URL's query or hash, e.g. <code>index.html#sort=auc&amp;dir=desc</code>.</p></section>"""


def _legend(fpr_targets: Sequence[float]) -> str:
    """The legend, naming the TPR figures of these FPR targets."""
    words = {key: html.escape(value) for key, value in lbtext.tpr_definition(fpr_targets).items()}
    words.update({"all": ALL, "paper": PAPER, "all_note": html.escape(VIEW_NOTES[ALL]),
                  "paper_note": html.escape(VIEW_NOTES[PAPER])})  # fmt: skip
    return Template(_LEGEND).safe_substitute(words)


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
    rows = _rows(board)
    data = {"columns": [key for key, *_ in table_columns(board.fpr_targets)], "rows": rows}
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
{empty}{_table(rows, board.fpr_targets)}
<p id="no-rows" hidden>No rows match the filters.</p>
{_footnotes(rows)}
{_legend(board.fpr_targets)}
{_comparisons(board) if rows else ""}
{_plots(root, sorted({row["zoo"] for row in rows}))}
{_sweeps(root)}
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
