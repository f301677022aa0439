"""bench.metrics.aruc: the area under the robustness-uniqueness curves (docs/metrics.md, "ARUC")."""

from __future__ import annotations

import numpy as np
import pytest

from bench.metrics import aruc, compute_metrics
from bench.results import check_result, make_result


def brute_force_aruc(scores: np.ndarray, labels: np.ndarray, points: int = 200_001) -> float:
    """The definition read literally: min-max map, then the mean of min(R, U) over a fine tau grid on [0, 1]."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    u = (s - s.min()) / (s.max() - s.min())
    taus = np.linspace(0.0, 1.0, points)
    robustness = (u[y == 1][None, :] >= taus[:, None]).mean(1)
    uniqueness = (u[y == 0][None, :] < taus[:, None]).mean(1)
    curve = np.minimum(robustness, uniqueness)
    return float(np.sum((curve[1:] + curve[:-1]) / 2) * (taus[1] - taus[0]))


def test_perfect_separation_at_the_range_ends_is_one() -> None:
    # oracle_label's scores: every positive 1.0, every negative 0.0
    assert aruc([1.0, 1.0, 1.0, 0.0, 0.0], [1, 1, 1, 0, 0]) == 1.0
    assert aruc([7.0, 7.0, -3.0], [1, 1, 0]) == 1.0  # any two levels: min-max puts them at 0 and 1


def test_perfect_separation_with_a_gap_is_the_gap_width() -> None:
    # negatives at 0 and 0.2, positives at 0.7 and 1.0: min(R, U) = 1 exactly on (0.2, 0.7]
    got = aruc([1.0, 0.7, 0.2, 0.0], [1, 1, 0, 0])
    # (0, 0.2]: R 1, U 1/2; (0.2, 0.7]: R 1, U 1; (0.7, 1]: R 1/2, U 1
    assert got == pytest.approx(0.2 * 0.5 + 0.5 * 1.0 + 0.3 * 0.5, abs=1e-12)


def test_hand_computed_small_case() -> None:
    # positives 1.0, 0.5; negatives 0.0, 0.25 (already on [0, 1]):
    # (0, .25]: R 1, U 1/2 -> .125; (.25, .5]: R 1, U 1 -> .25; (.5, 1]: R 1/2, U 1 -> .25
    assert aruc([1.0, 0.5, 0.0, 0.25], [1, 1, 0, 0]) == pytest.approx(0.625, abs=1e-12)


def test_identical_scores_give_zero() -> None:
    assert aruc([0.4] * 6, [1, 1, 1, 0, 0, 0]) == 0.0


def test_identical_distributions_are_far_from_one() -> None:
    # positives and negatives take the same values: at every tau, R + U = 1 exactly, so min(R, U) <= 1/2
    values = [0.0, 0.1, 0.3, 0.6, 1.0]
    got = aruc(values + values, [1] * 5 + [0] * 5)
    assert got == pytest.approx(brute_force_aruc(np.array(values * 2), np.array([1] * 5 + [0] * 5)), abs=1e-4)
    assert got <= 0.5


def test_reversed_scores_give_zero() -> None:
    # every positive below every negative: no threshold keeps a positive and drops a negative at once
    assert aruc([0.0, 0.1, 0.9, 1.0], [1, 1, 0, 0]) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_equals_brute_force_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_pos, n_neg = rng.integers(3, 40, 2)
    pos = rng.normal(0.8, 0.5, n_pos)
    neg = rng.normal(0.0, 0.5, n_neg)
    if seed % 2:  # ties between and within classes, as label-agreement scores have
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    scores, labels = np.r_[pos, neg], np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    assert aruc(scores, labels) == pytest.approx(brute_force_aruc(scores, labels), abs=1e-3)


def test_invariant_to_order_and_positive_affine_maps() -> None:
    rng = np.random.default_rng(3)
    scores = np.r_[rng.normal(1, 1, 30), rng.normal(0, 1, 25)]
    labels = np.r_[np.ones(30, int), np.zeros(25, int)]
    base = aruc(scores, labels)
    order = rng.permutation(scores.size)
    assert aruc(scores[order], labels[order]) == pytest.approx(base, abs=1e-12)
    assert aruc(3.5 * scores - 40.0, labels) == pytest.approx(base, abs=1e-12)  # e.g. SAC's score range (<= 0)
    # not invariant to every monotone map: ARUC measures threshold margins, not the ranking (unlike AUC)
    assert aruc(np.exp(3 * scores), labels) != pytest.approx(base, abs=1e-3)


def test_rejects_bad_inputs_like_auc() -> None:
    with pytest.raises(ValueError, match="both classes"):
        aruc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        aruc([0.1, float("nan")], [1, 0])


def test_in_metrics_and_rechecked() -> None:
    scores, labels = [1.0, 0.5, 0.0, 0.25], [1, 1, 0, 0]
    metrics = compute_metrics(scores, labels, None)
    assert metrics["aruc"] == pytest.approx(0.625, abs=1e-12)
    per_model = [{"model_id": f"m{i}", "role": "positive" if y else "negative", "attack": "ftll" if y else None,
                  "kind": None if y else "SAST", "group": "ftll" if y else "SAST", "score": s, "queries": 4}
                 for i, (s, y) in enumerate(zip(scores, labels))]
    result = make_result(seed=0, method={"name": "akh", "version": "2", "access": "label", "config": {}},
                         config={"zoo": "z"}, zoo={"name": "z", "manifest_sha256": "ab" * 32, "dataset": "digits",
                                                   "split_hashes": {"owner": "o", "attacker": "a", "independent": "i",
                                                                    "test": "t"},
                                                   "source_id": "s", "source_test_acc": 0.9},
                         per_model=per_model, timing_s={"generate": 0.0, "verify": 0.0, "total": 0.0,
                                                        "fingerprint_cached": False}, git_path=None)
    assert check_result(result) == []
    result["metrics"]["aruc"] = 0.5
    assert any("metrics.aruc" in p for p in check_result(result))
    del result["metrics"]["aruc"]  # files written before ARUC existed stay valid
    assert check_result(result) == []
