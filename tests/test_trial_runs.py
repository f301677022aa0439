"""`fpbench run` with `trials: {count, new_source}` (bench/trial_runs.py): trial t runs with seed + t and
source seed + t, shares the models that do not depend on the source, resumes per (trial, method), and
writes its wall time by phase. Everything runs through `bench.cli.main` on a tiny smoke zoo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl

from bench.cli import main
from bench.methods.akh import Akh
from bench.results import read_result
from tests.conftest import SMOKE, smoke_overrides

# Two trials, new sources 10 and 11: per trial a source and one positive; one negative shared by both.
TRIALS = ("trials.count=2", "trials.new_source=true", "zoo.source.seed=10", "zoo.source.epochs=1",
          "zoo.positives=[{attack: ftal, epochs: 1}]", "zoo.negatives=[{kind: SAST, seed: 1, epochs: 1}]",
          "methods=[akh,random]")


def fpbench_run(root: Path, *extra: str) -> int:
    return main(["run", str(SMOKE), *smoke_overrides(root), *TRIALS, *extra])


def results(root: Path) -> dict[Path, dict[str, Any]]:
    return {p: read_result(p) for p in sorted((root / "results" / "runs" / "smoke").rglob("*.json"))}


def manifest(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "zoo" / "smoke" / "manifest.jsonl").read_text().splitlines()]


def mtimes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


@pytest.fixture(scope="module")
def trial_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """One two-trial run; the later tests of this file rerun it (they come last, in file order)."""
    root = tmp_path_factory.mktemp("trials")
    return root, fpbench_run(root)


def test_each_trial_writes_one_result_per_method_with_its_seeds(trial_run):
    root, code = trial_run
    assert code == 0
    found = sorted((r["method"]["name"], r["seed"], r["config"]["zoo"]["source"]["seed"], p.name.endswith(f"-s{r['seed']}.json"))
                   for p, r in results(root).items())  # fmt: skip
    assert found == [("akh", 0, 10, True), ("akh", 1, 11, True), ("random", 0, 10, True), ("random", 1, 11, True)]
    sources = {r["seed"]: r["zoo"]["source_id"] for r in results(root).values()}
    assert sources[0] != sources[1]  # each trial fingerprints its own source


def test_negatives_are_built_once_and_each_trial_has_its_source(trial_run):
    root, _ = trial_run
    records = manifest(root)
    roles = sorted(r["role"] for r in records)
    assert roles == ["negative", "positive", "positive", "source", "source"]  # the SAST negative once, not per trial
    sources = {r["seed"]: r["model_id"] for r in records if r["role"] == "source"}
    assert sorted(sources) == [10, 11]
    assert sorted(r["parent"] for r in records if r["role"] == "positive") == sorted(sources.values())
    (negative,) = [r["model_id"] for r in records if r["role"] == "negative"]
    for result in results(root).values():  # both trials scored the same negative
        assert [m["model_id"] for m in result["per_model"] if m["role"] == "negative"] == [negative]


def test_timing_file_has_every_trials_phases(trial_run):
    root, _ = trial_run
    record = json.loads((root / "results" / "perf" / "trials-smoke.json").read_text())
    assert record["trials"] == 2 and record["new_source"] is True
    trials = [(t["trial"], t["seed"], t["source_seed"], t["skipped"]) for t in record["per_trial"]]
    assert trials == [(0, 0, 10, False), (1, 1, 11, False)]
    for trial in record["per_trial"]:
        assert set(trial["phases"]) == {"zoo", "generate akh", "generate random", "verify", "report"}
        assert all(seconds >= 0 for seconds in trial["phases"].values())
    assert record["per_trial"][0]["models_built"] == 3 and record["per_trial"][1]["models_built"] == 2  # negative shared
    assert record["phase_totals"]["verify"] == pytest.approx(sum(t["phases"]["verify"] for t in record["per_trial"]), abs=2e-3)


def test_a_rerun_skips_every_trial_and_trains_nothing(trial_run, monkeypatch, capsys):
    root, _ = trial_run
    files = [*results(root), root / "zoo" / "smoke" / "manifest.jsonl", root / "results" / "perf" / "trials-smoke.json"]
    before = mtimes(files)

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun of finished trials must not train")

    monkeypatch.setattr(pl.Trainer, "fit", no_training)
    capsys.readouterr()
    assert fpbench_run(root) == 0
    out = capsys.readouterr().out
    assert out.count("every result exists, skipped") == 2
    assert mtimes(files) == before  # no result, manifest or timing file rewritten


def test_a_deleted_result_reruns_only_that_trial_and_method(trial_run, monkeypatch, capsys, caplog):
    root, _ = trial_run
    paths = results(root)
    (deleted,) = [p for p, r in paths.items() if r["method"]["name"] == "random" and r["seed"] == 1]
    kept = [p for p in paths if p != deleted]
    before = mtimes(kept)
    deleted.unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("the zoo is built: nothing to train")

    def no_generation(self, source, ctx):
        raise AssertionError("akh's results exist: its fingerprint must not be generated again")

    monkeypatch.setattr(pl.Trainer, "fit", no_training)
    monkeypatch.setattr(Akh, "generate", no_generation)
    capsys.readouterr()
    with caplog.at_level("INFO", logger="bench"):
        assert fpbench_run(root) == 0
    out = capsys.readouterr().out
    assert deleted.is_file() and read_result(deleted)["seed"] == 1
    assert mtimes(kept) == before  # trial 0 and akh of trial 1 untouched
    assert "trial 1 of 2 (seed=0, source seed=10): every result exists, skipped" in out
    running = [r.getMessage() for r in caplog.records if ": running " in r.getMessage()]
    assert running == ["trial 2 of 2 (seed=1, source seed=11): running random"]
    timing = json.loads((root / "results" / "perf" / "trials-smoke.json").read_text())
    assert [t["skipped"] for t in timing["per_trial"]] == [True, False]
    assert set(timing["per_trial"][1]["phases"]) == {"zoo", "generate random", "verify", "report"}


def test_a_sast_seed_equal_to_a_later_source_seed_is_refused_before_training(tmp_path, capsys):
    """Trial 1's source seed is 11: a SAST negative with seed 11 (and the source's recipe) is that source."""
    code = fpbench_run(tmp_path, "zoo.negatives=[{kind: SAST, seed: 11, epochs: 1}]")
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("fpbench: error: zoo.negatives[0]: a SAST negative with the source's own seed (11)")
    assert not (tmp_path / "zoo").exists() and not (tmp_path / "results").exists()  # trial 0 trained nothing


def test_zero_trials_is_refused(tmp_path, capsys):
    assert fpbench_run(tmp_path, "trials.count=0") == 2
    err = capsys.readouterr().err
    assert "trials.count=0 must be >= 1" in err
    assert not (tmp_path / "zoo").exists()



def test_two_entries_of_one_method_add_up_in_the_generate_phase(smoke_root, smoke_zoo, monkeypatch):
    """Two akh entries: the phase `generate akh` is the time of both generations, not the last one's."""
    import time

    import bench.evaluate as evaluate
    from bench.config import load_recipe

    real = evaluate._generate

    def slow(*args: Any) -> None:
        time.sleep(0.5)
        real(*args)

    monkeypatch.setattr(evaluate, "_generate", slow)
    results_dir = smoke_root / "two_akh_results"
    cfg = load_recipe(SMOKE, [*smoke_overrides(smoke_root), f"paths.results_dir={results_dir}", "methods=[akh,akh]"])
    assert [m["name"] for m in cfg.methods] == ["akh", "akh"]
    outcome = evaluate.run_benchmark(cfg, progress=False)
    assert outcome.phases["generate akh"] >= 1.0  # 0.5 s each; the last entry alone would be 0.5 s


@pytest.mark.parametrize(("workers", "threads", "expected"), [(None, 1, "cores"), (3, 1, 3), (None, None, 1)])
def test_timing_record_names_the_worker_count_used(tmp_path, monkeypatch, workers, threads, expected):
    """`compute.workers: null` (the default: one job per core) is recorded as the count it resolved to."""
    from bench.config import load_recipe
    from bench.trial_runs import TrialsOutcome, timing_record
    from bench.zoo import workers as zoo_workers

    monkeypatch.setattr(zoo_workers, "usable_cores", lambda: 4)
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), f"compute.workers={'null' if workers is None else workers}",
                              f"compute.cpu_threads={'null' if threads is None else threads}"])
    record = timing_record([cfg], TrialsOutcome())
    assert record["workers"] == (4 if expected == "cores" else expected) and record["cpu_threads"] == threads
