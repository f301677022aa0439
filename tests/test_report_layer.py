"""The report layer's shape (issue "Honest statistics", item 9): no import circle in `bench/report/`,
not even a type-only or a function-local one, and one column specification (`bench.report.columns`)
that every renderer of the board reads: the Markdown board, the compact block, the page and the CSV."""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import re
from pathlib import Path

import pytest

from bench.report import build_board, leaderboard_csv, leaderboard_markdown
from bench.report import columns as cols
from bench.report.blocks import compact_table
from bench.report.model import Board
from bench.report.site import render_site
from tests.conftest import REPO
from tests.test_board_stats import result, write
from tests.test_imports import find_cycle

PACKAGE = "bench.report"


def report_graph(folder: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports, anywhere in the file: module level, inside
    functions and under ``if TYPE_CHECKING:`` alike (``from bench.report import x`` is the submodule x
    when there is one, else the package's ``__init__``)."""
    modules = {p.stem: p for p in sorted(folder.glob("*.py"))}
    names = {stem: PACKAGE if stem == "__init__" else f"{PACKAGE}.{stem}" for stem in modules}
    known = set(names.values())
    graph: dict[str, set[str]] = {}
    for stem, path in modules.items():
        targets = graph.setdefault(names[stem], set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this package
                    base = ".".join([PACKAGE, *([base] if base else [])])
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for name in found:
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name and name != names[stem]:
                    targets.add(name)
    return graph


def test_report_package_has_no_import_cycle_of_any_kind() -> None:
    graph = report_graph(REPO / "bench" / "report")
    assert {"bench.report.columns", "bench.report.model", "bench.report.leaderboard"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, (f"Import cycle in bench/report (type-only and function-local imports count): "
                           f"{' -> '.join(cycle)}. Move what both need into a module both import.")


def test_the_checker_sees_type_only_and_function_local_cycles(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from bench.report.b import B\n")
    (tmp_path / "b.py").write_text("def f():\n    from bench.report import a\n    return a\n")
    graph = report_graph(tmp_path)
    assert graph["bench.report.a"] == {"bench.report.b"} and graph["bench.report.b"] == {"bench.report.a"}
    assert find_cycle(graph) == ["bench.report.a", "bench.report.b", "bench.report.a"]


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Board:
    """Two methods, 3 trials, 50 negatives (T10%F certified, T1%F resolved as TPR@0FP); one row below target."""
    root = tmp_path_factory.mktemp("results")
    for trial in range(3):
        write(root, result("good", trial, n_neg=50, lift=0.5))
        weak = result("weak", trial, n_neg=50, lift=0.05)
        weak["fingerprint"] = {"generation_target": {"name": "kept", "achieved": 0.4, "floor": 0.5, "met": False}}
        write(root, weak)
    return build_board(root)


def _md_head(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def _html_head(page: str) -> list[str]:
    head = page[page.index('<table id="leaderboard">'):page.index("</thead>")]
    return re.findall(r'<button type="button">(.*?)<span', head)


def _spec_headings(board: Board, output: str) -> list[str]:
    ctx = cols.context(board.rows, board.fpr_targets, board.budget)
    return [col.heading for col in cols.shown(output, ctx)]


def _compact(board: Board) -> str:
    rows = board.rows[board.rows["positives"] == "all"].reset_index(drop=True)
    return compact_table(rows, board.comparisons, board.fpr_targets, lambda rel: rel, board.budget)


def test_every_renderer_takes_its_headings_from_the_spec(board: Board, tmp_path: Path) -> None:
    md = _spec_headings(board, cols.MARKDOWN)
    assert md[:2] == ["zoo", "dataset"] and "TPR@0FP" in md and "T10%F" in md and "T1%F" not in md
    assert f"AUC@{board.budget}" in md and md[-1] == "runs"  # a heading that is a function of the board
    assert _md_head(leaderboard_markdown(board), "zoo") == md
    assert _md_head(_compact(board), "rank") == _spec_headings(board, cols.COMPACT)
    assert _html_head(render_site(tmp_path, board)) == _spec_headings(board, cols.HTML)
    assert next(csv.reader(io.StringIO(leaderboard_csv(board.rows)))) == cols.frame_fields(board.fpr_targets)
    assert list(board.rows.columns) == cols.frame_fields(board.fpr_targets)


def test_a_change_to_the_spec_reaches_every_renderer(board: Board, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {col.key: col for col in cols.SPEC}
    renamed = dataclasses.replace(spec["trials"], heading="runs averaged")
    no_queries = dataclasses.replace(spec["queries"], cells={cols.MARKDOWN: spec["queries"].cells[cols.MARKDOWN]})
    monkeypatch.setattr(cols, "SPEC", tuple({**spec, "trials": renamed, "queries": no_queries}.values()))
    md, compact = _md_head(leaderboard_markdown(board), "zoo"), _md_head(_compact(board), "rank")
    page = _html_head(render_site(tmp_path, board))
    assert all("runs averaged" in head and "trials" not in head for head in (md, compact, page))
    assert "queries" in md and "queries" not in compact and "queries" not in page  # only where the spec shows it
    assert md == _spec_headings(board, cols.MARKDOWN) and page == _spec_headings(board, cols.HTML)


def test_cells_follow_the_spec_and_footnotes_are_numbered_per_table(board: Board) -> None:
    ctx = cols.context(board.rows, board.fpr_targets, board.budget)
    rows = cols.numbered(board.rows.to_dict("records"))
    weak = next(row for row in rows if row["method"] == "weak")
    label = weak["variant"]  # weak[<config id>]: an unregistered method
    cells = {col.heading: col.cell(weak) for col in cols.shown(cols.MARKDOWN, ctx)}
    assert cells["method"] == f"{label} ⚠1" and cells["trials"] == "3" and cells["queries"] == "10"
    assert cells["TPR@0FP"] == f"{weak['tpr0fp']:.3f} ± {weak['tpr0fp_std']:.3f}"
    assert f"| {label} ⚠1 |" in leaderboard_markdown(board)
    assert f"⚠1 {label}: generation missed its target" in _compact(board)
    with pytest.raises(ValueError, match="unknown board output 'pdf'"):
        cols.shown("pdf", ctx)
