"""Published results stay published: local default, no silent overwrite, comparison with the published spread."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.config import load_recipe
from bench.published import (
    compare_with_published,
    comparison_lines,
    default_published_dir,
    number_differences,
    trial_group_key,
)
from bench.results import read_result, result_path, write_result
from tests.conftest import REPO, SMOKE, smoke_overrides
from tests.test_results import synthetic_result

# --- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_no_recipe_writes_into_the_published_folder_by_default(recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # relative paths resolve against the working folder, as for `make quickstart`
    cfg = load_recipe(recipe, ["zoo.name=any"])  # paper_zoo.yaml is a fragment that leaves the name to includers
    assert Path(cfg.paths.results_dir).resolve() != (REPO / "results").resolve()
    assert cfg.paths.overwrite_published is False


def test_default_published_dir_is_the_checkouts_results() -> None:
    assert default_published_dir() == REPO / "results"


# --- the comparison, on constructed published results ---------------------------------------------


def _publish(folder: Path, aucs: list[float], *, version: str | None = None, ci: list[float] | None = None,
             method: str = "akh", config: dict[str, Any] | None = None) -> None:
    """Published trials (seeds 0..n-1) of one benchmark with the given AUCs."""
    for seed, auc in enumerate(aucs):
        result = synthetic_result(method=method, seed=seed, config=config)
        if version is not None:  # default: the registered version, as `synthetic_result` writes
            result["method"]["version"] = version
        result["metrics"]["auc"] = auc
        result["metrics"]["ci"] = None if ci is None else {**result["metrics"]["ci"], "auc": ci}
        write_result(result, result_path(folder, result["zoo"]["name"], method, result["config_sha256"], seed))


def _yours(auc: float, method: str = "akh", seed: int = 7) -> dict[str, dict[str, Any]]:
    result = synthetic_result(method=method, seed=seed)
    result["metrics"]["auc"] = auc
    return {f"local/{method}-s{seed}.json": result}


def _auc(folder: Path, auc: float) -> tuple[Any, list[str]]:
    comparison = compare_with_published(_yours(auc), folder)[0]
    return comparison.metrics[0], comparison_lines([comparison], folder)


def test_within_and_outside_the_published_spread(tmp_path: Path) -> None:
    _publish(tmp_path, [0.80, 0.82, 0.84])  # mean 0.82, sd 0.02: the spread is 0.78-0.86
    inside, lines = _auc(tmp_path, 0.85)
    assert inside.label == "AUC" and inside.within is True
    assert inside.published_mean == pytest.approx(0.82) and inside.published_sd == pytest.approx(0.02)
    assert (inside.low, inside.high) == (pytest.approx(0.78), pytest.approx(0.86))
    assert "vs 3 published trial(s)" in lines[1]
    assert "AUC    0.850  vs published 0.820 ± 0.020 over 3 trials (mean ± 2 sd 0.780–0.860): within" in lines[2]
    outside, lines = _auc(tmp_path, 0.90)
    assert outside.within is False and "OUTSIDE the published spread" in lines[2]
    assert _auc(tmp_path, 0.77)[0].within is False


def test_one_published_trial_uses_its_bootstrap_ci_and_says_so(tmp_path: Path) -> None:
    _publish(tmp_path, [0.80], ci=[0.70, 0.90])
    inside, lines = _auc(tmp_path, 0.85)
    assert inside.within is True and (inside.low, inside.high) == (0.70, 0.90)
    assert "published 0.800 from ONE trial only (its bootstrap CI 0.700–0.900): within that CI" in lines[2]
    outside, lines = _auc(tmp_path, 0.95)
    assert outside.within is False and "OUTSIDE that CI" in lines[2]


def test_one_published_trial_without_ci_is_not_judged(tmp_path: Path) -> None:
    _publish(tmp_path, [0.80], ci=None)
    metric, lines = _auc(tmp_path, 0.85)
    assert metric.within is None and "cannot judge from one number" in lines[2]


def test_only_the_same_benchmark_and_version_is_compared(tmp_path: Path) -> None:
    _publish(tmp_path, [0.80, 0.82], config={"method": "akh", "zoo": "tiny", "data": "other"})  # another config
    _publish(tmp_path, [0.5, 0.6], method="random")  # another method
    comparison = compare_with_published(_yours(0.81), tmp_path)[0]
    assert comparison.published_files == [] and comparison.metrics == []
    assert "no published result of this benchmark" in comparison_lines([comparison], tmp_path)[1]
    other = tmp_path / "v2"
    _publish(other, [0.80, 0.82], version="1")  # an older version of akh (registered: 2)
    comparison = compare_with_published(_yours(0.81), other)[0]
    assert comparison.published_files == [] and comparison.other_versions == ["1"]
    assert "published only for method version(s) 1" in comparison_lines([comparison], other)[1]


def test_no_published_folder() -> None:
    assert compare_with_published(_yours(0.8), None)[0].metrics == []
    assert "none found" in comparison_lines([], None)[0]


def test_trial_group_key_ignores_only_trial_seeds() -> None:
    result = synthetic_result(config={"seed": 0, "zoo": {"name": "z", "source": {"seed": 0, "epochs": 3}},
                                      "eval": {"progress": True, "bootstrap": {"n": 10}}, "method": {"name": "akh"}})
    trial = copy.deepcopy(result)
    trial["config"]["seed"], trial["config"]["zoo"]["source"]["seed"] = 4, 4
    trial["config"]["eval"]["progress"] = False
    assert trial_group_key(trial) == trial_group_key(result)
    trial["config"]["zoo"]["source"]["epochs"] = 4
    assert trial_group_key(trial) != trial_group_key(result)


def test_number_differences() -> None:
    result = synthetic_result()
    assert number_differences(result, copy.deepcopy(result)) == []
    later = copy.deepcopy(result)
    later["created"], later["timing_s"]["verify"], later["hardware"]["cpu"] = "2031", 9.0, "another CPU"
    assert number_differences(result, later) == []  # informational fields are not numbers of the benchmark
    later["per_model"][2]["score"] += 0.5
    later["metrics"]["auc"] += 0.1
    diffs = number_differences(result, later)
    assert any(d.startswith("AUC ") for d in diffs) and "1 of 24 suspect scores/query counts" in diffs


# --- fpbench run on the smoke zoo -------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], smoke_cfg: Any, *overrides: str) -> tuple[int, str]:
    root = Path(smoke_cfg.paths.zoo_dir).parent  # the session's zoo and fingerprint cache
    base = [o for o in smoke_overrides(root) if not o.startswith("paths.results_dir=")]
    code = main(["-q", "run", str(SMOKE), *base, "paths.published_dir=results", "methods=[akh,random]", *overrides])
    out = capsys.readouterr()
    return code, out.out + out.err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_goes_local_and_never_silently_replaces_published(
    smoke_cfg: Any, smoke_zoo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a checkout-like folder: results/ is the published benchmark
    code, out = _run(capsys, smoke_cfg, "paths.results_dir=results")  # publishing is explicit
    assert code == 0, out
    published = Path("results")
    files = sorted((published / "runs" / "smoke").rglob("*.json"))
    assert [f.parent.name for f in files] == ["akh", "random"]
    fresh = read_result(files[0])
    assert fresh["hardware"]["cpu_count"] == os.cpu_count() and fresh["hardware"]["torch_threads"] >= 1

    before = _snapshot(published)
    code, out = _run(capsys, smoke_cfg)  # a newcomer's rerun: the default results_dir
    assert code == 0, out
    assert _snapshot(published) == before
    local = sorted(Path("local_results/runs/smoke").rglob("*.json"))
    assert [f.relative_to("local_results") for f in local] == [f.relative_to("results") for f in files]
    assert "compared with the published benchmark in results" in out
    assert out.count("vs 1 published trial(s)") == 2 and "from ONE trial only" in out

    code, out = _run(capsys, smoke_cfg, "paths.results_dir=results")  # the same numbers: published bytes kept
    assert code == 0, out
    assert _snapshot(published) == before

    tampered = json.loads(files[0].read_text())
    tampered["metrics"]["auc"] = 0.123  # the published numbers differ from what this run measures
    files[0].write_text(json.dumps(tampered))
    kept = files[0].read_bytes()
    code, out = _run(capsys, smoke_cfg, "paths.results_dir=results")
    assert code == 1
    assert "refused to overwrite the published result" in out and "paths.overwrite_published=true" in out
    assert "AUC 0.1230 ->" in out and "NOT WRITTEN" in out
    assert files[0].read_bytes() == kept
    assert files[1].read_bytes() == before[files[1].relative_to(published).as_posix()]

    code, out = _run(capsys, smoke_cfg, "paths.results_dir=results", "paths.overwrite_published=true")
    assert code == 0, out
    assert read_result(files[0])["metrics"]["auc"] == fresh["metrics"]["auc"]


def test_uncertifiable_targets_are_compared_as_tpr_at_zero_false_positives(tmp_path: Path) -> None:
    """With few negatives, T1%F and T10%F become one `TPR@0FP` line, computed from per_model on both sides."""
    _publish(tmp_path, [0.80, 0.82, 0.84])
    comparison = compare_with_published(_yours(0.83), tmp_path)[0]
    labels = [m.label for m in comparison.metrics]
    n_negative = _yours(0.83)["local/akh-s7.json"]["metrics"]["n_negative"]
    assert n_negative < 29 and labels == ["AUC", "TPR@0FP"]
    lines = comparison_lines([comparison], tmp_path)
    assert not any("T1%F" in line or "T10%F" in line for line in lines)
