"""The board as W&B tables (bench/report/wandb_board.py, bench.tracking.log_board) and the page's templates.

The renderer is checked against the CSV renderer (both read the column spec's raw fields), the run
through the fake `wandb` of tests/test_tracking.py and once through real W&B in offline mode.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench.report import build_board, write_leaderboard
from bench.report.columns import frame_fields
from bench.report.model import COMPARISON_COLUMNS
from bench.report.site import render_site
from bench.report.wandb_board import board_figures, board_frames, board_summary
from bench.tracking import leaderboard_tracking, log_board
from tests.test_site import RUNS, write_results
from tests.test_tracking import fake_wandb, fresh_tracking  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_results(tmp_path_factory.mktemp("results"), RUNS)
    write_leaderboard(root)
    (root / "plots" / "z1").mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (4, 4), "white").save(root / "plots" / "z1" / "roc.png")
    (root / "plots" / "z1" / "frontier").mkdir(exist_ok=True)  # a row's frontier (issue #27 item 3: W&B gets it)
    Image.new("RGB", (4, 4), "white").save(root / "plots" / "z1" / "frontier" / "m.png")
    return root


def test_tables_hold_the_csv_fields_and_values(results: Path) -> None:
    board = build_board(results)
    frames = board_frames(board)
    table = frames["leaderboard"]
    assert list(table.columns) == frame_fields(board.fpr_targets)
    assert list(frames["comparisons"].columns) == COMPARISON_COLUMNS and len(frames["comparisons"]) > 0
    csv = pd.read_csv(io.StringIO((results / "leaderboard.csv").read_text()))
    assert len(table) == len(csv) > 1
    for key in ("auc", "auc_ci_low", "auc_ci_high", "n_neg", "queries"):
        for mine, theirs in zip(table[key], csv[key], strict=True):
            assert (mine is None and math.isnan(theirs)) or mine == pytest.approx(theirs, abs=1e-6)
    assert list(table["result_files"]) == list(csv["result_files"])
    assert all(cell is None or not (isinstance(cell, float) and math.isnan(cell))
               for cell in table.to_numpy().ravel())  # fmt: skip
    assert board_summary(board)["rows"] == len(csv)


def test_log_board_logs_both_tables_figures_and_the_csv(fake_wandb, results: Path, tmp_path: Path) -> None:  # noqa: F811
    board = build_board(results)
    assert log_board(leaderboard_tracking("offline", tmp_path), board, results) == "fake-run-dir"
    (run,) = fake_wandb.runs
    assert run.init_kwargs["job_type"] == "leaderboard" and run.init_kwargs["mode"] == "offline"
    assert run.init_kwargs["dir"] == str(tmp_path) and run.finished
    assert set(run.logged) == {"leaderboard", "comparisons", "plots/z1/roc", "plots/z1/frontier/m"}
    assert run.summary["rows"] == len(board.rows)
    (artifact,) = run.artifacts
    assert artifact.type == "leaderboard" and artifact.files == [str(results / "leaderboard.csv")]


def test_log_board_disabled_logs_nothing(fake_wandb, results: Path, tmp_path: Path) -> None:  # noqa: F811
    assert log_board(leaderboard_tracking("disabled", tmp_path), build_board(results), results) is None
    assert fake_wandb.runs == [] and not any(tmp_path.iterdir())


def test_board_figures_are_the_zoo_level_pngs_and_the_frontiers(results: Path) -> None:
    assert board_figures(results) == {"plots/z1/frontier/m": results / "plots" / "z1" / "frontier" / "m.png",
                                      "plots/z1/roc": results / "plots" / "z1" / "roc.png"}


def test_real_wandb_offline_run_holds_the_table(fresh_tracking, results: Path, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("wandb")
    board = build_board(results)
    run_dir = log_board(leaderboard_tracking("offline", tmp_path), board, results)
    assert run_dir is not None
    tables = sorted(Path(run_dir).rglob("leaderboard_*.table.json"))
    assert tables, f"no leaderboard table under {run_dir}"
    logged = json.loads(tables[-1].read_text())
    assert logged["columns"] == frame_fields(board.fpr_targets) and len(logged["data"]) == len(board.rows)


def test_page_values_are_escaped_by_the_template(tmp_path: Path) -> None:
    root = write_results(tmp_path, (("<b>z</b>", "d&d", "random", (0,), 0.3), ("<b>z</b>", "d&d", "oracle_label", (0,), 0.6)))
    page = render_site(root)
    assert "<b>z</b>" not in page and "&lt;b&gt;z&lt;/b&gt;" in page and "d&amp;d" in page


def test_cli_leaderboard_wandb_logs_the_board(fake_wandb, results: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    from bench.cli import main

    assert main(["leaderboard", "--results-dir", str(results), "--wandb", "offline", "--wandb-dir", str(tmp_path)]) == 0
    (run,) = fake_wandb.runs
    assert run.init_kwargs["dir"] == str(tmp_path) and {"leaderboard", "comparisons"} <= set(run.logged)
    assert "W&B: run written to fake-run-dir" in capsys.readouterr().out


def test_cli_leaderboard_wandb_mode_is_checked_before_any_work(results: Path, capsys) -> None:
    from bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["leaderboard", "--results-dir", str(results), "--wandb", "disabled"])
    assert exit_.value.code == 2 and "invalid choice: 'disabled'" in capsys.readouterr().err
