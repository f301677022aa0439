"""The evasion frontier (bench/report/frontier.py) and the threat model recorded per positive.

Constructed result files with known answers check the detection, the evasion cost and its summary
over trials; the smoke zoo's evaluation with the `oracle_label` and `random` guards checks what the
loop writes (family and strength per positive) and the frontier the guards must give.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import load_recipe
from bench.evaluate import run_benchmark
from bench.report.frontier import FAMILY_OF_ATTACK, cost_table, cost_text, family_of, frontier_markdown, method_frontier
from bench.zoo.attacks import ATTACKS, attack_facts
from tests.conftest import SMOKE, smoke_overrides

SOURCE_ACC = 0.90


def _result(negatives: list[float], positives: list[tuple[str, str, float, float]]) -> dict:
    """A result file's fields the frontier reads: (group, family, test_acc, score) per positive."""
    per_model = [{"role": "negative", "group": "SAST", "score": s, "test_acc": 0.88} for s in negatives]
    per_model += [{"role": "positive", "group": g, "family": f, "attack": g, "test_acc": acc, "score": s,
                   "strength": {"rate": g}} for g, f, acc, s in positives]
    return {"per_model": per_model, "zoo": {"source_test_acc": SOURCE_ACC}}


def test_evasion_cost_is_the_smallest_drop_that_evades():
    negatives = [0.1 * i for i in range(10)]  # the 1 % threshold with 10 negatives: the highest, 0.9
    trial = _result(negatives, [
        ("weak", "pruning", 0.89, 1.0), ("weak", "pruning", 0.89, 0.95),  # 1 point, both detected
        ("mid", "pruning", 0.86, 0.95), ("mid", "pruning", 0.86, 0.5),  # 4 points, half detected: not evading
        ("strong", "pruning", 0.80, 0.2), ("strong", "pruning", 0.80, 0.9),  # 10 points; 0.9 is not > 0.9: evades
        ("ft", "fine-tuning", 0.895, 0.99)])
    f = method_frontier([trial], fpr=0.01)
    pruning = f["families"]["pruning"]
    assert [p["group"] for p in pruning["points"]] == ["weak", "mid", "strong"]
    assert [p["detection"] for p in pruning["points"]] == [1.0, 0.5, 0.0]
    assert pruning["evasion_cost"] == pytest.approx(10.0) and pruning["trials_evaded"] == 1
    tuning = f["families"]["fine-tuning"]
    assert tuning["evasion_cost"] is None and tuning["max_drop_reached"] == pytest.approx(0.5)
    assert cost_text(tuning) == "none up to 0.5 pt"
    assert f["overall"]["evasion_cost"] == pytest.approx(10.0)
    assert not f["certified"] and f["n_negative"] == [10]  # 10 negatives cannot certify 1 %


def test_costs_over_trials_keep_their_range_and_the_trials_that_found_none():
    negatives = [0.0] * 5
    first = _result(negatives, [("a", "pruning", 0.88, 0.0), ("b", "pruning", 0.85, 0.0)])  # 2 points evades
    second = _result(negatives, [("a", "pruning", 0.88, 1.0), ("b", "pruning", 0.85, 0.0)])  # 5 points
    third = _result(negatives, [("a", "pruning", 0.88, 1.0), ("b", "pruning", 0.85, 1.0)])  # none up to 5
    summary = method_frontier([first, second, third])["families"]["pruning"]
    assert summary["per_trial"] == [pytest.approx(2.0), pytest.approx(5.0), None]
    assert summary["evasion_cost"] == pytest.approx(3.5) and summary["evasion_cost_range"] == pytest.approx([2, 5])
    assert cost_text(summary) == "3.5 pt [2.0, 5.0] (2 of 3 trials)"
    table = frontier_markdown({"m": method_frontier([first, second, third])})
    assert "| m | 3.5 pt [2.0, 5.0] (2 of 3 trials) | 3.5 pt [2.0, 5.0] (2 of 3 trials) |" in table


def test_families_of_old_results_match_the_attack_classes():
    assert FAMILY_OF_ATTACK == {name: ATTACKS.get(name).family for name in ATTACKS.names()}
    assert family_of({"attack": "prune(rate=0.4)+ftll"}) == "pruning + fine-tuning"
    assert family_of({"attack": "adv_train(eps=0.1)"}) == "adversarial training"
    assert attack_facts([{"attack": "prune", "params": {"rate": 0.8}}]) == {
        "family": "pruning", "strength": {"rate": 0.8, "epochs": 2}}  # the default epochs filled in


def test_the_loop_records_threat_models_and_the_guards_frontiers(smoke_cfg, smoke_zoo):
    cfg = load_recipe(SMOKE, [*smoke_overrides(Path(smoke_cfg.paths.zoo_dir).parent), "methods=[oracle_label,random]"])
    results = {r["method"]["name"]: r for r in run_benchmark(cfg, progress=False).results.values()}
    for record in results["random"]["per_model"]:
        job = next(j for j in smoke_zoo.plan.jobs if j.model_id == record["model_id"])
        if record["role"] == "negative":
            assert record["family"] is None and record["strength"] is None
        else:
            steps = [ATTACKS.get(step["attack"]) for step in job.spec["chain"]]
            assert record["family"] == " + ".join(dict.fromkeys(cls.family for cls in steps))
            keys = [k if len(steps) == 1 else f"{cls.name}.{k}" for cls in steps for k in cls.strength_keys]
            assert list(record["strength"]) == keys, record["group"]
    oracle = method_frontier([results["oracle_label"]])
    assert oracle["overall"]["evasion_cost"] is None  # the oracle detects every positive: nothing evades
    assert all(p["detection"] == 1.0 for f in oracle["families"].values() for p in f["points"])


def test_frontier_plots_for_a_results_tree(tmp_path):
    from bench.report.frontier_plots import file_name, write_frontier_plots
    from bench.results import result_path, write_result
    from tests.test_results import synthetic_result
    from tests.test_tracking import with_accuracies

    for seed in (0, 1):
        result = with_accuracies(synthetic_result(seed=seed))
        write_result(result, result_path(tmp_path, "tiny", "adv_tra", result["config_sha256"], seed))
    old = synthetic_result(method="akh")  # no test accuracies: no accuracy drop, no frontier
    write_result(old, result_path(tmp_path, "tiny", "akh", old["config_sha256"], 0))
    written = write_frontier_plots(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "plots/tiny/evasion_cost.png", "plots/tiny/frontier/adv_tra_n=10.png"]  # row label adv_tra[n=10]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert file_name("cae[pool_seeds=1,xi=0.25]") == "cae_pool_seeds=1_xi=0.25"


def test_evasion_cost_at_a_matched_budget_uses_the_budget_scores():
    """Issue #27 item 5: the evasion cost at a matched query budget scores every suspect as a verifier limited
    to that budget would (`budget_scores`), keeps the main score when the whole fingerprint fits, and says
    "not measured" when a trial has no scores at that budget."""
    negatives = [0.1 * i for i in range(10)]
    trial = _result(negatives, [("a", "pruning", 0.88, 1.0), ("b", "pruning", 0.85, 1.0)])  # detected: none found
    trial["queries_per_suspect"] = 400
    for row in trial["per_model"]:  # at 100 queries: negatives keep their scores, `b` (5 points) falls to 0.5
        row["budget_scores"] = {"100": 0.5 if row.get("group") == "b" else row["score"]}
    whole, limited = method_frontier([trial]), method_frontier([trial], budget=100)
    assert cost_text(whole["overall"]) == "none up to 5.0 pt"
    assert limited["measured"] and limited["overall"]["evasion_cost"] == pytest.approx(5.0)
    assert method_frontier([trial], budget=400)["overall"] == whole["overall"]  # the whole fingerprint fits
    for row in trial["per_model"]:
        del row["budget_scores"]
    unmeasured = method_frontier([trial], budget=100)
    assert not unmeasured["measured"] and cost_text(unmeasured["overall"]) == "not measured"
    assert "| m | not measured |" in cost_table({"m": unmeasured})


def test_entries_that_share_a_label_but_not_a_strength_are_two_configurations():
    """A zoo labels an expanded recipe entry by the keys it varies, so `extract` with and without `arch:
    lenet` share a label; the frontier tells them apart by their recorded strength."""
    trial = _result([0.0] * 5, [("extract(q=1)", "extraction", 0.88, 1.0), ("extract(q=1)", "extraction", 0.80, 0.0)])
    trial["per_model"][-2]["strength"] = {"arch": None, "q": 1}
    trial["per_model"][-1]["strength"] = {"arch": "lenet", "q": 1}
    points = method_frontier([trial])["families"]["extraction"]["points"]
    assert [(p["group"], p["detection"]) for p in points] == [("extract(q=1) [arch=None]", 1.0),
                                                              ("extract(q=1) [arch=lenet]", 0.0)]
    assert method_frontier([trial])["families"]["extraction"]["evasion_cost"] == pytest.approx(10.0)


def test_fpbench_frontier_prints_the_matched_budget_it_is_asked_for(tmp_path, capsys):
    from bench.budgets import DEFAULT_BUDGET
    from bench.cli import main
    from bench.cli_parser import build_parser
    from bench.results import result_path, write_result
    from tests.test_results import synthetic_result
    from tests.test_tracking import with_accuracies

    result = with_accuracies(synthetic_result(seed=0))
    write_result(result, result_path(tmp_path, "tiny", "adv_tra", result["config_sha256"], 0))
    assert main(["frontier", "--results-dir", str(tmp_path), "--budget", "30"]) == 0
    out = capsys.readouterr().out
    assert "## tiny" in out and "### At a matched budget of 30 queries per suspect" in out
    assert main(["frontier", "--results-dir", str(tmp_path), "--budget", "0"]) == 2
    assert "--budget 0 must be a positive number of queries per suspect" in capsys.readouterr().err
    default = build_parser().parse_args(["frontier"]).budget
    assert default == DEFAULT_BUDGET  # the CLI's default is the board's matched budget (AUC@100, evasion cost@100)
