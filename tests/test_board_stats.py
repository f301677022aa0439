"""The board's honest statistics (bench.report on bench.stats): TPR columns headed only by what the
negatives certify, ranks tested only from 3 trials (identical rows share one), below-target rows ranked
and marked, and the tie interval next to the AUC; on constructed result files with known answers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.metrics import BootstrapConfig
from bench.report import build_board, write_leaderboard
from bench.report.readme import update_readme
from bench.report.site import render_site
from bench.results import make_result, result_path, write_result
from bench.stats import RANK_LEGEND

ATTACKS = ("ftll", "rtal", "prune", "adv_train")
KINDS = ("SAST", "SADT", "DAST", "DADT")


def result(method: str, trial: int, n_neg: int, lift: float = 0.5, n_pos: int = 16, step: float | None = None,
           salt: str | None = None) -> dict[str, Any]:
    """A result on zoo `z` in trial `trial`: scores from `random.Random(salt or method, trial)`, positives
    lifted by `lift`; with `step`, every score is rounded to a multiple of it (coarse scores, many ties)."""
    rng = random.Random(f"{salt or method}-{trial}")
    per_model = []
    for i in range(n_pos + n_neg):
        positive = i < n_pos
        score = rng.random() * 0.6 + (lift if positive else 0.0)
        attack, kind = (ATTACKS[i % 4], None) if positive else (None, KINDS[i % 4])
        per_model.append({
            # positives are new models in every trial, negatives the same models in every trial
            "model_id": f"t{trial}p{i}" if positive else f"n{i}", "role": "positive" if positive else "negative",
            "attack": attack, "kind": kind, "group": attack or kind, "queries": 10,
            "score": round(score / step) * step if step else round(score, 4),
        })  # fmt: skip
    config = {"seed": trial, "zoo": {"name": "z", "source": {"seed": trial}},
              "eval": {"bootstrap": {"n": 300, "confidence": 0.95, "seed": 0}}, "method": {"name": method}}  # fmt: skip
    return make_result(
        seed=trial, method={"name": method, "version": "1", "access": "label", "config": {}}, config=config,
        zoo={"name": "z", "manifest_sha256": "ef" * 32, "dataset": "cifar10", "source_id": f"src{trial}",
             "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"}, "source_test_acc": 0.9},
        per_model=per_model, timing_s={"generate": 1.0, "verify": 0.5, "total": 1.5, "fingerprint_cached": False},
        bootstrap=BootstrapConfig(n=0), git_path=None,
    )  # fmt: skip


def write(root: Path, res: dict[str, Any]) -> None:
    write_result(res, result_path(root, "z", res["method"]["name"], res["config_sha256"], res["seed"]))


def table_head(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| zoo"))


def test_fifty_negatives_never_head_a_t1f_column(tmp_path: Path) -> None:
    for trial in range(3):
        write(tmp_path, result("akh", trial, n_neg=50))
    board = build_board(tmp_path)
    md, csv = write_leaderboard(tmp_path, board)
    text = md.read_text(encoding="utf-8")
    head = table_head(text)
    assert "T1%F" not in head and "| TPR@0FP |" in head and "| T10%F |" in head  # 50 certify 10 % (>= 29), not 1 %
    assert "FPR ≤ 5.8 % at 95 %, n− = 50" in text and "shown instead of T1%F" in text
    row = board.rows.iloc[0]
    assert row["t1f_label"] == "TPR@0FP" and row["t10f_label"] == "T10%F"
    assert row["t1f"] == row["tpr0fp"] and row["tpr0fp_fpr_upper"] == pytest.approx(1 - 0.05 ** (1 / 50))
    # The figure is the TPR at zero false positives: positives strictly above the highest negative.
    zero_fp = []
    for r in board.results.values():
        top = max(m["score"] for m in r["per_model"] if m["role"] == "negative")
        pos = [m["score"] for m in r["per_model"] if m["role"] == "positive"]
        zero_fp.append(sum(s > top for s in pos) / len(pos))
    assert row["tpr0fp"] == pytest.approx(sum(zero_fp) / len(zero_fp))
    assert "t1f_label" in csv.read_text().splitlines()[0]
    page = render_site(tmp_path, board)
    assert ">T1%F<" not in page and ">TPR@0FP<" in page and "FPR ≤ 5.8 % at 95 %, n− = 50" in page


def test_four_hundred_negatives_head_t1f(tmp_path: Path) -> None:
    for trial in range(3):
        write(tmp_path, result("akh", trial, n_neg=400))
    board = build_board(tmp_path)
    head = table_head(write_leaderboard(tmp_path, board)[0].read_text(encoding="utf-8"))
    assert "| T1%F | T10%F |" in head and "TPR@0FP" not in head
    row = board.rows.iloc[0]
    stored = [r["metrics"]["tpr_at_fpr"]["0.01"] for r in board.results.values()]
    assert row["t1f_label"] == "T1%F" and row["t1f"] == pytest.approx(sum(stored) / len(stored))
    assert ">T1%F<" in render_site(tmp_path, board)


def test_both_targets_collapse_to_one_column_and_the_readme_follows_the_rule(tmp_path: Path) -> None:
    for trial in range(3):
        write(tmp_path, result("akh", trial, n_neg=8))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- leaderboard:start -->\n<!-- leaderboard:end -->\n")
    update_readme(readme, tmp_path)
    block = readme.read_text(encoding="utf-8")
    head = table_head(block)
    assert head.count("TPR@0FP") == 1 and "T1%F" not in head and "T10%F" not in head


def test_identical_scores_share_rank_one_over_three_trials(tmp_path: Path) -> None:
    for trial in range(3):
        write(tmp_path, result("akh", trial, n_neg=50))
        write(tmp_path, result("sac", trial, n_neg=50, salt="akh"))  # the very same scores as akh
        write(tmp_path, result("uap", trial, n_neg=50, lift=0.0))  # chance
    board = build_board(tmp_path)
    ranks = dict(zip(board.rows["method"], board.rows["rank"]))
    assert ranks["akh"] == ranks["sac"] == 1
    pair = board.comparisons[(board.comparisons["a"].isin(["akh", "sac"])) & (board.comparisons["b"].isin(["akh", "sac"]))]
    assert list(pair["p_value"]) == [1.0] and list(pair["distinguishable"]) == ["no"]
    assert set(board.comparisons["p_holm"]) and (board.comparisons["p_holm"] >= board.comparisons["p_value"]).all()
    text = write_leaderboard(tmp_path, board)[0].read_text(encoding="utf-8")
    assert RANK_LEGEND in text and "p (Holm)" in text


@pytest.mark.parametrize("trials", [1, 2])
def test_fewer_than_three_trials_have_no_rank_and_the_board_says_so(tmp_path: Path, trials: int) -> None:
    for trial in range(trials):
        write(tmp_path, result("akh", trial, n_neg=20))
        write(tmp_path, result("uap", trial, n_neg=20, lift=0.0))
    board = build_board(tmp_path)
    assert board.rows["rank"].isna().all() and board.comparisons.empty
    text = write_leaderboard(tmp_path, board)[0].read_text(encoding="utf-8")
    assert "ranks are not tested below 3 trials" in text
    assert "Rank — on 2 row(s) with fewer than 3 trials" in text
    assert all(line.split(" | ")[4] == "—" for line in text.splitlines() if line.startswith("| z |"))
    page = render_site(tmp_path, board)
    assert "ranks are not tested below 3 trials" in page and '<td data-key="rank" class="number">—</td>' in page


def test_below_target_row_is_ranked_and_marked(tmp_path: Path) -> None:
    for trial in range(3):
        uap = result("uap", trial, n_neg=20)
        uap["fingerprint"] = {"generation_target": {"name": "fooling_rate", "achieved": 0.3, "floor": 0.7, "met": False}}
        write(tmp_path, uap)
    board = build_board(tmp_path)
    row = board.rows.iloc[0]
    assert row["rank"] == 1 and row["below_target"]
    text = write_leaderboard(tmp_path, board)[0].read_text(encoding="utf-8")
    assert "| 1 | uap ⚠1 |" in text and "- ⚠1 `uap`" in text


def test_tie_interval_shows_for_a_row_with_many_ties(tmp_path: Path) -> None:
    for trial in range(3):
        write(tmp_path, result("akh", trial, n_neg=20, lift=0.1, step=0.25))  # scores on 4 levels: many ties
        write(tmp_path, result("sac", trial, n_neg=20, lift=0.3))  # continuous: no ties
    board = build_board(tmp_path)
    rows = board.rows.set_index("method")
    coarse, fine = rows.loc["akh"], rows.loc["sac"]
    assert coarse["tie_fraction"] > 0.2 and fine["tie_fraction"] == 0.0
    assert coarse["auc_ties_high"] - coarse["auc_ties_low"] == pytest.approx(coarse["tie_fraction"])
    assert coarse["auc_ties_low"] < coarse["auc"] < coarse["auc_ties_high"]
    text = write_leaderboard(tmp_path, board)[0].read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if "| akh |" in line)
    assert f"(ties {coarse['auc_ties_low']:.3f}–{coarse['auc_ties_high']:.3f})" in line
    assert "(ties" not in next(line for line in text.splitlines() if "| sac |" in line)
    assert f"(ties {coarse['auc_ties_low']:.3f}–{coarse['auc_ties_high']:.3f})" in render_site(tmp_path, board)
    assert pd.notna(coarse["rank"])
