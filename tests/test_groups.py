"""bench.report.groups: per-group means over trials and the two separation checks, on constructed
result files whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.metrics import BootstrapConfig
from bench.report import build_board
from bench.report.groups import group_tables, groups_markdown, write_group_tables
from bench.results import make_result, result_path, write_result

# (group, role, scores per trial): trial 0 and trial 1
SUSPECTS = {
    "ftll": ("positive", [[1.0, 0.8], [0.9, 0.9]]),
    "prune(rate=0.8)": ("positive", [[0.5, 0.3], [0.2, 0.4]]),
    "SAST": ("negative", [[0.1, 0.35], [0.0, 0.2]]),
    "DAST": ("negative", [[0.0, 0.0], [0.1, 0.1]]),
}


def _result(trial: int) -> dict:
    per_model = []
    for group, (role, trials) in SUSPECTS.items():
        for i, score in enumerate(trials[trial]):
            per_model.append({"model_id": f"{group}-{i}", "role": role, "attack": group if role == "positive" else None,
                              "kind": group if role == "negative" else None, "group": group, "score": score,
                              "queries": 10})  # fmt: skip
    config = {"seed": trial, "data": {"name": "digits"}, "zoo": {"name": "tiny", "source": {"seed": trial}},
              "eval": {"bootstrap": {"n": 100, "confidence": 0.95, "seed": 0}}, "method": {"name": "akh"}}  # fmt: skip
    return make_result(
        seed=trial, method={"name": "akh", "version": "2", "access": "label", "config": {}}, config=config,
        zoo={"name": "tiny", "manifest_sha256": "ab" * 32, "dataset": "digits",
             "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"},
             "source_id": f"src{trial}", "source_test_acc": 0.9},
        per_model=per_model, timing_s={"generate": 1.0, "verify": 0.5, "total": 1.5, "fingerprint_cached": False},
        bootstrap=BootstrapConfig(n=0), git_path=None,
    )  # fmt: skip


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    for trial in (0, 1):
        result = _result(trial)
        write_result(result, result_path(tmp_path, "tiny", "akh", result["config_sha256"], trial))
    return tmp_path


def test_group_means_over_trials(results_dir: Path) -> None:
    groups, separations = group_tables(build_board(results_dir))
    by_group = {r["group"]: r for r in groups.to_dict("records")}
    assert set(by_group) == set(SUSPECTS)
    # ftll: trial means 0.9 and 0.9 -> 0.9 ± 0
    assert by_group["ftll"]["mean"] == pytest.approx(0.9) and by_group["ftll"]["std"] == pytest.approx(0.0)
    # prune: trial means 0.4 and 0.3 -> 0.35, sd of (0.4, 0.3) = 0.0707
    assert by_group["prune(rate=0.8)"]["mean"] == pytest.approx(0.35)
    assert by_group["prune(rate=0.8)"]["std"] == pytest.approx(math.sqrt(0.005))
    assert by_group["SAST"]["mean"] == pytest.approx((0.225 + 0.1) / 2)
    assert {r["trials"] for r in by_group.values()} == {2} and {r["n"] for r in by_group.values()} == {2}
    sep = separations.to_dict("records")[0]
    # trial 0: lowest positive 0.3 < highest negative 0.35; trial 1: 0.2 > 0.2 fails (a tie is not above)
    assert sep["trials_separated"] == 0
    # group means: lowest positive prune 0.35 > highest negative SAST 0.1625
    assert sep["lowest_positive_group"] == "prune(rate=0.8)" and sep["highest_negative_group"] == "SAST"
    assert bool(sep["groups_separated"]) is True


def test_trials_separated_counts_auc_one(tmp_path: Path) -> None:
    for trial in (0, 1):
        result = _result(trial)
        for m in result["per_model"]:  # lift every positive above every negative
            if m["role"] == "positive":
                m["score"] += 1.0
        result = make_result(seed=trial, method=result["method"], config=result["config"], zoo=result["zoo"],
                             per_model=result["per_model"], timing_s=result["timing_s"], bootstrap=BootstrapConfig(n=0),
                             git_path=None)  # fmt: skip
        write_result(result, result_path(tmp_path, "tiny", "akh", result["config_sha256"], trial))
    _, separations = group_tables(build_board(tmp_path))
    assert int(separations.iloc[0]["trials_separated"]) == 2


def test_group_files_are_written_and_deterministic(results_dir: Path) -> None:
    board = build_board(results_dir)
    md, csv = write_group_tables(results_dir, board)
    first = md.read_bytes(), csv.read_bytes()
    write_group_tables(results_dir, build_board(results_dir))
    assert (md.read_bytes(), csv.read_bytes()) == first
    text = md.read_text()
    assert "| akh | 2 | 0.900 ± 0.000 |" in text and "0/2" in text and "| yes |" in text
    groups, separations = group_tables(board)
    assert groups_markdown(groups, separations) == text
