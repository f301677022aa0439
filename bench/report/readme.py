"""Keep the README's results table generated: the block between two markers is rewritten from the
result files (never typed by hand).

The start marker may name one zoo, ``<!-- leaderboard:start zoo=fmnist_paper -->``: the block then
shows that zoo's rows and plots only (the README's headline benchmark); without it, every zoo.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from bench.io import atomic_write_text
from bench.report.cells import md_link
from bench.report.leaderboard import build_board
from bench.report.leaderboard_text import leaderboard_markdown
from bench.report.model import Board
from bench.report.positive_sets import ALL, PAPER, VIEW_NOTES

START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
_START = re.compile(r"<!-- leaderboard:start(?: zoo=([^\s>]+))? -->")


def zoo_board(board: Board, zoo: str) -> Board:
    """The rows, comparisons and results of one zoo of ``board``."""
    return replace(board, rows=board.rows[board.rows["zoo"] == zoo].reset_index(drop=True),
                   comparisons=board.comparisons[board.comparisons["zoo"] == zoo].reset_index(drop=True),
                   results={k: r for k, r in board.results.items() if r["zoo"]["name"] == zoo})  # fmt: skip


def update_readme(readme: str | Path, results_dir: str | Path, board: Board | None = None) -> Path:
    """Replace the README block between the leaderboard markers with the current leaderboard table and
    its footnotes (links made relative to the README), then links to the paired comparisons, the plots
    and the web page."""
    readme, results_dir = Path(readme), Path(results_dir)
    text = readme.read_text()
    start = _START.search(text)
    if start is None or END not in text[start.end():]:
        raise ValueError(f"{readme} has no '{START}' ... '{END}' block; add the two markers where the table goes "
                         "(the start marker may name one zoo: '<!-- leaderboard:start zoo=NAME -->').")
    zoo = start.group(1)
    prefix = Path(os.path.relpath(results_dir.resolve(), readme.resolve().parent)).as_posix()
    board = build_board(results_dir) if board is None else board
    text_md = leaderboard_markdown(zoo_board(board, zoo) if zoo else board)
    if "| zoo" in text_md:  # the rows table and its footnotes; the comparisons stay in leaderboard.md
        table = text_md[text_md.index("| zoo"):text_md.index("## Paired comparisons")].rstrip() + "\n"
        table += (f"\npositives: `{ALL}` = {VIEW_NOTES[ALL]}; `{PAPER}` = {VIEW_NOTES[PAPER]}.\n"
                  f"\nLegend, paired comparisons and rank rules: [leaderboard.md]({prefix}/leaderboard.md); "
                  f"scores per attack and negative kind: [groups.md]({prefix}/groups.md).\n")
    else:
        table = "No result files yet.\n"
    table = re.sub(r"\]\((runs/[^)]+)\)", lambda m: f"]({prefix}/{m.group(1)})", table)
    plots = sorted(p.relative_to(results_dir).as_posix() for p in (results_dir / "plots").rglob("*.png")
                   if zoo is None or p.parent.name == zoo)  # fmt: skip
    links = [md_link(p, f"{prefix}/{p}") for p in plots]  # zoo names in plot paths come from result files
    site = results_dir / "site" / "index.html"
    if site.is_file():
        links.append(f"[web page]({prefix}/site/index.html)")
    block = f"{start.group(0)}\n{table}\nPlots: {', '.join(links) if links else 'none yet'}.\n{END}"
    end = text.index(END, start.end())
    new = text[:start.start()] + block + text[end + len(END):]
    if new != text:
        atomic_write_text(readme, new)
    return readme
