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
