"""bench.metrics: equality with scikit-learn (ties included), hand-made cases, CIs, groups."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from bench.metrics import BootstrapConfig, auc, compute_metrics, format_fpr, roc_points, tpr_at_fpr

# A handful of values, so that ties within and across classes are frequent.
TIED_VALUES = [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.9, 1.0]


@st.composite
def scored_suspects(draw: st.DrawFn) -> tuple[list[float], list[int]]:
    n = draw(st.integers(min_value=2, max_value=60))
    scores = draw(st.lists(st.sampled_from(TIED_VALUES), min_size=n, max_size=n))
    labels = draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n))
    labels[0], labels[1] = 1, 0  # both classes present
    return scores, labels


@settings(max_examples=150, deadline=None, database=None)  # no .hypothesis/ folder in the repo
@given(scored_suspects())
def test_matches_sklearn_with_ties(data: tuple[list[float], list[int]]) -> None:
    scores, labels = data
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    # drop_intermediate=False: the default drops collinear ROC points, which can lower the
    # non-interpolated TPR at an FPR bound (a dropped point may be the last one under the bound).
    want_fpr, want_tpr, want_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    for target in (0.01, 0.1, 0.3):
        want = float(want_tpr[want_fpr <= target].max())
        assert tpr_at_fpr(scores, labels, target) == pytest.approx(want, abs=1e-9)
    fpr, tpr, thresholds = roc_points(scores, labels)
    np.testing.assert_allclose(fpr, want_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, want_tpr, atol=1e-12)
    np.testing.assert_array_equal(thresholds, want_thresholds)


def test_continuous_scores_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(size=500) * 50 + labels  # large magnitudes: no sigmoid squashing here
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


@pytest.mark.parametrize(
    ("scores", "want_auc", "want_t1f"),
    [
        ([0.9, 0.8, 0.7, 0.1, 0.2, 0.3], 1.0, 1.0),  # perfect separation
        ([0.1, 0.2, 0.3, 0.9, 0.8, 0.7], 0.0, 0.0),  # reversed
        ([0.5] * 6, 0.5, 0.0),  # all tied: one diagonal segment
    ],
)
def test_hand_made_cases(scores: list[float], want_auc: float, want_t1f: float) -> None:
    labels = [1, 1, 1, 0, 0, 0]
    assert auc(scores, labels) == want_auc
    assert tpr_at_fpr(scores, labels, 0.01) == want_t1f


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, 0.2], [1, 1], "both classes"),
        ([0.1, 0.2], [0, 0], "both classes"),
        ([0.1, float("nan")], [1, 0], "NaN"),
        ([0.1, 0.2], [1, 2], "0 .negative. or 1"),
        ([0.1, 0.2, 0.3], [1, 0], "differ in length"),
    ],
)
def test_invalid_inputs_raise(scores: list[float], labels: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        auc(scores, labels)


def synthetic(n_pos: int = 40, n_neg: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(1.0, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)]
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    groups = [("FTLL", "prune")[i % 2] for i in range(n_pos)] + [("SAST", "DADT")[i % 2] for i in range(n_neg)]
    return scores, labels, groups


def test_compute_metrics_shape_and_json() -> None:
    scores, labels, groups = synthetic()
    m = compute_metrics(scores, labels, groups, bootstrap=BootstrapConfig(n=50))
    assert set(m) == {"auc", "aruc", "tpr_at_fpr", "n_positive", "n_negative", "resolution_note", "ci", "groups", "roc"}
    assert list(m["tpr_at_fpr"]) == ["0.01", "0.1"] == list(m["ci"]["tpr_at_fpr"])
    assert (m["n_positive"], m["n_negative"]) == (40, 40)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert format_fpr(0.01) == "0.01" and format_fpr(0.1) == "0.1"


def test_resolution_note() -> None:
    scores, labels, groups = synthetic(n_neg=40)
    note = compute_metrics(scores, labels, groups, bootstrap=BootstrapConfig(n=0))["resolution_note"]
    assert "40 negatives" in note and "0.01" in note and "fewer negatives than 1/FPR" in note
    assert "0.1 " not in note  # 40 >= 1/0.1: T10%F is resolved
    scores, labels, groups = synthetic(n_neg=100)
    assert compute_metrics(scores, labels, groups, bootstrap=BootstrapConfig(n=0))["resolution_note"] is None


def test_bootstrap_contains_estimate_and_is_deterministic() -> None:
    scores, labels, groups = synthetic(n_pos=100, n_neg=100)
    config = BootstrapConfig(n=300, confidence=0.9, seed=7)
    first = compute_metrics(scores, labels, groups, bootstrap=config)
    assert first == compute_metrics(scores, labels, groups, bootstrap=config)
    low, high = first["ci"]["auc"]
    assert low <= first["auc"] <= high and low < high
    low, high = first["ci"]["tpr_at_fpr"]["0.1"]
    assert low <= first["tpr_at_fpr"]["0.1"] <= high
    assert (first["ci"]["n"], first["ci"]["confidence"]) == (300, 0.9)
    other = compute_metrics(scores, labels, groups, bootstrap=BootstrapConfig(n=300, confidence=0.9, seed=8))
    assert other["ci"] != first["ci"]
    assert compute_metrics(scores, labels, groups, bootstrap=BootstrapConfig(n=0))["ci"] is None


def test_group_means_and_extras() -> None:
    scores = [0.9, 0.7, 0.5, 0.2, 0.4, 0.0]
    labels = [1, 1, 1, 0, 0, 0]
    groups = ["FTLL", "FTLL", "RTAL", "SAST", "SAST", "DADT"]
    agreement = [1.0, 0.8, float("nan"), 0.3, 0.5, 0.1]
    m = compute_metrics(scores, labels, groups, bootstrap=BootstrapConfig(n=0), extras={"agreement": agreement})
    assert list(m["groups"]) == ["DADT", "FTLL", "RTAL", "SAST"]
    assert m["groups"]["FTLL"] == {"n": 2, "mean_score": pytest.approx(0.8), "label": 1, "mean_agreement": pytest.approx(0.9)}
    assert m["groups"]["SAST"]["mean_score"] == pytest.approx(0.3) and m["groups"]["SAST"]["label"] == 0
    assert m["groups"]["RTAL"]["mean_agreement"] is None  # only NaN values


def test_group_with_both_labels_raises() -> None:
    with pytest.raises(ValueError, match="mixes positives and negatives"):
        compute_metrics([0.9, 0.1], [1, 0], ["same", "same"], bootstrap=BootstrapConfig(n=0))
