"""Generated blocks (issue "Honest statistics", items 8, 9 and 10): the compact headline and the
per-attack groups table in README.md and docs are written from result files by `fpbench leaderboard
--readme FILE`, and `--check` fails on one that no longer matches them or whose marker is wrong."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench.cli import main
from bench.report import build_board
from tests.test_board_stats import result, write

DOC = "# notes\n\nbefore\n\n<!-- board:start zoo=z -->\ntyped by hand\n<!-- board:end -->\n\nafter\n"


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository root with results/ (two methods, 3 trials, 50 negatives) and a README holding a block."""
    for trial in range(3):
        write(tmp_path / "results", result("good", trial, n_neg=50, lift=0.5))
        write(tmp_path / "results", result("weak", trial, n_neg=50, lift=0.05))
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(DOC)
    (tmp_path / "docs" / "notes.md").write_text(DOC.replace("zoo=z", "zoo=z view=all"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_blocks_are_generated_compact_and_idempotent(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", "--results-dir", "results", "--check"]) == 1  # typed by hand: stale
    assert "README.md: the generated block" in capsys.readouterr().out
    for doc in ("README.md", "docs/notes.md"):
        assert main(["leaderboard", "--results-dir", "results", "--readme", doc]) == 0
    text = (repo / "README.md").read_text()
    assert "typed by hand" not in text and text.startswith("# notes\n\nbefore\n") and text.endswith("after\n")
    head = next(line for line in text.splitlines() if line.startswith("| rank"))
    assert head == "| rank | method | trials | AUC | AUC 95 % CI | TPR@0FP | T10%F | queries | results |"
    assert "[3 file(s)](results/runs/z/good)" in text and "**What it supports:** of 1 paired comparisons" in text
    assert "(docs/statistics.md gives the power)" in text
    assert "../results/runs/z/good" in (repo / "docs" / "notes.md").read_text()  # links relative to the file
    capsys.readouterr()
    main(["leaderboard", "--results-dir", "results", "--check"])  # (these synthetic files carry no CI: other problems)
    assert "generated block" not in capsys.readouterr().out
    before = (repo / "README.md").read_text()
    assert main(["leaderboard", "--results-dir", "results", "--readme", "README.md"]) == 0
    assert (repo / "README.md").read_text() == before  # idempotent


def test_a_new_result_makes_the_block_stale(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for doc in ("README.md", "docs/notes.md"):
        assert main(["leaderboard", "--results-dir", "results", "--readme", doc]) == 0
    write(repo / "results", result("third", 0, n_neg=50, lift=0.3))
    capsys.readouterr()
    assert main(["leaderboard", "--results-dir", "results", "--check"]) == 1
    out = capsys.readouterr().out
    assert "README.md: the generated block '<!-- board:start zoo=z -->' is out of date" in out
    assert "docs/notes.md: the generated block" in out


def test_one_or_two_trials_support_no_order(repo: Path) -> None:
    for path in (repo / "results" / "runs" / "z").rglob("*-s[12].json"):
        path.unlink()
    assert main(["leaderboard", "--results-dir", "results", "--readme", "README.md"]) == 0
    text = (repo / "README.md").read_text()
    assert "nothing about order: 1 trial(s) per row" in text
    rows = [line for line in text.splitlines() if line.startswith(("| — | good", "| — | weak", "| 1 |", "| 2 |"))]
    assert len(rows) == 2 and all(line.startswith("| — |") for line in rows)


def test_bad_block_arguments_exit_2(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "README.md").write_text("<!-- board:start view=all -->\n<!-- board:end -->\n")
    assert main(["leaderboard", "--results-dir", "results", "--readme", "README.md"]) == 2
    assert "give zoo=NAME" in capsys.readouterr().err


GROUPS_DOC = "# per attack\n\n<!-- board:start zoo=z table=groups variant={} -->\n<!-- board:end -->\n\nafter\n"


def test_groups_block_is_generated_and_a_stale_one_fails_check(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board = build_board(repo / "results")
    good = next(label for label, method in board.rows[["variant", "method"]].itertuples(index=False) if method == "good")
    (repo / "docs" / "groups.md").write_text(GROUPS_DOC.format(good))
    assert main(["leaderboard", "--results-dir", "results", "--readme", "docs/groups.md"]) == 0
    text = (repo / "docs" / "groups.md").read_text()
    head = next(line for line in text.splitlines() if line.startswith("| method"))
    assert head == ("| method | trials | adv_train (n=4) | ftll (n=4) | prune (n=4) | rtal (n=4) | DADT (n=12) | "
                    "DAST (n=12) | SADT (n=13) | SAST (n=13) | sep. trials | groups sep. |")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) == 1 and rows[0].startswith(f"| {good} | 3 | ")  # the variant asked for, not `weak`
    ftll = [statistics.fmean(m["score"] for m in r["per_model"] if m["group"] == "ftll") for r in board.results.values()
            if r["method"]["name"] == "good"]
    assert f" {statistics.fmean(ftll):.3f} ± {statistics.stdev(ftll):.3f} " in rows[0].split("|")[4] + " "
    capsys.readouterr()
    main(["leaderboard", "--results-dir", "results", "--check"])
    assert "docs/groups.md" not in capsys.readouterr().out  # fresh: not reported
    (repo / "docs" / "groups.md").write_text(text.replace(rows[0], rows[0].replace(" | 3 | ", " | 2 | ", 1)))
    assert main(["leaderboard", "--results-dir", "results", "--check"]) == 1
    assert (f"docs/groups.md: the generated block '<!-- board:start zoo=z table=groups variant={good} -->' is out of "
            "date" in capsys.readouterr().out)


def test_groups_block_without_rows_says_so(repo: Path) -> None:
    (repo / "docs" / "groups.md").write_text(GROUPS_DOC.format("absent"))
    assert main(["leaderboard", "--results-dir", "results", "--readme", "docs/groups.md"]) == 0
    assert "No row `absent` of zoo `z` in the result files." in (repo / "docs" / "groups.md").read_text()


@pytest.mark.parametrize(("marker", "message"), [
    ("zoo=z table=plots",
     "table=plots is not a table; give table=board (the default), table=groups, table=frontier, table=cost, "
     "table=throughput or table=reproduce"),
    ("zoo=z table=frontier budget=many", "budget=many is not a number of queries per suspect"),
    ("zoo=z table=groups view=all", "for table=groups, [variant=...]; unknown: ['view']"),
    ("zoo=z variant=good", "for table=board, [view=...]; unknown: ['variant']"),
])
def test_bad_table_arguments_exit_2_and_fail_check(repo: Path, capsys: pytest.CaptureFixture[str], marker: str,
                                                   message: str) -> None:
    (repo / "docs" / "notes.md").write_text(f"<!-- board:start {marker} -->\n<!-- board:end -->\n")
    assert main(["leaderboard", "--results-dir", "results", "--readme", "docs/notes.md"]) == 2
    assert message in capsys.readouterr().err
    assert main(["leaderboard", "--results-dir", "results", "--check"]) == 1  # a problem line, not a crash
    assert f"docs/notes.md: board block '{marker}': " in capsys.readouterr().out


FRONTIER_DOC = "# threat\n\n<!-- board:start zoo=z table=frontier -->\n<!-- board:end -->\n"


def test_frontier_block_is_the_evasion_cost_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Issue "Threat models, not a mixture", item 3: the README headline shows every row's evasion cost per
    family and overall. Every positive keeps 5 points less accuracy than the source (0.85 vs 0.90); `blind`
    scores positives like negatives (evades: 5.0 pt), `sure` lifts them above every negative (none found)."""
    for trial in range(3):
        for method, lift in (("blind", 0.0), ("sure", 1.0)):
            res = result(method, trial, n_neg=50, lift=lift)
            for row in res["per_model"]:
                row["test_acc"] = 0.85 if row["role"] == "positive" else 0.88
            write(tmp_path / "results", res)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "threat.md").write_text(FRONTIER_DOC)
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "--results-dir", "results", "--readme", "docs/threat.md"]) == 0
    text = (tmp_path / "docs" / "threat.md").read_text()
    lines = text.splitlines()
    assert "| method | overall | adversarial training | fine-tuning | pruning |" in lines
    rows = {line.split(" | ")[0].lstrip("| ").split("[")[0]: line.split(" | ", 1)[1] for line in lines
            if line.startswith(("| blind[", "| sure["))}
    assert rows == {"blind": "5.0 pt | 5.0 pt | 5.0 pt | 5.0 pt |",
                    "sure": "none up to 5.0 pt | none up to 5.0 pt | none up to 5.0 pt | none up to 5.0 pt |"}
    assert "[frontier.md](../results/frontier.md)" in text and "negatives per trial: [50]" in text
    write(tmp_path / "results", result("third", 0, n_neg=50, lift=0.3))
    capsys.readouterr()
    assert main(["leaderboard", "--results-dir", "results", "--check"]) == 1
    assert ("docs/threat.md: the generated block '<!-- board:start zoo=z table=frontier -->' is out of date"
            in capsys.readouterr().out)


def test_cost_block_renders_the_phase_times_of_a_multi_trial_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #27 item 6 (cost by phase) as a generated block: the numbers of perf/trials-<zoo>.json, rounded,
    per trial and in all; a trial whose zoo was built before shows 0 models trained."""
    perf = {"zoo": "z", "workers": 2, "cpu_threads": 1, "executor": "local", "wall_seconds": 1500.4,
            "hardware": {"cpu": "Test CPU", "cpus_available": 2, "gpus": []},
            "phase_totals": {"zoo": 1200.0, "generate a": 30.0, "generate b": 20.5, "verify": 240.0, "report": 9.9},
            "per_trial": [
                {"trial": 0, "seed": 0, "source_seed": 0, "models_built": 400, "seconds": 1400.2, "skipped": False,
                 "phases": {"zoo": 1190.0, "generate a": 25.0, "generate b": 15.5, "verify": 160.0, "report": 9.0}},
                {"trial": 1, "seed": 1, "source_seed": 1, "models_built": 0, "seconds": 100.2, "skipped": False,
                 "phases": {"zoo": 10.0, "generate a": 5.0, "generate b": 5.0, "verify": 80.0, "report": 0.9}}]}
    (tmp_path / "results" / "perf").mkdir(parents=True)
    (tmp_path / "results" / "perf" / "trials-z.json").write_text(json.dumps(perf))
    (tmp_path / "README.md").write_text("<!-- board:start zoo=z table=cost -->\n<!-- board:end -->\n")
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "--results-dir", "results", "--readme", "README.md"]) == 0
    lines = (tmp_path / "README.md").read_text().splitlines()
    assert "| 0 | 0 (0) | 400 | 1,190 | 40 | 160 | 9 | 1,400 |" in lines
    assert "| 1 | 1 (1) | 0 | 10 | 10 | 80 | 1 | 100 |" in lines
    assert "| **all** |  | 400 | 1,200 | 50 | 240 | 10 | 1,500 |" in lines
    assert any("Test CPU, 2 usable CPUs" in line and "[perf/trials-z.json](results/perf/trials-z.json)" in line
               for line in lines)


def test_throughput_block_renders_the_benchmarks_paths_rounds_and_accuracy(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #26's before/after table as a generated block: each path's median and per-round seconds and speedups
    from perf/zoo_throughput.json, what `before` was, the matmul share and the accuracy against seed noise."""
    def path(wall: float, rounds: list[float], mph: float, gflops: float) -> dict:
        return {"wall_seconds": wall, "models_per_hour": mph, "images_per_second": 1000.0 * gflops, "gflops": gflops,
                "rounds": len(rounds), "runs": [{"wall_seconds": r} for r in rounds]}

    noise = {"mean": 0.004, "median": 0.0025, "max": 0.013, "n": 8}
    figures = {"models": 29, "nominal_images": 1275000, "usable_cpus": 2, "cpu_threads": 1,
               "paths": {"before": {**path(150.0, [140.0, 150.0, 160.0], 696.0, 30.0), "how": "code of 8fba4de0f00d"},
                         "workers": path(75.0, [70.0, 75.0, 80.0], 1392.0, 60.0),
                         "after": path(50.0, [50.0, 50.0, 50.0], 2088.0, 90.0)},
               "speedup": {"before": 1.0, "workers": 2.0, "after": 3.0},
               "speedup_per_round": {"before": [1.0, 1.0, 1.0], "workers": [2.0, 2.0, 2.0], "after": [2.8, 3.0, 3.2]},
               "matmul_job_threads": {"gflops": 100.0, "threads": 1}, "matmul_all_cores": {"gflops": 200.0, "threads": 2},
               "accuracy": {"abs_diff_from_before": {"after": {"mean": 0.003, "median": 0.002, "max": 0.01, "n": 29},
                                                     "workers": {"mean": 0.003, "median": 0.002, "max": 0.01, "n": 29}},
                            "seed_noise": noise},
               "errors": {}}
    (tmp_path / "results" / "perf").mkdir(parents=True)
    (tmp_path / "results" / "perf" / "zoo_throughput.json").write_text(json.dumps(
        {"command": "fpbench perf zoo_throughput", "figures": figures, "machine": {"torch": "2.14"}}))
    (tmp_path / "README.md").write_text("<!-- board:start zoo=quickstart table=throughput -->\n<!-- board:end -->\n")
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "--results-dir", "results", "--readme", "README.md"]) == 0
    text = (tmp_path / "README.md").read_text()
    assert ("| before | code of 8fba4de0f00d | 150.0 (140.0, 150.0, 160.0) | 696 | 30,000 | 30.0 "
            "| **1.00x** (1.00, 1.00, 1.00) |") in text
    assert "| after | worker processes and channels-last weights: the current default | 50.0 (50.0, 50.0, 50.0) | 2,088 " in text
    assert "**3.00x** (2.80, 3.00, 3.20)" in text and "`after` runs at 45% of the all-core rate" in text
    assert "seed-to-seed noise (models that differ only in their seed): mean 0.0040, median 0.0025, max 0.0130 (n=8)" in text
    assert main(["leaderboard", "--results-dir", "results", "--check"]) == 0  # the block is what the file gives
    figures["speedup"]["after"] = 2.5
    (tmp_path / "results" / "perf" / "zoo_throughput.json").write_text(json.dumps(
        {"command": "fpbench perf zoo_throughput", "figures": figures, "machine": {"torch": "2.14"}}))
    assert main(["leaderboard", "--results-dir", "results", "--check"]) == 1  # a stale block fails the check


def test_leaderboard_takes_the_results_tree_as_a_folder_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`fpbench leaderboard --check results/` checks that tree, as `--results-dir results/` does; two trees are refused."""
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "--check", "results/"]) == 0
    assert "OK: 0 problem(s) in results/" in capsys.readouterr().out
    assert main(["leaderboard", "--check", "elsewhere"]) == 2  # not a folder: the usage error, not the default tree
    assert main(["leaderboard", "results", "--results-dir", "local_results", "--check"]) == 2
    assert "names two results trees" in capsys.readouterr().err
