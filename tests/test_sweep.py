"""Sweeps: one result per (point, trial), CSV + heatmap, no new work on rerun, failures reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import bench.evaluate
import bench.sweep
from bench.config import ConfigError
from bench.sweep import load_sweep, run_sweep, write_wandb_sweep
from tests.conftest import REPO, smoke_overrides

SWEEP = REPO / "recipes" / "sweeps" / "smoke.yaml"


def _overrides(smoke_cfg, root: Path) -> list[str]:
    return [*smoke_overrides(root), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}"]


def test_sweep_grid_trials_and_rerun(smoke_cfg, smoke_zoo, tmp_path):
    spec = load_sweep(SWEEP, _overrides(smoke_cfg, tmp_path))
    outcome = run_sweep(spec, progress=False)
    assert not outcome.failed and outcome.skipped == 0
    assert len(outcome.rows) == 2 * 2 * 2  # grid 2x2, 2 trials
    assert len({row["result"] for row in outcome.rows}) == 8
    assert {row["seed"] for row in outcome.rows} == {smoke_cfg.seed, smoke_cfg.seed + 1}
    # the swept keys are not part of the variant: every point of one method entry has one label
    assert len({row["variant"] for row in outcome.rows}) == 1
    assert outcome.csv.is_file() and len(outcome.csv.read_text().splitlines()) == 9
    heatmaps = [p for p in outcome.plots if p.name.endswith("heatmap.png")]
    assert heatmaps and all(p.read_bytes().startswith(b"\x89PNG") for p in heatmaps)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").rglob("*.json")}
    again = run_sweep(load_sweep(SWEEP, _overrides(smoke_cfg, tmp_path)), progress=False)
    assert again.skipped == 8 and not again.failed
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "runs").rglob("*.json")} == files


def test_failing_point_is_reported_and_sweep_goes_on(smoke_cfg, smoke_zoo, tmp_path, monkeypatch):
    real = bench.evaluate.run_benchmark

    def flaky(cfg, progress=True):
        if cfg.methods[0]["n_samples"] == 5:
            raise RuntimeError("boom")
        return real(cfg, progress=progress)

    monkeypatch.setattr(bench.evaluate, "run_benchmark", flaky)  # bench.sweep imports it when the sweep runs
    outcome = run_sweep(load_sweep(SWEEP, _overrides(smoke_cfg, tmp_path)), progress=False)
    assert len(outcome.failed) == 4 and all("boom" in f for f in outcome.failed)
    assert len(outcome.rows) == 4


def test_bad_sweep_key_fails_before_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"recipe": str(REPO / "recipes" / "smoke.yaml"),
                                   "parameters": {"methods.akh.n_sample": [1, 2]}, "overrides": ["methods=[akh]"]}))
    with pytest.raises(ConfigError, match="n_sample"):
        load_sweep(bad, smoke_overrides(tmp_path))
    assert not (tmp_path / "zoo").exists()


def test_wandb_sweep_definition(tmp_path):
    spec = load_sweep(SWEEP, smoke_overrides(tmp_path))
    definition = yaml.safe_load(write_wandb_sweep(spec, tmp_path / "sweep.yaml").read_text())
    assert definition["method"] == "grid"
    assert definition["parameters"]["methods.akh.n_samples"] == {"values": [5, 10]}
    assert definition["command"][:2] == ["fpbench", "run"] and definition["command"][-1] == "${args}"


def _points(targets: tuple[str, ...]) -> list[dict]:
    rows = []
    for point, (n, brake) in enumerate([(5, 0.9), (5, 0.95), (10, 0.9), (10, 0.95)]):
        for trial in range(2):
            tpr = {f"tpr@{t}": 0.1 * point + 0.05 * trial + 0.1 * i for i, t in enumerate(targets)}
            rows.append({"point": point, "trial": trial, "n": n, "brake": brake, "method": "akh",
                         "auc": 0.5 + 0.1 * point, **tpr})
    return rows


def _captured_labels(monkeypatch) -> list[str]:
    """Every title, colorbar and legend text of the figures the sweep report saves."""
    import bench.report.sweeps as sweeps

    labels: list[str] = []
    real = sweeps._save

    def save(fig, path):
        for ax in fig.axes:
            labels.extend([ax.get_title(), ax.get_ylabel()])
            if ax.get_legend():
                labels.extend(t.get_text() for t in ax.get_legend().get_texts())
        return real(fig, path)

    monkeypatch.setattr(sweeps, "_save", save)
    return labels


def test_sweep_plots_follow_fpr_targets(tmp_path, monkeypatch):
    from bench.report.sweeps import write_sweep_report

    labels = _captured_labels(monkeypatch)
    _, plots = write_sweep_report("s", ["n", "brake"], _points(("0.05", "0.2")), tmp_path / "grid")
    assert sorted(p.name for p in plots) == ["akh_auc_heatmap.png", "akh_tpr_at_0.05_heatmap.png"]
    assert "akh: T5%F (mean over trials)" in labels and "T5%F" in labels  # title and colorbar of the TPR heatmap
    labels.clear()
    _, plots = write_sweep_report("s", ["n"], _points(("0.05", "0.2")), tmp_path / "line")
    assert [p.name for p in plots] == ["akh_lines.png"] and labels.count("T5%F") == 1 and "AUC" in labels
    labels.clear()
    _, plots = write_sweep_report("s", ["n", "brake"], _points(("0.01", "0.1")), tmp_path / "default")
    assert "akh_tpr_at_0.01_heatmap.png" in [p.name for p in plots] and "akh: T1%F (mean over trials)" in labels


def test_two_entries_of_one_method_stay_apart(tmp_path, monkeypatch):
    """A recipe with adv_tra and adv_tra[score=agreement]: one heatmap each, means not pooled."""
    import pandas as pd

    from bench.report.sweeps import write_sweep_report

    rows = []
    for variant, auc in (("adv_tra", 0.9), ("adv_tra[score=agreement]", 0.5)):
        for point, (n, brake) in enumerate([(2, 0.8), (2, 1.0), (4, 0.8), (4, 1.0)]):
            rows.append({"point": point, "trial": 0, "n": n, "brake": brake, "method": "adv_tra", "variant": variant,
                         "auc": auc, "tpr@0.01": auc})
    labels = _captured_labels(monkeypatch)
    csv, plots = write_sweep_report("s", ["n", "brake"], rows, tmp_path)
    assert sorted(p.name for p in plots) == ["adv_tra_auc_heatmap.png", "adv_tra_score_agreement_auc_heatmap.png",
                                             "adv_tra_score_agreement_tpr_at_0.01_heatmap.png",
                                             "adv_tra_tpr_at_0.01_heatmap.png"]
    frame = pd.read_csv(csv)
    assert frame.groupby("variant")["auc"].mean().to_dict() == {"adv_tra": 0.9, "adv_tra[score=agreement]": 0.5}
    # one heatmap per variant, each titled with it (pooled, there would be one titled "adv_tra")
    assert "adv_tra: AUC (mean over trials)" in labels and "adv_tra[score=agreement]: AUC (mean over trials)" in labels


def test_deployment_sweep_heatmap_of_methods_and_utility(smoke_cfg, smoke_zoo, tmp_path, monkeypatch):
    """A sweep over `zoo.deploy` (docs/deployment.md): chain labels as the axis, in the file's order, the
    deployed positives' utility per row, one methods x deployment heatmap per metric and AUC against utility."""
    sweep = tmp_path / "deploy.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "deploy", "recipe": str(REPO / "recipes" / "smoke.yaml"), "search": "grid", "trials": 1,
        "overrides": ["methods=[akh,oracle_label]", "eval.budgets=[]"],
        "parameters": {"zoo.deploy": [[], [{"random_labels": {"p": 1.0}}], [{"top1": {}}]]}}))
    labels = _captured_labels(monkeypatch)
    outcome = run_sweep(load_sweep(sweep, _overrides(smoke_cfg, tmp_path)), progress=False)
    assert not outcome.failed and len(outcome.rows) == 3 * 2
    by_point = {row["zoo.deploy"]: row for row in outcome.rows if row["method"] == "akh"}
    assert list(by_point) == ["none", "random_labels(p=1)", "top1"]
    # every answer changed: the deployed positives lose accuracy; a label-only API keeps it
    assert by_point["random_labels(p=1)"]["utility_positives"] < by_point["none"]["utility_positives"] - 0.5
    assert by_point["top1"]["utility_positives"] == pytest.approx(by_point["none"]["utility_positives"])
    assert by_point["random_labels(p=1)"]["auc"] < by_point["none"]["auc"]
    names = sorted(p.name for p in outcome.plots)
    assert names == ["detection_vs_utility.png", "methods_auc_heatmap.png", "methods_tpr_at_0.01_heatmap.png",
                     "methods_tpr_at_0.1_heatmap.png"]  # every FPR target: T1%F and T10%F
    assert "methods: AUC (mean over trials)" in labels and "oracle_label" in labels  # one line per method


@pytest.mark.parametrize("n_negative, labels", [(50, ["TPR@0FP", "T10%F"]), (400, ["T1%F", "T10%F"]),
                                                (150, ["TPR@FPR≤0.01 (uncertified, n−=150)", "T10%F"])])
def test_sweep_plots_name_only_what_the_negatives_certify(n_negative, labels):
    import pandas as pd

    from bench.report.sweeps import metrics

    frame = pd.DataFrame([{**row, "n_negative": n_negative} for row in _points(("0.01", "0.1"))])
    assert [label for _, label in metrics(frame, every_target=True)] == ["AUC", *labels]


def test_a_built_in_sweep_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from bench.builtin_recipes import recipes_folder
    from bench.cli import main

    monkeypatch.chdir(tmp_path)  # no sweeps/ here: the name is looked up in the installed recipes
    spec = load_sweep("smoke", smoke_overrides(tmp_path))
    assert spec.path == recipes_folder() / "sweeps" / "smoke.yaml" and spec.recipe == recipes_folder() / "smoke.yaml"
    assert spec.points() == load_sweep(SWEEP, smoke_overrides(tmp_path)).points()
    assert main(["sweep", "smoke", "--wandb-config", "w.yaml", *smoke_overrides(tmp_path), "-q"]) == 0
    definition = yaml.safe_load((tmp_path / "w.yaml").read_text())
    assert definition["name"] == "smoke" and definition["command"][2] == str(recipes_folder() / "smoke.yaml")


def test_a_built_in_sweep_comes_from_the_recipes_package(tmp_path, monkeypatch):
    package = tmp_path / "fpbench_recipes"
    (package / "sweeps").mkdir(parents=True)
    (package / "base.yaml").write_text(f"include: {REPO / 'recipes' / 'smoke.yaml'}\n")
    (package / "sweeps" / "mine.yaml").write_text(yaml.safe_dump(
        {"recipe": "../base.yaml", "overrides": ["methods=[akh]"], "parameters": {"methods.akh.n_samples": [3, 4]}}))
    monkeypatch.setattr("bench.builtin_recipes.recipes_folder", lambda: package)
    spec = load_sweep("mine", smoke_overrides(tmp_path))
    assert spec.name == "mine" and spec.recipe == package / "base.yaml" and len(spec.points()) == 2
    with pytest.raises(ConfigError, match="Built-in sweeps: mine. Give one of those names"):
        load_sweep("smoke", smoke_overrides(tmp_path))


def test_an_unknown_sweep_name_lists_the_built_in_ones(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "smok", "--wandb-config", "w.yaml"]) == 2
    err = capsys.readouterr().err
    assert "Sweep 'smok' is neither a file nor a built-in sweep" in err
    assert "adv_tra_classes" in err and "smoke" in err and not (tmp_path / "w.yaml").exists()
    assert main(["sweep", "no/such.yaml"]) == 2
    assert "Sweep file not found: no/such.yaml" in capsys.readouterr().err
