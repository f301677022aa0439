"""A newcomer's own zoo reads well (issue 29, item 7): every suspect named and scored in the run's output,
methods that separate nothing said so, one line when nothing published compares, quiet budgets and bars."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest

from bench.published import published_lines
from bench.suspect_table import separation_lines, suspect_table_lines
from tests.test_results import synthetic_result

# --- the per-suspect table -------------------------------------------------------------------------


def _result(method: str = "akh", shift: float = 4.0, n: int = 6) -> dict[str, Any]:
    return synthetic_result(method=method, shift=shift, n=n)


def test_the_table_has_one_row_per_suspect_with_each_methods_score() -> None:
    akh, rnd = _result("akh"), _result("random", shift=0.0)
    akh["per_model"][-1]["label"] = "my_resnet_seed3"  # a named negative shows its name, not its id
    lines = suspect_table_lines([akh, rnd])
    head = next(i for i, line in enumerate(lines) if line.startswith("suspect"))
    assert "akh" in lines[head] and "random" in lines[head] and "attack/kind" in lines[head]
    rows = lines[head + 1:]
    assert len(rows) == len(akh["per_model"]) == 12
    named = next(row for row in rows if row.startswith("my_resnet_seed3"))
    last = akh["per_model"][-1]
    assert "negative" in named and last["kind"] in named
    assert f"{last['score']:.3f}" in named and f"{rnd['per_model'][-1]['score']:.3f}" in named
    assert [r.split()[1] for r in rows] == ["positive"] * 6 + ["negative"] * 6  # positives first


def test_two_results_of_one_method_get_columns_told_apart() -> None:
    one, two = _result("adv_tra"), _result("adv_tra")
    two["config_sha256"] = "ffff" + two["config_sha256"][4:]
    head = next(line for line in suspect_table_lines([one, two]) if line.startswith("suspect"))
    assert f":{one['config_sha256'][:4]}" in head and ":ffff" in head


def test_a_suspect_one_method_did_not_score_shows_a_dash() -> None:
    one, two = _result("akh"), _result("random", shift=0.0)
    two["per_model"] = two["per_model"][:-1]
    row = suspect_table_lines([one, two])[-1]
    assert row.split()[-1] == "-" and row.startswith(one["per_model"][-1]["model_id"])


# --- methods that separate nothing -----------------------------------------------------------------


def _scored(method: str, pos: list[float], neg: list[float], auc: float,
            extras: dict[str, tuple[list[float], list[float]]] | None = None) -> dict[str, Any]:
    result = copy.deepcopy(_result(method, n=len(pos)))
    for i, row in enumerate(result["per_model"]):
        positive = row["role"] == "positive"
        row["score"] = (pos if positive else neg)[i % len(pos)]
        row["extras"] = {k: (p if positive else q)[i % len(pos)] for k, (p, q) in (extras or {}).items()}
    result["metrics"]["auc"] = auc
    return result


def test_a_method_at_chance_is_named() -> None:
    lines = separation_lines([_scored("random", [0.4, 0.6, 0.5], [0.5, 0.45, 0.55], 0.52)])
    assert len(lines) == 1 and lines[0].startswith("NO SEPARATION random: AUC 0.520")


def test_a_negative_tied_with_the_positives_is_named() -> None:
    result = _scored("akh", [1.0, 1.0, 0.95], [1.0, 0.2, 0.1], 0.75)
    lines = separation_lines([result])
    negative = next(r for r in result["per_model"] if r["role"] == "negative" and r["score"] == 1.0)
    assert len(lines) == 1 and lines[0].startswith(f"TIES akh: negative {negative['model_id']} scores 1.000")
    assert "median positive (1.000)" in lines[0] and "methods.akh" not in lines[0]  # akh has no `score:` choice


def test_a_method_that_separates_says_nothing() -> None:
    assert separation_lines([_scored("akh", [0.9, 0.95, 0.8], [0.1, 0.2, 0.3], 1.0)]) == []


def test_adv_tra_ties_suggest_the_agreement_score() -> None:
    """ADV-TRA's `detection_rate` ties same-architecture negatives with the positives; its `agreement`
    figure (recorded beside it) separates them, and the line names the override."""
    result = _scored("adv_tra", [1.0, 0.95, 1.0], [1.0, 0.97, 0.1], 0.65,
                     extras={"agreement": ([0.9, 0.92, 0.95], [0.6, 0.93, 0.3]),  # AUC 7/9
                             "mean_mutation_rate": ([0.9, 0.95, 0.99], [0.1, 0.1, 0.1])})  # AUC 1, not a `score:`
    result["method"]["config"] = {"score": "detection_rate"}
    (line,) = separation_lines([result])
    assert line.startswith("TIES adv_tra") and "try methods.adv_tra.score=agreement" in line
    assert "AUC 0.778" in line and "mean_mutation_rate" not in line  # adv_tra refuses score=mean_mutation_rate
    result["method"]["config"] = {"score": "agreement"}  # already the better figure: nothing to suggest
    assert "try methods" not in separation_lines([result])[0]


# --- the published comparison ----------------------------------------------------------------------


def test_nothing_published_is_one_line(tmp_path: Path) -> None:
    results = {"local/akh.json": _result("akh"), "local/random.json": _result("random")}
    lines = published_lines(results, tmp_path)
    assert len(lines) == 1 and "nothing published for zoo tiny" in lines[0]
    assert "none found" in published_lines(results, None)[0] and published_lines({}, tmp_path) == []


def test_something_published_is_compared_per_method(tmp_path: Path) -> None:
    from tests.test_published import _publish, _yours

    _publish(tmp_path, [0.80, 0.82], version="1")  # an older akh version of the same benchmark
    lines = published_lines(_yours(0.81), tmp_path)
    assert lines[0].startswith("compared with the published benchmark") and "method version(s) 1" in lines[1]


# --- budgets that cannot be scored -----------------------------------------------------------------


def test_unscorable_budgets_are_one_info_line_per_method(caplog: pytest.LogCaptureFixture) -> None:
    from bench.budgets import plan_budgets
    from bench.methods import METHODS, Fingerprint

    opaque = Fingerprint("oracle_label", {}, {"queries_per_suspect": 500})  # not a set of items: no subset
    with caplog.at_level(logging.INFO, logger="bench.budgets"):
        plans = plan_budgets(METHODS.get("oracle_label")(), opaque, [30, 10, 1000], seed=0)
    lines = [r for r in caplog.records if "no score at" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert lines[0].getMessage().startswith("oracle_label: no score at 10, 30 queries per suspect: oracle_label cannot")
    assert [(p.budget, p.fingerprint is None, p.reason is not None) for p in plans] == [
        (10, True, True), (30, True, True), (1000, False, False)]  # each budget's reason kept for the result file


# --- on the smoke zoo: named negatives, the printed run, quiet bars ---------------------------------

NEGATIVES = ("zoo.negatives=[{kind: SAST, seed: [1, 2], label: mine}, {kind: SADT, seed: [1, 2]}, "
             "{kind: DAST, arch: [lenet, mlp], seed: 1}, {kind: DADT, arch: [lenet, mlp], seed: 1}]")  # smoke's, one named


def test_a_named_negative_is_named_in_the_results_and_the_printed_run(smoke_cfg, smoke_zoo, tmp_path, capsys) -> None:
    from bench.cli import main
    from bench.results import read_result
    from tests.conftest import SMOKE, smoke_overrides

    code = main(["run", str(SMOKE), *smoke_overrides(tmp_path), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}",
                 "methods=[oracle_label,random]", "eval.budgets=[]", NEGATIVES])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("suspect ")))
    suspects = smoke_zoo.plan.by_role("positive", "negative")
    rows = lines[head + 1:head + 1 + len(suspects)]
    assert "oracle_la" in lines[head] and "random" in lines[head]
    assert {row.split()[0] for row in rows} >= {"mine(seed=1)", "mine(seed=2)"} and len(rows) == len(suspects)
    assert any(line.startswith("NO SEPARATION random") for line in lines)
    assert not any(line.startswith(("NO SEPARATION oracle", "TIES oracle")) for line in lines)
    assert [line for line in lines if "published" in line and "nothing published for zoo smoke" in line] != []
    assert "no published result of this benchmark" not in out  # one line, not one per method
    result = read_result(next((tmp_path / "results" / "runs" / "smoke" / "random").glob("*.json")))
    labels = {row["model_id"]: row.get("label") for row in result["per_model"]}
    sast = [j.model_id for j in smoke_zoo.plan.by_role("negative") if j.kind == "SAST"]
    assert sorted(labels[i] for i in sast) == ["mine(seed=1)", "mine(seed=2)"]  # same models: a label is no new id
    assert sum(1 for v in labels.values() if v) == 2


def test_a_bad_negative_label_is_refused(tmp_path) -> None:
    from bench.config import ConfigError, load_recipe
    from bench.zoo.plan import plan_zoo
    from tests.conftest import SMOKE, smoke_overrides

    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), "zoo.negatives=[{kind: SAST, seed: 1, label: [a]}]"])
    with pytest.raises(ConfigError, match=r"zoo.negatives\[0\].label must be a non-empty name"):
        plan_zoo(cfg, {"owner": "o", "attacker": "a", "independent": "i", "test": "t"})


def test_eval_progress_false_silences_every_bar(smoke_cfg, smoke_zoo, tmp_path, monkeypatch) -> None:
    import bench.evaluate as evaluate
    from bench.config import load_recipe
    from tests.conftest import SMOKE, smoke_overrides

    seen: dict[str, list[bool]] = {"zoo": [], "generate": [], "verify": []}
    build, context, count = evaluate.build_zoo, evaluate.GenerationContext, evaluate.counted
    monkeypatch.setattr(evaluate, "build_zoo", lambda *a, **k: seen["zoo"].append(k["progress"]) or build(*a, **k))
    monkeypatch.setattr(evaluate, "GenerationContext", lambda **k: seen["generate"].append(k["progress"]) or context(**k))
    monkeypatch.setattr(evaluate, "counted", lambda *a, **k: seen["verify"].append(k["enabled"]) or count(*a, **k))
    for flag, terminal in (("false", True), ("true", True), ("true", False)):
        monkeypatch.setattr(evaluate, "draws_bars", lambda stream, terminal=terminal: terminal)
        cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path / f"{flag}-{terminal}"), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}",
                                  "methods=[random]", "eval.budgets=[]", f"eval.progress={flag}"])
        evaluate.run_benchmark(cfg, progress=True)  # what the CLI passes with bars on
    # off a terminal (a log file) the methods' own step bars stay off: each update would be a \r fragment there
    assert seen == {"zoo": [False, True, True], "generate": [False, True, False], "verify": [False, True, True]}


def test_the_split_line_is_logged_once(tmp_path, caplog, monkeypatch) -> None:
    import datamodules.lightning_base as base
    from bench.config import load_recipe
    from datamodules import build_datamodule
    from tests.conftest import SMOKE

    monkeypatch.setattr(base, "_SHOWN_SPLITS", set())
    cfg = load_recipe(SMOKE, [f"paths.data_dir={tmp_path}"])
    with caplog.at_level(logging.DEBUG, logger="datamodules"):
        for _ in range(3):  # a command sets the data up once per trial and phase
            build_datamodule(cfg.data, data_dir=cfg.paths.data_dir, seed=cfg.zoo.split_seed).setup()
    levels = [r.levelno for r in caplog.records if "digits splits: {'owner': 700" in r.getMessage()]
    assert levels == [logging.INFO, logging.DEBUG, logging.DEBUG]


def test_cort_that_fools_nothing_says_what_to_change() -> None:
    """A source no eps-ball example fools (here: a model that always answers class 0) gets the override to try."""
    import torch

    from bench.methods import GenerationContext, instantiate

    class Toy:
        name, num_classes = "toy_data", 10

        def tensors(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.rand(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)

    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([5.0] + [0.0] * 9))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1).sum(1, keepdim=True) * 0 + self.bias

    ctx = GenerationContext(datamodule=Toy(), seed=0, device=torch.device("cpu"), num_classes=10, progress=False)
    with pytest.raises(RuntimeError, match=r"seeds of toy_data.*methods\.cort\.eps=0\.09.*methods\.cort\.keep=all"):
        instantiate({"name": "cort", "n_seeds": 4}).generate(Constant(), ctx)
