"""bench.report.trials and the leaderboard built on it: trials grouped into rows, paired comparisons
(bench.report.comparisons), ranks, readable variant labels and the below-target flag, on constructed result files whose
answers are known."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.metrics import BootstrapConfig
from bench.report import build_board, write_leaderboard
from bench.report import comparisons as cmp
from bench.report import trials as tr
from bench.report.leaderboard_text import leaderboard_markdown
from bench.report.variants import is_default, variant_label
from bench.results import make_result, result_path, write_result

N_BOOT = 400


def scores_for(kind: str, trial: int, n: int = 12) -> list[float]:
    """Per-suspect scores (n positives, then n negatives) of a method of kind ``kind`` in one trial.

    ``perfect``: positives 0.9+, negatives 0.1-: AUC 1. ``weak``: overlapping draws (AUC ~0.6-0.9).
    ``chance``: positives and negatives from one distribution (AUC ~0.5).
    The same (kind, trial) gives the same scores, whatever the method is called.
    """
    rng = random.Random(f"{kind}-{trial}")
    if kind == "perfect":
        return [round(0.9 + 0.1 * rng.random(), 4) for _ in range(n)] + [round(0.1 * rng.random(), 4) for _ in range(n)]
    if kind == "chance":
        return [round(rng.random(), 4) for _ in range(2 * n)]
    return [round(0.3 + 0.6 * rng.random(), 4) for _ in range(n)] + [round(0.6 * rng.random(), 4) for _ in range(n)]


def constructed_result(method: str, trial: int, scores: list[float], method_config: dict[str, Any] | None = None,
                       new_source: bool = True, dataset: str = "cifar10") -> dict[str, Any]:
    """A result of ``method`` in trial ``trial`` on zoo ``tiny``: the first half of ``scores`` are
    positives. With ``new_source`` the trial trains its own source (``zoo.source.seed`` = trial), as
    a sweep with ``trial_zoo_seed`` does, so every trial has its own config hash."""
    half = len(scores) // 2
    per_model = [{"model_id": f"m{i:03d}", "role": "positive" if i < half else "negative",
                  "attack": "prune" if i < half else None, "kind": None if i < half else "SAST",
                  "group": "prune" if i < half else "SAST", "score": s, "queries": 10}
                 for i, s in enumerate(scores)]  # fmt: skip
    config = {
        "seed": trial,
        "data": {"name": dataset},
        "zoo": {"name": "tiny", "source": {"arch": "convnet", "seed": trial if new_source else 0}},
        "eval": {"bootstrap": {"n": N_BOOT, "confidence": 0.95, "seed": 0}},
        "method": {"name": method, **(method_config or {})},
    }
    return make_result(
        seed=trial,
        method={"name": method, "version": "1", "access": "label", "config": method_config or {}},
        config=config,
        zoo={"name": "tiny", "manifest_sha256": "cd" * 32, "dataset": dataset,
             "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"},
             "source_id": f"src{trial}", "source_test_acc": 0.9},  # fmt: skip
        per_model=per_model,
        timing_s={"generate": 1.0, "verify": 0.5, "total": 1.5, "fingerprint_cached": False},
        bootstrap=BootstrapConfig(n=0),
        git_path=None,
    )


def write(root: Path, result: dict[str, Any]) -> None:
    name = result["method"]["name"]
    write_result(result, result_path(root, "tiny", name, result["config_sha256"], result["seed"]))


def rows_by_variant(root: Path) -> dict[str, dict[str, Any]]:
    return {row["variant"]: row for row in build_board(root).rows.to_dict("records")}


# --- rows and trials ---------------------------------------------------------------------------


def test_trials_that_differ_only_in_seeds_form_one_row(tmp_path: Path) -> None:
    for trial in range(3):
        write(tmp_path, constructed_result("ipguard", trial, scores_for("weak", trial)))
        write(tmp_path, constructed_result("ipguard", trial, scores_for("weak", trial), {"k": 5.0}))
    hashes = {p.name.split("-")[0] for p in (tmp_path / "runs" / "tiny" / "ipguard").iterdir()}
    assert len(hashes) == 6  # every trial has its own config hash (new source per trial)
    rows = rows_by_variant(tmp_path)
    assert sorted(rows) == ["ipguard", "ipguard[k=5.0]"]
    assert [rows[v]["trials"] for v in sorted(rows)] == [3, 3]
    aucs = [roc_auc_score([1] * 12 + [0] * 12, scores_for("weak", t)) for t in range(3)]
    assert rows["ipguard"]["auc"] == pytest.approx(np.mean(aucs))
    assert rows["ipguard"]["auc_std"] == pytest.approx(np.std(aucs, ddof=1))
    assert rows["ipguard"]["ci_over"] == "trials"
    assert rows["ipguard"]["auc_ci_low"] < rows["ipguard"]["auc"] < rows["ipguard"]["auc_ci_high"]
    assert rows["ipguard"]["benchmark"] == rows["ipguard[k=5.0]"]["benchmark"]  # same suspects
    assert rows["ipguard"]["config"] != rows["ipguard[k=5.0]"]["config"]


def test_spread_is_a_t_interval_over_finite_trials() -> None:
    stats = tr.spread([0.8, 0.9, math.nan, 1.0])
    assert (stats.n, stats.mean, stats.std) == (3, pytest.approx(0.9), pytest.approx(0.1))
    half = 4.302652729749464 * 0.1 / math.sqrt(3)  # t_{0.975, 2}
    assert stats.low == pytest.approx(0.9 - half) and stats.high == 1.0  # clipped to [0, 1]
    one = tr.spread([0.7])
    assert one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.low)
    assert math.isnan(tr.spread([math.nan]).mean)


# --- paired comparison (bench.report.comparisons on bench.stats) ------------------------------


def trials_of(kind: str, n_trials: int, shift: float = 0.0) -> dict[tr.TrialKey, dict[str, Any]]:
    out = {}
    for t in range(n_trials):
        scores = scores_for(kind, t)
        scores = [s + shift * (i < len(scores) // 2) for i, s in enumerate(scores)]
        out[(t, t)] = constructed_result(kind, t, scores)
    return out


def test_trial_pair_keeps_shared_suspects_and_clusters_by_group() -> None:
    a, b = constructed_result("a", 0, scores_for("weak", 0)), constructed_result("b", 0, scores_for("weak", 0))
    b["per_model"][0]["model_id"] = "other"  # not shared
    b["per_model"][1]["role"] = "negative"  # scored with another role: not shared
    pair = cmp.trial_pair(a, b)
    assert pair is not None and pair[0].model_ids == pair[1].model_ids and len(pair[0].model_ids) == 22
    negatives = [c for c, r in zip(pair[0].clusters, pair[0].roles) if r == 0]
    assert {c for c, r in zip(pair[0].clusters, pair[0].roles) if r == 1} == {"prune"} and sum(pair[0].roles) == 10
    assert len(set(negatives)) == len(negatives) == 12  # each negative its own unit, not its kind
    assert cmp.suspect_cluster({"model_id": "x", "role": "negative", "group": "SAST", "kind": "SAST"}) == "model:x"
    assert cmp.suspect_cluster({"model_id": "x", "role": "positive"}) == "model:x"  # no label: its own cluster
    lonely = constructed_result("a", 0, [0.5, 0.6])
    lonely["per_model"][1]["model_id"] = "other"
    assert cmp.trial_pair(lonely, a) is None  # the shared suspects hold no negative


def test_paired_comparison_known_answers() -> None:
    weak, perfect = trials_of("weak", 4), trials_of("perfect", 4)
    better = cmp.compare_rows(perfect, weak, N_BOOT, 0.95, 0)
    expected = np.mean([1 - roc_auc_score([1] * 12 + [0] * 12, scores_for("weak", t)) for t in range(4)])
    assert better.shared_trials == 4 and better.delta == pytest.approx(expected)
    assert better.low > 0 and better.p_value < 0.01
    same = cmp.compare_rows(weak, trials_of("weak", 4), N_BOOT, 0.95, 0)
    assert (same.delta, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    first = cmp.compare_rows(trials_of("weak", 3, shift=0.05), trials_of("weak", 3), N_BOOT, 0.95, 7)
    assert cmp.compare_rows(trials_of("weak", 3, shift=0.05), trials_of("weak", 3), N_BOOT, 0.95, 7) == first


def test_fewer_than_three_shared_trials_are_not_compared() -> None:
    perfect, weak = trials_of("perfect", 3), trials_of("weak", 3)
    two = cmp.compare_rows(perfect, {k: weak[k] for k in list(weak)[:2]}, N_BOOT, 0.95, 0)
    assert not two.compared and "2 shared trial(s)" in two.note and "at least 3" in two.note
    disjoint = cmp.compare_rows(perfect, {(9, 9): weak[(0, 0)]}, N_BOOT, 0.95, 0)
    assert not disjoint.compared and "0 shared trial(s)" in disjoint.note
    ranked = cmp.rank_benchmark([("p", perfect), ("w", weak), ("one", {(0, 0): weak[(0, 0)]})], N_BOOT, 0.95, 0)
    assert [(a, b) for a, b, _ in ranked.comparisons] == [("p", "w")]  # the 1-trial row is left out
    assert ranked.ranks == {"p": 1, "w": 2, "one": None}


# --- ranks -------------------------------------------------------------------------------------


def test_identical_methods_share_a_rank_and_a_dominant_one_ranks_alone(tmp_path: Path) -> None:
    for t in range(4):
        write(tmp_path, constructed_result("akh", t, scores_for("perfect", t)))
        write(tmp_path, constructed_result("ipguard", t, scores_for("weak", t)))
        write(tmp_path, constructed_result("sac", t, scores_for("weak", t)))  # identical to ipguard
    board = build_board(tmp_path)
    ranks = dict(zip(board.rows["variant"], board.rows["rank"]))
    assert ranks == {"akh": 1, "ipguard": 2, "sac": 2}
    pairs = {(r["a"], r["b"]): r for r in board.comparisons.to_dict("records")}
    assert len(pairs) == 3 and pairs[("akh", "ipguard")]["distinguishable"] == "yes"
    assert pairs[("akh", "ipguard")]["p_holm"] == pytest.approx(3 * pairs[("akh", "ipguard")]["p_value"])
    tie = pairs.get(("ipguard", "sac")) or pairs[("sac", "ipguard")]
    # n_boot: holm_resolution, 10 x 3 comparisons / 0.05
    assert tie["distinguishable"] == "no" and tie["delta_auc"] == 0.0 and tie["n_boot"] == max(N_BOOT, 600)
    assert tie["p_value"] == tie["p_holm"] == 1.0
    text = leaderboard_markdown(board)
    assert "## Paired comparisons" in text and "| akh | ipguard | 4 | +" in text


# --- variants and the paper column -------------------------------------------------------------


def test_variant_labels_name_what_differs_from_the_defaults() -> None:
    assert variant_label("adv_tra", {}, "12345678") == "adv_tra"
    assert variant_label("adv_tra", {"name": "adv_tra", "score": "detection_rate", "half_length": 2}, "x") == "adv_tra"
    assert variant_label("adv_tra", {"score": "agreement"}, "x") == "adv_tra[score=agreement]"
    assert variant_label("cae", {"pool_seeds": 1, "eps": 0.25, "dropout": 0.3}, "x") == "cae[eps=0.25,pool_seeds=1]"
    assert variant_label("cae", {"surrogate_archs": ("source",)}, "x") == "cae[surrogate_archs=[source]]"
    assert variant_label("not_registered", {"a": 1}, "12345678") == "not_registered[12345678]"
    assert is_default("ipguard", {"k": 10}) and not is_default("ipguard", {"k": 5})


def test_paper_column_only_on_default_configs(tmp_path: Path) -> None:
    for t in range(2):
        write(tmp_path, constructed_result("adv_tra", t, scores_for("perfect", t)))
        write(tmp_path, constructed_result("adv_tra", t, scores_for("weak", t), {"score": "agreement"}))
    rows = rows_by_variant(tmp_path)
    assert rows["adv_tra"]["paper"] == "1.00/1.00/1.00"
    assert rows["adv_tra[score=agreement]"]["paper"] == ""


# --- degenerate fingerprints -------------------------------------------------------------------


def test_row_below_its_target_is_ranked_and_marked(tmp_path: Path) -> None:
    for t in range(3):
        uap = constructed_result("uap", t, scores_for("perfect", t))
        met = t != 1
        uap["fingerprint"] = {"generation_target": {"name": "fooling_rate", "achieved": 0.8 if met else 0.31, "floor": 0.7,
                                         "met": met}}  # fmt: skip
        write(tmp_path, uap)
        akh = constructed_result("akh", t, scores_for("weak", t))
        akh["fingerprint"] = {"generation_target": None}  # no target: never flagged
        write(tmp_path, akh)
    rows = rows_by_variant(tmp_path)
    assert rows["uap"]["below_target"] and not rows["akh"]["below_target"]
    assert rows["uap"]["auc"] > rows["akh"]["auc"]
    assert (rows["uap"]["rank"], rows["akh"]["rank"]) == (1, 2)  # ranked like any row, and marked
    assert "fooling_rate 0.310 < floor 0.700 (seed=1,source_seed=1)" in rows["uap"]["target_note"]
    assert "1 of 3 trial(s)" in rows["uap"]["target_note"]
    md, csv = write_leaderboard(tmp_path)
    text = md.read_text(encoding="utf-8")
    assert "| uap ⚠1 |" in text and "- ⚠1 `uap` (zoo `tiny`" in text and "Not ranked." not in text
    assert "Ranked, and marked: the fingerprint is weaker than its config asks." in text
    uap_line = next(line for line in text.splitlines() if line.startswith("| tiny") and "uap" in line)
    assert uap_line.split(" | ")[4] == "1"  # the rank column (after bench and positives)
    assert ",uap,uap," in csv.read_text() and "True" in csv.read_text()
