"""The README's results block is regenerated from result files, between its markers only."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import write_leaderboard
from bench.report.readme import END, START, update_readme
from tests.test_report import results_dir  # noqa: F401  (fixture: synthetic result files)


def test_readme_block_is_generated_and_idempotent(results_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    write_leaderboard(results_dir)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{START}\nold text\n{END}\n\nafter\n")
    update_readme(readme, results_dir)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith("\nafter\n")
    assert "old text" not in text and "| zoo" in text
    prefix = Path(__import__("os").path.relpath(results_dir, tmp_path)).as_posix()
    assert f"]({prefix}/runs/" in text  # links resolve from the README's folder
    first = readme.read_bytes()
    update_readme(readme, results_dir)
    assert readme.read_bytes() == first


def test_readme_without_markers_is_refused(results_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme, results_dir)
    assert readme.read_text() == "# no markers\n"


def test_readme_block_for_one_zoo(results_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """`<!-- leaderboard:start zoo=NAME -->` keeps that zoo's rows (the headline benchmark) and drops others."""
    from bench.report import build_board
    from bench.results import result_path, write_result
    from tests.test_groups import _result

    other = _result(0)
    other["zoo"]["name"] = "other"
    write_result(other, result_path(results_dir, "other", "akh", other["config_sha256"], 0))
    assert set(build_board(results_dir).rows["zoo"]) == {"tiny", "other"}
    headline = "tiny"
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n<!-- leaderboard:start zoo={headline} -->\nold\n{END}\ny\n")
    update_readme(readme, results_dir)
    text = readme.read_text()
    rows = [line for line in text.splitlines() if line.startswith(f"| {headline} ")]
    assert rows and not any(line.startswith("| other ") for line in text.splitlines())
    assert f"<!-- leaderboard:start zoo={headline} -->" in text and text.endswith(f"{END}\ny\n")
    first = readme.read_bytes()
    update_readme(readme, results_dir)
    assert readme.read_bytes() == first
