"""The evaluation loop on the smoke zoo, checked with the guard methods."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from bench.config import load_recipe
from bench.evaluate import run_benchmark
from bench.results import read_result
from tests.conftest import SMOKE, smoke_overrides


@pytest.fixture(scope="module")
def guard_run(smoke_cfg, smoke_zoo):
    cfg = load_recipe(SMOKE, [*smoke_overrides(Path(smoke_cfg.paths.zoo_dir).parent), "methods=[oracle_label,random,akh]"])
    return run_benchmark(cfg, progress=False)


def _by_method(outcome) -> dict:
    return {r["method"]["name"]: r for r in outcome.results.values()}


def test_oracle_guard_is_perfect(guard_run):
    result = _by_method(guard_run)["oracle_label"]
    assert result["metrics"]["auc"] == 1.0
    assert result["metrics"]["tpr_at_fpr"]["0.01"] == 1.0


def test_random_guard_is_chance(guard_run):
    assert 0.3 <= _by_method(guard_run)["random"]["metrics"]["auc"] <= 0.7


def test_akh_is_label_only_and_counts_queries(guard_run):
    result = _by_method(guard_run)["akh"]
    assert result["method"]["access"] == "label"
    assert all(r["queries"] > 0 for r in result["per_model"])
    assert result["queries_per_suspect"] == pytest.approx(np.mean([r["queries"] for r in result["per_model"]]))


def test_results_on_disk_match_sklearn(guard_run):
    for path in guard_run.results:
        result = read_result(path)
        scores = [r["score"] for r in result["per_model"]]
        labels = [1 if r["role"] == "positive" else 0 for r in result["per_model"]]
        assert result["metrics"]["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        assert result["metrics"]["tpr_at_fpr"]["0.1"] == pytest.approx(tpr[fpr <= 0.1].max(), abs=1e-9)


def test_suspects_are_exactly_positives_and_negatives(guard_run, smoke_zoo):
    result = _by_method(guard_run)["akh"]
    scored = {r["model_id"] for r in result["per_model"]}
    expected = {j.model_id for j in smoke_zoo.plan.by_role("positive", "negative")}
    assert scored == expected
    assert smoke_zoo.plan.source.model_id not in scored
    assert not scored & {j.model_id for j in smoke_zoo.plan.by_role("pool")}


def test_second_run_reuses_cached_fingerprints(guard_run, smoke_cfg, caplog):
    cfg = load_recipe(SMOKE, [*smoke_overrides(Path(smoke_cfg.paths.zoo_dir).parent), "methods=[akh]"])
    with caplog.at_level("INFO", logger="bench.evaluate"):
        again = run_benchmark(cfg, progress=False)
    result = _by_method(again)["akh"]
    assert result["timing_s"]["fingerprint_cached"] is True
    assert "reusing cached fingerprint" in caplog.text
    first = _by_method(guard_run)["akh"]
    assert [r["score"] for r in result["per_model"]] == [r["score"] for r in first["per_model"]]


def test_verification_only_fields_reuse_the_fingerprint(smoke_cfg, smoke_zoo, tmp_path):
    # ADV-TRA's threshold and score act at verification: changing them must not regenerate.
    root = Path(smoke_cfg.paths.zoo_dir).parent
    small = ["methods=[adv_tra]", "methods.adv_tra.n_fingerprints=4", "methods.adv_tra.candidates=12",
             "methods.adv_tra.classes_spanned=3", f"paths.cache_dir={tmp_path / 'cache'}",
             f"paths.results_dir={tmp_path / 'results'}"]
    first = _by_method(run_benchmark(load_recipe(SMOKE, [*smoke_overrides(root), *small]), progress=False))["adv_tra"]
    swept = ["methods.adv_tra.score=agreement", "methods.adv_tra.threshold=0.2"]
    again = _by_method(run_benchmark(load_recipe(SMOKE, [*smoke_overrides(root), *small, *swept]), progress=False))["adv_tra"]
    assert first["timing_s"]["fingerprint_cached"] is False and again["timing_s"]["fingerprint_cached"] is True
    assert first["config_sha256"] != again["config_sha256"]  # still two distinct results
    for a, b in zip(first["per_model"], again["per_model"], strict=True):
        assert a["model_id"] == b["model_id"]
        assert b["score"] == pytest.approx(b["extras"]["agreement"])
        assert a["extras"]["mean_mutation_rate"] == b["extras"]["mean_mutation_rate"]  # the same fingerprint


def test_leaderboard_written(guard_run):
    text = guard_run.leaderboard.read_text()
    assert "oracle_label" in text and "akh" in text


class RunSpy:
    """Wraps a real W&B run and records what the library gives it through the public API."""

    def __init__(self, run) -> None:
        self._run, self.logged, self.summary_items = run, {}, {}
        spy = self

        class Summary:
            def update(self, items: dict) -> None:
                spy.summary_items.update(items)
                run.summary.update(items)

        self.summary = Summary()

    def log(self, data: dict, *args, **kwargs) -> None:
        self.logged.update(data)
        self._run.log(data, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._run, name)


def test_wandb_offline_stays_in_configured_dirs(smoke_cfg, smoke_zoo, tmp_path, monkeypatch):
    """Offline W&B: a run folder, the summary metrics and the interactive ROC given to the real W&B
    run (recorded through its public calls), and nothing outside the configured folders."""
    wandb = pytest.importorskip("wandb")
    spies: list[RunSpy] = []
    real_init = wandb.init

    def init(*args, **kwargs):
        spies.append(RunSpy(real_init(*args, **kwargs)))
        return spies[-1]

    monkeypatch.setattr(wandb, "init", init)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    root = tmp_path / "out"
    overrides = [*smoke_overrides(root), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}", "tracking.wandb.mode=offline",
                 "tracking.wandb.log_zoo=false", "methods=[oracle_label]"]
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    run_benchmark(load_recipe(SMOKE, overrides), progress=False)
    runs = list((root / "cache" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, sorted(str(p) for p in (root / "cache").rglob("*"))[:20]
    (spy,) = spies
    summary = spy.summary_items
    assert summary["auc"] == 1.0 and summary["tpr_at_fpr/0.01"] == 1.0
    assert isinstance(spy.logged["roc_curve"], wandb.plot.CustomChart)
    assert summary["n_negative"] == len(smoke_zoo.plan.by_role("negative"))
    assert os.listdir(work) == []
    assert not any(home.iterdir()), list(home.rglob("*"))


def test_a_failing_method_does_not_cost_the_others(smoke_cfg, smoke_zoo, tmp_path, monkeypatch):
    from bench.methods.akh import Akh

    def broken(self, source, ctx):
        raise RuntimeError("no fingerprint today")

    monkeypatch.setattr(Akh, "generate", broken)
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}",
                              "methods=[akh,oracle_label]"])
    outcome = run_benchmark(cfg, progress=False)
    assert "no fingerprint today" in outcome.failed["akh"]
    assert [r["method"]["name"] for r in outcome.results.values()] == ["oracle_label"]


def test_zoo_training_logs_offline_inside_the_cache(tmp_path, monkeypatch):
    """Each trained zoo model gets an offline W&B run (with its model artifact) under the configured
    folder, nothing in the cwd or the home folder."""
    from bench.zoo.build import build_zoo

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    from bench import tracking

    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path / "out"), "tracking.wandb.mode=offline",
                              "zoo.negatives=[]", "zoo.positives=[{attack: prune, rate: 0.4, epochs: 0}]",
                              "zoo.source.epochs=1"])
    report = build_zoo(cfg, progress=False, logger_factory=tracking.training_logger_factory(cfg))
    assert len(report.built) == 2
    runs = list((tmp_path / "out" / "cache" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    assert os.listdir(work) == []
    assert not any(home.iterdir()), list(home.rglob("*"))


def test_baselines_on_the_smoke_zoo_with_pools(smoke_cfg, smoke_zoo, tmp_path):
    """IPGuard, CAE, UAP and SAC each write a result; CAE/UAP's defender pools are recorded and are
    never among the scored suspects; UAP/SAC declare probabilities, IPGuard/CAE labels."""
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}",
                              "methods=[ipguard,cae,uap,sac]"])
    outcome = run_benchmark(cfg, progress=False)
    assert not outcome.failed
    results = _by_method(outcome)
    assert set(results) == {"ipguard", "cae", "uap", "sac"}
    assert {m: r["method"]["access"] for m, r in results.items()} == {
        "ipguard": "label", "cae": "label", "uap": "probs", "sac": "probs"}
    for name in ("cae", "uap"):
        pool = results[name]["pool"]
        assert pool and pool["model_ids"] and pool["train_seconds"] >= 0
        assert not set(pool["model_ids"]) & {r["model_id"] for r in results[name]["per_model"]}
    assert results["ipguard"]["pool"] is None


def test_run_works_at_the_recipe_threads_and_gives_the_callers_back(smoke_cfg, smoke_zoo, tmp_path, monkeypatch):
    import torch

    from bench.methods.akh import Akh

    seen: dict[str, int] = {}
    generate, measure = Akh.generate, Akh.measure

    def generate_spy(self, source, ctx):
        seen["generate"] = torch.get_num_threads()
        return generate(self, source, ctx)

    def measure_spy(self, fingerprint, oracle):
        seen["measure"] = torch.get_num_threads()
        return measure(self, fingerprint, oracle)

    monkeypatch.setattr(Akh, "generate", generate_spy)
    monkeypatch.setattr(Akh, "measure", measure_spy)
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}", "methods=[akh]",
                              "compute.cpu_threads=1"])
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        run_benchmark(cfg, progress=False)
        assert seen == {"generate": 1, "measure": 1}
        assert torch.get_num_threads() == 3  # a notebook calling run_benchmark keeps its own setting

        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("bench.evaluate.write_result", disk_full)
        with pytest.raises(OSError, match="No space left"):
            run_benchmark(cfg, progress=False)
        assert torch.get_num_threads() == 3  # and when the run fails
    finally:
        torch.set_num_threads(before)


def test_per_model_shows_how_far_each_suspect_moved(guard_run, smoke_zoo):
    """Every scored suspect carries its manifest test accuracy and label agreement with the source."""
    records = smoke_zoo.store.records()
    for path in guard_run.results:
        for entry in read_result(path)["per_model"]:
            record = records[entry["model_id"]]
            assert entry["test_acc"] == record["test_acc"]
            assert entry["source_agreement"] == record["source_agreement"]
            assert 0.0 <= entry["source_agreement"] <= 1.0
