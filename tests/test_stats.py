"""bench.stats and bench.stats_sim: FPR certification, tie credit, cross-fitted decisions, the design-aware
paired bootstrap, Holm and ranks, on hand-built cases with known answers and on simulated benchmarks
with a known truth."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import roc_auc_score

from bench.metrics import tpr_at_fpr
from bench.stats import (
    RANK_LEGEND,
    TrialScores,
    certifies,
    crossfit_decision,
    fpr_upper_bound,
    holm,
    paired_difference,
    ranks,
    tie_summary,
    tpr_column,
    weighted_auc,
)
from bench.stats_sim import SimDesign, independent_trials_bootstrap, main, separation_rate, simulate_benchmark


def test_fpr_upper_bound_is_one_sided_clopper_pearson():
    assert fpr_upper_bound(0, 50) == pytest.approx(1 - 0.05 ** (1 / 50), abs=1e-12)  # 0.0582
    assert fpr_upper_bound(0, 300) == pytest.approx(3 / 300, rel=0.01)  # the rule of three
    for k, n in [(1, 50), (4, 400), (7, 20)]:
        # The defining property: at the bound, seeing <= k false positives has probability 1 - confidence.
        assert binom.cdf(k, n, fpr_upper_bound(k, n)) == pytest.approx(0.05, abs=1e-9)
    assert fpr_upper_bound(50, 50) == 1.0
    with pytest.raises(ValueError, match="need 0 <= k <= n"):
        fpr_upper_bound(51, 50)
    with pytest.raises(ValueError, match="confidence"):
        fpr_upper_bound(0, 50, confidence=1.0)


def test_certifies_needs_about_300_negatives_for_1_percent_and_30_for_10():
    assert not certifies(0.01, 298) and certifies(0.01, 299)  # ln(0.05) / ln(0.99) = 298.07
    assert not certifies(0.10, 28) and certifies(0.10, 29)  # ln(0.05) / ln(0.90) = 28.4
    assert not certifies(0.01, 50) and certifies(0.10, 50)


def test_tpr_column_labels_50_negatives_at_1_percent_as_tpr_at_zero_false_positives():
    rng = np.random.default_rng(0)
    pos, neg50, neg400 = rng.normal(1.5, 1, 56), rng.normal(0, 1, 50), rng.normal(0, 1, 400)
    low = tpr_column(pos, neg50, 0.01)
    assert low["label"] == "TPR@0FP" and not low["certifiable"] and not low["certified"]
    assert low["tpr"] == pytest.approx(np.mean(pos > neg50.max())) and low["false_positives"] == 0
    assert low["fpr"] == 0.0 and low["fpr_upper"] == pytest.approx(0.0582, abs=1e-4) and low["n_negative"] == 50
    high = tpr_column(pos, neg400, 0.01)
    labels = np.r_[np.ones(56), np.zeros(400)]
    assert high["label"] == "T1%F" and high["certifiable"]
    assert high["tpr"] == tpr_at_fpr(np.r_[pos, neg400], labels, 0.01)  # the metrics rule, no interpolation
    assert high["fpr"] <= 0.01 and high["fpr_upper"] == fpr_upper_bound(high["false_positives"], 400)
    assert tpr_column(pos, neg50, 0.1)["label"] == "T10%F"


def test_tpr_column_with_ties_at_the_top_of_the_negatives():
    neg = [0.9] * 5 + [0.1] * 395  # the five highest negatives tie: the next ROC point has 5 false positives
    col = tpr_column([0.95, 0.9, 0.9, 0.5], neg, 0.01)  # 1 % of 400 allows 4, so that point is out of reach
    assert col["label"] == "T1%F" and col["false_positives"] == 0 and col["tpr"] == 0.25  # tied positives miss
    assert col["certified"] and col["fpr_upper"] == pytest.approx(1 - 0.05 ** (1 / 400))
    four = tpr_column([0.95, 0.5], [0.9] * 4 + [0.1] * 396, 0.01)  # 4 false positives of 400: FPR 1 %, bound 2.3 %
    assert four["false_positives"] == 4 and four["tpr"] == 1.0 and not four["certified"]
    assert four["fpr_upper"] == pytest.approx(0.0227, abs=1e-4)
    assert tpr_column([1.0, 0.2], [1.0] * 50, 0.01)["tpr"] == 0.0  # every negative at the top score: nothing shown


def test_tie_summary_on_a_hand_made_case_and_against_sklearn():
    # Pairs: (0,0) tie twice, (0,0.5) loss twice, (1,0) and (1,0.5) wins: 2 wins, 2 ties of 6.
    out = tie_summary([0, 0, 1], [0, 0.5])
    assert out == {"tie_fraction": 1 / 3, "auc": 0.5, "auc_ties_as_losses": 1 / 3, "auc_ties_as_wins": 2 / 3,
                   "pairs": 6}  # fmt: skip
    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 4, 56) / 4, rng.integers(0, 3, 50) / 4
    out = tie_summary(pos, neg)
    assert out["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(56), np.zeros(50)], np.r_[pos, neg]), abs=1e-12)
    ties = np.mean(pos[:, None] == neg[None, :])
    assert out["tie_fraction"] == pytest.approx(ties, abs=1e-12)
    assert out["auc_ties_as_wins"] - out["auc_ties_as_losses"] == pytest.approx(ties, abs=1e-12)


def test_weighted_auc_is_the_auc_of_the_repeated_sample():
    rng = np.random.default_rng(2)
    pos, neg = rng.integers(0, 5, 20).astype(float), rng.integers(0, 4, 15).astype(float)
    w_pos, w_neg = rng.integers(0, 3, 20), rng.integers(0, 3, 15)
    repeated = tie_summary(np.repeat(pos, w_pos), np.repeat(neg, w_neg))["auc"]
    assert weighted_auc(pos, neg, w_pos, w_neg) == pytest.approx(repeated, abs=1e-12)
    labels, weights = np.r_[np.ones(20), np.zeros(15)], np.r_[w_pos, w_neg]
    expected = roc_auc_score(labels, np.r_[pos, neg], sample_weight=weights)
    assert weighted_auc(pos, neg, w_pos, w_neg) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="positive sum"):
        weighted_auc(pos, neg, np.zeros(20), w_neg)


def test_crossfit_decision_on_hand_computable_cases():
    # Leave-one-out over negatives 0 x 9 and one 1: the fold holding the 1 calibrates on zeros (threshold 0,
    # so the 1 is a false positive); the nine others calibrate on a set holding the 1 (threshold 1).
    out = crossfit_decision([0.5, 2.0], [0.0] * 9 + [1.0], 0.0, folds=10)
    assert out["false_positives"] == 1 and out["fpr"] == 0.1 and out["n_negative"] == 10
    assert sorted(out["thresholds"]) == [0.0] + [1.0] * 9
    assert out["tpr"] == pytest.approx((9 * 0.5 + 1.0) / 10)  # positives 0.5 and 2.0 against 1; both against 0
    tied = crossfit_decision([0.4, 0.6, 0.7], [0.5] * 20, 0.1, folds=5)  # every threshold is 0.5; 0.5 > 0.5 is no
    assert tied["fpr"] == 0.0 and tied["tpr"] == pytest.approx(2 / 3) and tied["thresholds"] == [0.5] * 5
    rng = np.random.default_rng(4)
    pos, neg = rng.normal(1, 1, 56), rng.normal(0, 1, 50)
    assert crossfit_decision(pos, neg, 0.1, seed=7) == crossfit_decision(pos, neg, 0.1, seed=7)
    for folds in (1, 51):
        with pytest.raises(ValueError, match="2 <= folds <= n_negative"):
            crossfit_decision(pos, neg, 0.1, folds=folds)


def trials_of(scores: np.ndarray, n_pos: int, clusters: list[str] | None = None) -> list[TrialScores]:
    """TrialScores per row of ``scores`` (positives first); negatives ``n<j>`` are the same in every trial."""
    ids = [f"p{i}" for i in range(n_pos)] + [f"n{j}" for j in range(scores.shape[1] - n_pos)]
    roles = [1] * n_pos + [0] * (scores.shape[1] - n_pos)
    return [TrialScores([f"t{t}{m}" if m[0] == "p" else m for m in ids], roles, row, clusters)
            for t, row in enumerate(scores)]  # fmt: skip


def test_identical_scores_give_zero_difference_p_one_and_a_shared_rank():
    a, _ = simulate_benchmark(np.random.default_rng(5))
    same = paired_difference(a, a, n_boot=300)
    assert (same["diff"], same["low"], same["high"], same["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    b = [TrialScores(t.model_ids, t.roles, np.asarray(t.scores) + 1.0, t.clusters) for t in a]  # A shifted: same ranks
    rows = {"A": a, "A'": b, "C": [TrialScores(t.model_ids, t.roles, -np.asarray(t.scores), t.clusters) for t in a]}
    names = list(rows)
    pairs = {(x, y): paired_difference(rows[x], rows[y], n_boot=300) for x in names for y in names if x < y}
    adjusted = holm({f"{x}|{y}": r["p_value"] for (x, y), r in pairs.items()})

    def better(x: str, y: str) -> bool:
        key, sign = ((x, y), 1) if x < y else ((y, x), -1)
        return adjusted[f"{key[0]}|{key[1]}"] < 0.05 and sign * pairs[key]["diff"] > 0

    assert ranks(names, better) == {"A": 1, "A'": 1, "C": 3}


def test_paired_difference_matches_per_trial_metrics_and_keys_by_model_id():
    a, b = simulate_benchmark(np.random.default_rng(6), margin=0.05)
    expected = np.mean([weighted_auc(np.asarray(x.scores)[:56], np.asarray(x.scores)[56:])
                        - weighted_auc(np.asarray(y.scores)[:56], np.asarray(y.scores)[56:]) for x, y in zip(a, b)])  # fmt: skip
    out = paired_difference(a, b, n_boot=500)
    assert out["diff"] == pytest.approx(expected, abs=1e-12) and out["low"] <= out["diff"] <= out["high"]
    assert (out["trials"], out["positive_clusters"], out["negative_clusters"]) == (5, 12, 50)
    tpr = paired_difference(a, b, statistic="tpr", fpr_target=0.1, n_boot=200)
    assert tpr["diff"] == pytest.approx(np.mean([tpr_at_fpr(x.scores, x.roles, 0.1) - tpr_at_fpr(y.scores, y.roles, 0.1)
                                                 for x, y in zip(a, b)]), abs=1e-12)  # fmt: skip
    order = np.random.default_rng(7).permutation(106)  # b's suspects listed in another order: the same answer
    shuffled = [TrialScores([t.model_ids[i] for i in order], np.asarray(t.roles)[order], np.asarray(t.scores)[order],
                            [t.clusters[i] for i in order]) for t in b]  # fmt: skip
    assert paired_difference(a, shuffled, n_boot=500) == out


def test_shared_negatives_are_drawn_once_per_replicate():
    # Five copies of one trial, same suspects: the design-aware interval is as wide as one trial's (the copies
    # add no information); a bootstrap drawing each trial's negatives afresh narrows it by about sqrt(5).
    rng = np.random.default_rng(8)
    one = np.r_[rng.normal(0, 1, 20), rng.normal(0, 1, 20)][None, :]
    a1, b1 = trials_of(one, 20), trials_of(one[:, ::-1].copy(), 20)
    five = [TrialScores(a1[0].model_ids, a1[0].roles, a1[0].scores)] * 5
    five_b = [TrialScores(b1[0].model_ids, b1[0].roles, b1[0].scores)] * 5
    width = {name: r["high"] - r["low"] for name, r in [
        ("one", paired_difference(a1, b1, n_boot=4000)), ("five", paired_difference(five, five_b, n_boot=4000)),
        ("naive", independent_trials_bootstrap(five, five_b, n_boot=4000))]}  # fmt: skip
    print(f"interval widths: {width}")
    assert width["five"] == pytest.approx(width["one"], rel=0.1)
    assert width["naive"] < 0.6 * width["one"]


def test_paired_difference_rejects_mismatched_inputs():
    a, b = simulate_benchmark(np.random.default_rng(9))
    with pytest.raises(ValueError, match="same trials"):
        paired_difference(a, b[:4])
    with pytest.raises(ValueError, match="different suspects"):
        paired_difference(a, [TrialScores(list(t.model_ids[:-1]) + ["other"], t.roles, t.scores, t.clusters) for t in b])
    moved = list(a[1].clusters)
    moved[-1] = "cfg0"  # a shared negative joins another cluster in trial 1
    with pytest.raises(ValueError, match="one role and one cluster"):
        paired_difference(a, [b[0], TrialScores(b[1].model_ids, b[1].roles, b[1].scores, moved), *b[2:]])
    with pytest.raises(ValueError, match="fpr_target"):
        paired_difference(a, b, statistic="tpr")
    with pytest.raises(ValueError, match="choose one of"):
        paired_difference(a, b, statistic="aruc")
    with pytest.raises(ValueError, match="both 1"):
        TrialScores(["x", "y"], [1, 1], [0.0, 1.0])


def test_holm_textbook_example():
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    assert holm({"H1": 0.01, "H2": 0.04, "H3": 0.03, "H4": 0.005}) == pytest.approx(
        {"H1": 0.03, "H2": 0.06, "H3": 0.06, "H4": 0.02})
    assert holm({"a": 0.5, "b": 0.6}) == {"a": 1.0, "b": 1.0}  # capped at 1
    rng = np.random.default_rng(10)
    raw = {f"h{i}": float(p) for i, p in enumerate(rng.uniform(0, 0.2, 12))}
    adjusted = holm(raw)
    order = sorted(raw, key=raw.get)
    assert all(adjusted[x] <= adjusted[y] for x, y in zip(order, order[1:]))  # monotone
    assert all(raw[k] <= adjusted[k] <= min(1.0, 12 * raw[k]) for k in raw)  # between raw and Bonferroni
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm({"a": math.nan})


def test_ranks_count_the_rows_significantly_better():
    shown = {("A", "C"), ("B", "C"), ("A", "D")}  # A beats C and D, B beats C; A and B not told apart
    assert ranks(["A", "B", "C", "D"], lambda x, y: (x, y) in shown) == {"A": 1, "B": 1, "C": 3, "D": 2}
    assert "1 + the number of rows significantly better" in RANK_LEGEND
    with pytest.raises(ValueError, match="antisymmetric"):
        ranks(["A", "B"], lambda x, y: True)
    with pytest.raises(ValueError, match="unique"):
        ranks(["A", "A"], lambda x, y: False)


def test_simulated_benchmark_has_the_published_shape():
    a, b = simulate_benchmark(np.random.default_rng(11), SimDesign(zero_below=0.0))
    assert len(a) == len(b) == 5
    assert all(sum(t.roles) == 56 and len(t.roles) == 106 for t in a)
    assert len({c for t in a for c, r in zip(t.clusters, t.roles) if r == 1}) == 12
    negatives = [{m for m, r in zip(t.model_ids, t.roles) if r == 0} for t in a]
    assert all(n == negatives[0] for n in negatives) and len(negatives[0]) == 50  # shared by every trial
    assert tie_summary(np.asarray(a[0].scores)[:56], np.asarray(a[0].scores)[56:])["tie_fraction"] > 0.05


def test_identical_methods_are_rarely_separated_and_less_often_than_by_the_naive_bootstrap():
    aware = separation_rate(0.0, runs=200, n_boot=300, seed=0)
    naive = separation_rate(0.0, runs=200, n_boot=300, seed=0, compare=independent_trials_bootstrap)
    ties = separation_rate(0.0, runs=200, n_boot=300, seed=1, design=SimDesign(zero_below=0.0))
    print(f"false separations at 5 %: design-aware {aware['rate']:.3f}, with ties {ties['rate']:.3f}, "
          f"independent per trial {naive['rate']:.3f} (200 benchmarks each)")
    assert aware["rate"] <= 0.09 and ties["rate"] <= 0.09  # 5 % plus binomial slack for 200 runs
    assert naive["rate"] > aware["rate"] + 0.1  # measured about 0.35 vs 0.06


def test_a_large_margin_is_detected_and_the_simulator_hits_its_margin():
    big = separation_rate(0.10, runs=40, n_boot=300, seed=2)
    assert big["rate"] >= 0.8 and big["mean_diff"] == pytest.approx(0.10, abs=0.03)


def test_cli_prints_a_generated_block(capsys):
    assert main(["simulate", "--runs", "2", "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<!-- generated: python -m bench.stats_sim simulate --runs 2 --n-boot 20 --seed 0 -->")
    assert out.rstrip().endswith("<!-- end generated -->") and "| identical methods | design-aware |" in out


def test_bench_stats_imports_neither_torch_nor_pandas():
    code = "import sys, bench.stats, bench.stats_sim; print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
