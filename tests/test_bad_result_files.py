"""A results folder with bad files (binary, deeply nested, a folder named ``x.json``, truncated JSON)
still gives a leaderboard built from the good files, with one warning per bad file; ``--check``
names every bad file and fails. A copied result counts once; a conflicting one is reported."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.report import build_board, check_results
from bench.results import iter_results, list_result_files

from .test_positive_sets import MIXED, result, write


def bad_files(root: Path) -> list[Path]:
    """Good results of methods `a` and `b`, then four bad files beside them; returns the bad ones."""
    good = write(root, result("a", MIXED))
    write(root, result("b", MIXED))
    folder = root / "runs" / "tiny" / "junk"
    folder.mkdir(parents=True)
    binary, deep, directory, truncated = (folder / n for n in ("binary.json", "deep.json", "x.json", "truncated.json"))
    binary.write_bytes(b"\xff\xfe\x00\x81binary\x00" * 20)
    deep.write_text("[" * 200_000 + "]" * 200_000)
    directory.mkdir()
    truncated.write_text(good.read_text()[:300])
    return [binary, deep, directory, truncated]


def test_board_is_built_from_the_good_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = bad_files(tmp_path)
    assert len(list_result_files(tmp_path)) == 6
    with caplog.at_level(logging.WARNING):
        board = build_board(tmp_path)
    assert sorted(set(board.rows["method"])) == ["a", "b"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for path in bad:
        assert sum(str(path) in w for w in warnings) == 1, path  # one warning per bad file, naming it
    assert any("is a folder" in w for w in warnings) and any("not UTF-8" in w for w in warnings)
    assert any("nested too deeply" in w for w in warnings) and any("not valid JSON" in w for w in warnings)
    assert [p.parent.name for p, _ in iter_results(tmp_path)] == ["a", "b"]


def test_check_names_every_bad_file_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = bad_files(tmp_path)
    problems = check_results(tmp_path)
    assert len(problems) == 4 and all(any(p.startswith(str(b)) for p in problems) for b in bad)
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert all(str(b) in out for b in bad) and "FAILED: 4 problem(s)" in out
    assert main(["leaderboard", "--results-dir", str(tmp_path)]) == 0  # without --check: the board, exit 0
    assert "| tiny |" in (tmp_path / "leaderboard.md").read_text()


def test_a_copied_result_counts_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, result("a", MIXED))
    copy = path.with_name("copy-of-" + path.name)
    shutil.copy(path, copy)
    with caplog.at_level(logging.WARNING):
        rows = build_board(tmp_path).rows
    assert set(rows["trials"]) == {1}  # in each view (`all` and `paper`)
    assert all(files == [path.relative_to(tmp_path).as_posix()] for files in rows["result_files"])
    message = next(r.getMessage() for r in caplog.records if "copy" in r.getMessage())
    assert copy.name in message and path.name in message and "counted once" in message


def test_same_trial_on_another_zoo_manifest_conflicts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, result("a", MIXED))
    other = json.loads(path.read_text())
    other["zoo"]["manifest_sha256"] = "ef" * 32
    later = path.with_name("zz-" + path.name)  # lexicographically after: the first path is kept
    later.write_text(json.dumps(other))
    with caplog.at_level(logging.WARNING):
        rows = build_board(tmp_path).rows
    assert set(rows["trials"]) == {1}
    assert all(files == [path.relative_to(tmp_path).as_posix()] for files in rows["result_files"])
    message = next(r.getMessage() for r in caplog.records if "conflict" in r.getMessage())
    assert later.name in message and path.name in message and "different zoo manifests" in message
