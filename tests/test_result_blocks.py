"""Per-result statistics blocks (issue "Honest statistics", items 1-3): ties, the cross-fitted decision and
what the negatives certify are stored in `metrics`, recomputed by `--check`, and printed honestly."""

from __future__ import annotations

import copy

import pytest

from bench.evaluate import BenchmarkOutcome, summary_lines
from bench.metrics import BootstrapConfig
from bench.results import check_result, make_result


def _result(pos: list[float], neg: list[float]) -> dict:
    per_model = [{"model_id": f"p{i:011d}", "role": "positive", "attack": "ftll", "kind": None, "group": "ftll",
                  "score": s, "queries": 10} for i, s in enumerate(pos)]
    per_model += [{"model_id": f"n{i:011d}", "role": "negative", "attack": None, "kind": "SAST", "group": "SAST",
                   "score": s, "queries": 10} for i, s in enumerate(neg)]
    return make_result(
        seed=0, method={"name": "akh", "version": "1", "access": "label", "config": {}},
        config={"seed": 0, "eval": {"bootstrap": {"n": 0}}, "zoo": {"name": "toy"}, "method": {"name": "akh"}},
        zoo={"name": "toy", "manifest_sha256": "0" * 64, "dataset": "toy",
             "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"}, "source_id": "s",
             "source_test_acc": 0.9},
        per_model=per_model, timing_s={"generate": 1.0, "verify": 1.0, "total": 2.0, "fingerprint_cached": False},
        bootstrap=BootstrapConfig(n=0), git_path=None)


def test_blocks_on_a_case_with_known_answers():
    # 4 positives, 8 negatives; two positive-negative pairs tie at 0 (p=0 vs n=0 twice: 1 positive x 2 negatives)
    result = _result([1.0, 0.9, 0.6, 0.0], [0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7])
    m = result["metrics"]
    assert m["ties"]["tie_fraction"] == pytest.approx(2 / 32)
    # wins: 1.0 and 0.9 beat all 8; 0.6 beats 7 (not 0.7); 0.0 beats none, ties 2
    assert m["ties"]["auc_ties_as_losses"] == pytest.approx(23 / 32)
    assert m["ties"]["auc_ties_as_wins"] == pytest.approx(25 / 32)
    assert m["auc"] == pytest.approx(24 / 32)
    res = m["tpr_resolution"]["0.01"]
    assert res["label"] == "TPR@0FP" and not res["certifiable"]
    assert res["tpr"] == pytest.approx(0.5) and res["false_positives"] == 0  # above 0.7: 1.0 and 0.9
    assert res["fpr_upper"] == pytest.approx(1 - 0.05 ** (1 / 8))
    decision = m["decision"]["0.01"]
    assert decision["folds"] == 5 and decision["n_negative"] == 8 and 0.0 <= decision["fpr"] <= 1.0


def test_check_recomputes_the_blocks():
    result = _result([1.0, 0.9, 0.6, 0.0], [0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7])
    assert check_result(result) == []
    for edit in (("ties", "tie_fraction", 0.0), ("tpr_resolution", "0.1", {"label": "T10%F"})):
        forged = copy.deepcopy(result)
        block, key, value = edit
        if isinstance(value, dict):
            forged["metrics"][block][key].update(value)
        else:
            forged["metrics"][block][key] = value
        assert any(block in problem for problem in check_result(forged)), edit
    older = copy.deepcopy(result)
    for block in ("ties", "decision", "tpr_resolution"):
        older["metrics"].pop(block)
    assert check_result(older) == []  # written before the blocks existed: still valid


def test_console_never_heads_an_uncertified_column_t1f():
    outcome = BenchmarkOutcome(zoo=None)
    outcome.results = {"r.json": _result([1.0, 0.9, 0.6, 0.0], [0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7])}
    lines = summary_lines(outcome)
    assert "T1%F" not in lines[0] and "T10%F" not in lines[0] and lines[0].count("TPR@0FP") == 1
    assert any("TPR@0FP is the TPR at zero false positives" in line for line in lines)
    assert any("demo of the loop, not a comparison" in line for line in lines)
    assert "[0.719,0.781]" in lines[1]  # the tie interval, wider than 0.01
    many = BenchmarkOutcome(zoo=None)
    many.results = {"r.json": _result([1.0] * 10, [0.1 * (i % 10) / 10 for i in range(400)])}
    head = summary_lines(many)[0]
    assert "T1%F" in head and "T10%F" in head and "TPR@0FP" not in head
