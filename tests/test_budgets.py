"""Scores against query budget: `at_budget` subsets, the loop's budget scores, the result, leaderboard and plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.budgets import ALL, check_budgets
from bench.config import load_recipe
from bench.evaluate import run_benchmark
from bench.methods import METHODS, Fingerprint
from bench.methods.sac import correlation_matrix
from bench.metrics import auc
from bench.oracle import Oracle
from bench.report import build_board
from bench.results import check_result, iter_results
from tests.conftest import SMOKE, smoke_overrides


def akh_fingerprint(n: int = 50) -> Fingerprint:
    inputs = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return Fingerprint("akh", {"inputs": inputs, "labels": torch.arange(n) % 10, "padded": torch.arange(n) >= 40},
                       {"queries_per_suspect": n})


def rows_of(subset: torch.Tensor, whole: torch.Tensor) -> list[int]:
    """The index in `whole` of each row of `subset`."""
    return [int((whole.flatten(1) == row.flatten()).all(1).nonzero()[0]) for row in subset]


def test_akh_subset_counts_order_and_seeds() -> None:
    method, fp = METHODS.get("akh")(), akh_fingerprint()
    subset = method.at_budget(fp, 10, seed=0)
    assert subset is not None and subset.tensors["inputs"].shape[0] == 10
    assert subset.meta["queries_per_suspect"] == 10 and subset.meta["budget_items"] == 10 and subset.meta["budget"] == 10
    kept = rows_of(subset.tensors["inputs"], fp.tensors["inputs"])
    assert kept == sorted(kept) and len(set(kept)) == 10  # drawn without replacement, kept in their order
    assert torch.equal(subset.tensors["labels"], fp.tensors["labels"][kept])
    assert torch.equal(subset.tensors["padded"], fp.tensors["padded"][kept])
    again = method.at_budget(fp, 10, seed=0)
    assert torch.equal(again.tensors["inputs"], subset.tensors["inputs"])  # deterministic per seed
    assert not torch.equal(method.at_budget(fp, 10, seed=1).tensors["inputs"], subset.tensors["inputs"])
    assert rows_of(method.at_budget(fp, 30, seed=0).tensors["inputs"], fp.tensors["inputs"])[:10] != kept
    assert fp.meta["queries_per_suspect"] == 50 and fp.tensors["inputs"].shape[0] == 50  # the original untouched
    assert method.at_budget(fp, 50, seed=0) is fp and method.at_budget(fp, 1000, seed=0) is fp


def test_adv_tra_items_are_trajectories() -> None:
    method = METHODS.get("adv_tra")()
    n, samples = 8, 45
    fp = Fingerprint("adv_tra", {"inputs": torch.rand(n, samples, 1, 8, 8), "labels": torch.randint(0, 10, (n, samples)),
                                 "segment_targets": torch.randint(0, 10, (n, 9)), "step_sizes": torch.rand(n, 9, 4),
                                 "base_indices": torch.arange(n), "base_labels": torch.arange(n) % 10},
                     {"queries_per_suspect": n * samples})
    subset = method.at_budget(fp, 100, seed=0)
    assert subset.meta["budget_items"] == 2 and subset.meta["queries_per_suspect"] == 90
    assert all(t.shape[0] == 2 for t in subset.tensors.values())
    assert method.at_budget(fp, 30, seed=0) is None  # fewer queries than one trajectory costs
    oracle = Oracle(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), access="label")
    figures = method.measure(subset, oracle)
    assert oracle.queries == 90 and 0.0 <= figures["agreement"] <= 1.0


def test_sac_keeps_the_correlation_submatrix() -> None:
    method = METHODS.get("sac")()
    probs = torch.rand(12, 10, generator=torch.Generator().manual_seed(1)).softmax(1)
    inputs = torch.rand(12, 1, 8, 8)
    fp = Fingerprint("sac", {"inputs": inputs, "labels": probs.argmax(1), "true_labels": torch.zeros(12, dtype=torch.long),
                             "correlation": correlation_matrix(probs)},
                     {"queries_per_suspect": 12, "correlation": "cosine"})
    subset = method.at_budget(fp, 5, seed=3)
    kept = rows_of(subset.tensors["inputs"], inputs)
    assert len(kept) == 5
    assert torch.allclose(subset.tensors["correlation"], correlation_matrix(probs[kept]), atol=1e-6)
    assert fp.tensors["correlation"].shape == (12, 12)
    assert method.at_budget(fp, 1, seed=3) is None  # min_budget_items = 2


def test_uap_items_are_views() -> None:
    method = METHODS.get("uap")()
    views, clusters = 20, 5
    fp = Fingerprint("uap", {"inputs": torch.rand(views, clusters, 1, 8, 8), "perturbation": torch.rand(1, 8, 8),
                             "source_vectors": torch.rand(views, 2 * clusters * 10), "encoder.0.weight": torch.rand(3, 3)},
                     {"queries_per_suspect": 2 * clusters * views})
    subset = method.at_budget(fp, 30, seed=0)
    assert subset.tensors["inputs"].shape[:2] == (3, clusters) and subset.tensors["source_vectors"].shape[0] == 3
    assert subset.tensors["perturbation"] is fp.tensors["perturbation"]  # shared, not subsampled
    assert subset.meta["queries_per_suspect"] == 30
    assert method.at_budget(fp, 9, seed=0) is None  # one view costs 2m = 10


def test_methods_without_items_or_queries() -> None:
    oracle_label = METHODS.get("oracle_label")()
    empty = Fingerprint("oracle_label", {}, {})
    assert oracle_label.at_budget(empty, 10, seed=0) is empty  # no queries: always fits
    # a fingerprint that is not a set of items cannot be subsampled
    opaque = Fingerprint("oracle_label", {}, {"queries_per_suspect": 500})
    assert oracle_label.budget_items(opaque) is None and oracle_label.at_budget(opaque, 100, seed=0) is None


@pytest.mark.parametrize("bad", [[0], [10, -5], [10, 10], [True]])
def test_check_budgets_rejects(bad: list) -> None:
    with pytest.raises(ValueError, match="eval.budgets"):
        check_budgets(bad)
    check_budgets([])
    check_budgets([10, 30])


# -- the loop on the smoke zoo --------------------------------------------------------------------------
BUDGETS = (5, 20, 1000)


@pytest.fixture(scope="module")
def budget_runs(smoke_cfg, smoke_zoo, tmp_path_factory):
    """The guards and akh, with and without budgets (separate results and caches, the session's zoo)."""
    runs = {}
    for name, budgets in (("with", f"eval.budgets=[{','.join(map(str, BUDGETS))}]"), ("without", "eval.budgets=[]")):
        root = tmp_path_factory.mktemp(f"budgets_{name}")
        cfg = load_recipe(SMOKE, [*smoke_overrides(root), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}",
                                  "methods=[oracle_label,random,akh]", "methods.akh.n_samples=40", budgets])
        runs[name] = (root, run_benchmark(cfg, progress=False))
    return runs


def _all_view(board) -> pd.DataFrame:
    """The rows of the `all` positives view, indexed by method."""
    return board.rows[board.rows["positives"] == "all"].set_index("method")


def _by_method(outcome) -> dict[str, tuple[str, dict]]:
    return {r["method"]["name"]: (Path(p).name, r) for p, r in outcome.results.items()}


def test_budgets_leave_the_main_result_alone(budget_runs) -> None:
    with_budgets, without = _by_method(budget_runs["with"][1]), _by_method(budget_runs["without"][1])
    for method in ("oracle_label", "random", "akh"):
        (name_a, a), (name_b, b) = with_budgets[method], without[method]
        assert name_a == name_b and a["config_sha256"] == b["config_sha256"]  # eval.budgets is not hashed
        assert [(r["model_id"], r["score"], r["queries"]) for r in a["per_model"]] == \
               [(r["model_id"], r["score"], r["queries"]) for r in b["per_model"]]
        assert a["metrics"]["auc"] == b["metrics"]["auc"]
        assert "budgets" not in b and "budget_scores" not in b["per_model"][0]
        assert check_result(a) == []


def test_budget_entries(budget_runs) -> None:
    results = _by_method(budget_runs["with"][1])
    _, akh = results["akh"]
    entries = {e["budget"]: e for e in akh["budgets"]}
    assert list(entries) == [*BUDGETS, ALL]
    assert entries[ALL]["auc"] == akh["metrics"]["auc"] and entries[ALL]["queries_per_suspect"] == 40
    assert entries[1000]["auc"] == akh["metrics"]["auc"] and entries[1000]["subsampled"] is False
    for budget in (5, 20):  # real subsets, scored through a fresh oracle: their real cost is the budget
        assert entries[budget]["subsampled"] is True and entries[budget]["items"] == budget
        assert entries[budget]["queries_per_suspect"] == budget
        scores = [r["budget_scores"][str(budget)] for r in akh["per_model"]]
        labels = [int(r["role"] == "positive") for r in akh["per_model"]]
        assert entries[budget]["auc"] == pytest.approx(auc(scores, labels), abs=1e-12)
        assert all(r["budget_queries"][str(budget)] == budget for r in akh["per_model"])
    # the five-sample subset scores differ from the whole fingerprint's for some suspect
    assert any(r["budget_scores"]["5"] != r["score"] for r in akh["per_model"])
    for guard in ("oracle_label", "random"):  # no queries: every budget is the whole fingerprint
        _, result = results[guard]
        assert all(e["auc"] == result["metrics"]["auc"] for e in result["budgets"])
    assert results["oracle_label"][1]["metrics"]["aruc"] == 1.0


def test_a_tampered_budget_entry_is_caught(budget_runs) -> None:
    _, akh = _by_method(budget_runs["with"][1])["akh"]
    tampered = json.loads(json.dumps(akh))
    tampered["budgets"][0]["auc"] = 0.123
    assert any("budgets[5].auc" in p for p in check_result(tampered))
    tampered = json.loads(json.dumps(akh))  # every recorded figure is recomputed, the TPRs too
    target = next(iter(tampered["budgets"][0]["tpr_at_fpr"]))
    tampered["budgets"][0]["tpr_at_fpr"][target] = 0.5 if tampered["budgets"][0]["tpr_at_fpr"][target] != 0.5 else 0.25
    assert any(f"budgets[5].tpr_at_fpr[{target}]" in p for p in check_result(tampered))


def test_leaderboard_column_and_plot(budget_runs) -> None:
    root, outcome = budget_runs["with"]
    board = build_board(root / "results")
    rows = _all_view(board)
    assert board.budget == 100
    assert rows.loc["akh", "auc_at_budget"] == pytest.approx(rows.loc["akh", "auc"])  # 40 queries <= 100
    assert rows.loc["oracle_label", "aruc"] == 1.0
    text = (root / "results" / "leaderboard.md").read_text(encoding="utf-8")
    assert "AUC@100" in text and "ARUC" in text
    assert "auc_at_budget" in (root / "results" / "leaderboard.csv").read_text(encoding="utf-8").splitlines()[0]
    at_20 = _all_view(build_board(root / "results", budget=20))
    akh = _by_method(outcome)["akh"][1]
    assert at_20.loc["akh", "auc_at_budget"] == pytest.approx(next(e["auc"] for e in akh["budgets"] if e["budget"] == 20))
    at_7 = _all_view(build_board(root / "results", budget=7))
    assert math.isnan(at_7.loc["akh", "auc_at_budget"])  # not measured at 7 queries
    assert at_7.loc["random", "auc_at_budget"] == pytest.approx(at_7.loc["random", "auc"])  # 0 queries fit
    plots = [p for p in outcome.plots if p.name == "budget_auc.png"]
    assert plots and plots[0].stat().st_size > 0


def test_results_without_budgets_still_report(budget_runs) -> None:
    root, _ = budget_runs["without"]
    rows = _all_view(build_board(root / "results"))
    assert rows.loc["random", "auc_at_budget"] == pytest.approx(rows.loc["random", "auc"])  # 0 queries <= 100
    assert rows.loc["akh", "auc_at_budget"] == pytest.approx(rows.loc["akh", "auc"])  # 40 queries <= 100: the full AUC
    assert math.isnan(_all_view(build_board(root / "results", budget=20)).loc["akh", "auc_at_budget"])  # not measured
    assert len(list(iter_results(root / "results"))) == 3
