"""Sections of the leaderboard page (:mod:`bench.report.site`) that need no table state: the notes under
the table, the legend (TPR columns, rank rule), the paired comparisons and the sweeps."""

from __future__ import annotations

import html
from pathlib import Path
from string import Template
from typing import Any

from bench.report import leaderboard_text as lbtext
from bench.report import row_figures as rf
from bench.report.cells import WARNING, breakable, href
from bench.report.comparisons import FEW_TRIALS_NOTE, MIN_TRIALS
from bench.report.model import Board
from bench.report.positive_sets import ALL, PAPER, VIEW_NOTES
from bench.stats import RANK_LEGEND


def figure(rel: str, caption: str) -> str:
    """A linked image with its caption."""
    link = html.escape(href(rel))
    return (f'<figure><a href="{link}"><img src="{link}" alt="{html.escape(caption)}" loading="lazy"></a>'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


def footnotes(board: Board, rows: list[dict[str, Any]]) -> str:
    """The few-trials note and the notes of rows below their generation target, under the table."""
    few = lbtext.few_trials_note(board.rows) if rows else ""
    items = "".join(f'<li id="target-{row["footnote"]}">{WARNING}{row["footnote"]} '
                    f"{html.escape(lbtext.target_footnote(row))}</li>" for row in rows if row["below_target"])  # fmt: skip
    return ((f'<p id="few-trials">{html.escape(few)}</p>' if few else "")
            + (f'<ul id="target-notes">{items}</ul>' if items else ""))  # fmt: skip


def comparisons(board: Board) -> str:
    """The paired comparisons, one static table per benchmark."""
    head = "<p>" + html.escape(lbtext.COMPARISONS_INTRO.replace("**", "")) + "</p>"
    sections = lbtext.comparison_sections(board.comparisons)
    if not sections:
        return f'<section id="comparisons"><h2>Paired comparisons</h2>{head}<p>No bench has two rows with at least {MIN_TRIALS} trials.</p></section>'
    parts = []
    for zoo, dataset, benchmark, positives, records in sections:
        labels = lbtext.comparison_head(records[0]["confidence"])
        header = "".join(f'<th scope="col">{html.escape(label)}</th>' for label in labels)
        body = "\n".join(
            f'<tr data-distinguishable="{html.escape(r["distinguishable"])}">'
            + "".join(f"<td>{breakable(cell)}</td>" for cell in lbtext.comparison_cells(r)) + "</tr>"
            for r in records
        )
        parts.append(f'<section class="comparison" data-zoo="{html.escape(zoo)}" data-benchmark="{html.escape(benchmark)}" '
                     f'data-positives="{html.escape(positives)}"><h3>{html.escape(zoo)} ({html.escape(dataset)}), bench '
                     f"<code>{html.escape(benchmark)}</code>, positives {html.escape(positives)}</h3>"
                     f'<table class="comparisons"><thead><tr>{header}</tr></thead><tbody>\n{body}\n</tbody></table>'
                     "</section>")  # fmt: skip
    return f'<section id="comparisons"><h2>Paired comparisons</h2>{head}\n' + "\n".join(parts) + "\n</section>"


def sweeps(results_dir: Path) -> str:
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
            f'<a href="{html.escape(href(r))}">{html.escape(r.split("/", 2)[2])}</a>'
            for r in rels
            if r.endswith(".csv")
        )
        figures = "".join(figure(r, r.split("/", 2)[2]) for r in rels if r.endswith(".png"))
        sections.append(
            f'<section class="sweep"><h3>{html.escape(name)}</h3>'
            + (f"<p>Data: {tables}</p>" if tables else "")
            + (f'<div class="figures">{figures}</div>' if figures else "")
            + "</section>"
        )
    return '<section id="sweeps"><h2>Sweeps</h2>\n' + "\n".join(sections) + "\n</section>"


_LEGEND = """<section id="legend"><h2>How to read the table</h2><dl>
<dt>AUC</dt><dd>Area under the ROC curve of suspect scores: positives (derived from the source by a
removal attack) against negatives (independent models); ties count half. <em>(ties a–b)</em> after it:
the AUC with every tied pair counted as a loss / as a win (means over trials), shown when wider than
0.01; a lead inside another row's interval is tie credit, not separation.</dd>
$tpr_items
<dt>rows and trials</dt><dd>A row is one method config on one zoo; its trials (one result file each, told
apart by the seed and the source model's seed) are aggregated: the value is the mean over trials, ± the
standard deviation across them. <em>method</em> names the config by what differs from the method's
defaults, e.g. <code>adv_tra[score=agreement]</code>. Each trial's own numbers are under <em>result files</em>.</dd>
<dt>AUC CI</dt><dd>Student-t confidence interval of the mean AUC over trials; † marks a single-trial row,
whose interval is that result's bootstrap over suspects.</dd>
<dt>bench and rank</dt><dd>Rows with the same bench id were evaluated on the same suspects. $rank_legend
Significantly better: the paired comparison of the AUCs (below), its p-value Holm-adjusted over all
comparisons of the bench and positives view, below 1 − confidence. $few_trials; such a row has
rank — and is not compared.</dd>
<dt>positives</dt><dd>Which positive suspects a row's figures count (negatives: always all of them).
<code>$all</code>: $all_note. <code>$paper</code>: $paper_note; the same results restricted to those positives,
their metrics recomputed; listed only for results whose positives include both kinds. The two views are
compared and ranked separately.</dd>
<dt>⚠</dt><dd>The method's fingerprint generation missed its own target in some trial (see the note
under the table): the row is ranked like the others and marked.</dd>
<dt>paper</dt><dd>AUC/T1%F/T10%F <strong>reported</strong> in the ADV-TRA paper (Table 2) for the same
method, at its default config, and dataset; not measured here.</dd>
<dt>queries, gen s, verify s</dt><dd>Queries per suspect; fingerprint generation and verification time
in seconds (means over trials).</dd></dl>
<p>Click a column header to sort (again to reverse). The view can be linked: parameters
<code>sort</code>, <code>dir</code>, <code>dataset</code>, <code>zoo</code>, <code>positives</code>,
<code>method</code> and <code>q</code>
in the URL's query or hash, e.g. <code>index.html#sort=auc&amp;dir=desc</code>.</p></section>"""


def legend(board: Board) -> str:
    """The legend: the TPR columns of these rows (with the FPR bounds of their n−), the rank rule, the views."""
    items = "\n".join(f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>"
                      for term, text in rf.tpr_legend(board.rows, board.fpr_targets))  # fmt: skip
    words = {"tpr_items": items, "rank_legend": html.escape(RANK_LEGEND),
             "few_trials": html.escape(FEW_TRIALS_NOTE.capitalize())}
    words.update({"all": ALL, "paper": PAPER, "all_note": html.escape(VIEW_NOTES[ALL]),
                  "paper_note": html.escape(VIEW_NOTES[PAPER])})  # fmt: skip
    return Template(_LEGEND).safe_substitute(words)
