"""bench.results: schema validation, round trip, atomic writes, metric re-checks."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.metrics import BootstrapConfig
from bench.results import (
    SCHEMA_VERSION,
    ResultError,
    check_result,
    iter_results,
    make_result,
    read_result,
    result_path,
    validate_result,
    write_result,
)

ATTACKS = ("FTLL", "RTAL", "prune")
KINDS = ("SAST", "SADT", "DAST", "DADT")



def _version(method: str) -> str:
    """The registered version of a registered method (`--check` flags a row of an older one), else "1"."""
    from bench.methods import METHODS

    return str(METHODS.get(method).version) if method in METHODS else "1"

def synthetic_result(
    method: str = "adv_tra", seed: int = 0, shift: float = 1.0, zoo: str = "tiny", dataset: str = "cifar10",
    n: int = 12, bootstrap: int = 50, config: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A complete result for `n` positives and `n` negatives with seeded random scores."""
    rng = np.random.default_rng([seed, len(method)])
    per_model = []
    for i in range(2 * n):
        positive = i < n
        attack, kind = (ATTACKS[i % 3], None) if positive else (None, KINDS[i % 4])
        per_model.append({
            "model_id": f"m{i:03d}", "role": "positive" if positive else "negative",
            "attack": attack, "kind": kind, "group": attack or kind,
            "score": round(float(rng.normal(shift if positive else 0.0, 1.0)), 6),
            "queries": 100, "extras": {"agreement": round(float(rng.random()), 6)},
        })  # fmt: skip
    return make_result(
        seed=seed,
        method={"name": method, "version": _version(method), "access": "label", "config": {"n": 10}},
        config=config or {"method": method, "zoo": zoo},
        zoo={
            "name": zoo, "manifest_sha256": "ab" * 32, "dataset": dataset,
            "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"},
            "source_id": "src", "source_test_acc": 0.9,
        },  # fmt: skip
        per_model=per_model,
        timing_s={"generate": 1.5, "verify": 0.25, "total": 1.75, "fingerprint_cached": False},
        bootstrap=BootstrapConfig(n=bootstrap, seed=seed),
        git_path=None,
    )


@pytest.fixture
def result() -> dict[str, Any]:
    return synthetic_result()


def test_result_path() -> None:
    path = result_path("res", "tiny", "adv_tra", "0123456789abcdef", 3)
    assert path == Path("res/runs/tiny/adv_tra/01234567-s3.json")


def test_round_trip(result: dict[str, Any], tmp_path: Path) -> None:
    path = result_path(tmp_path, "tiny", "adv_tra", result["config_sha256"], 0)
    write_result(result, path)
    assert read_result(path) == result
    assert iter_results(tmp_path) == [(path, result)]
    assert isinstance(json.loads(path.read_text())["metrics"]["auc"], float)  # a number, not a string


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("config_sha256"), "config_sha256"),
        (lambda d: d["zoo"]["split_hashes"].pop("attacker"), "zoo.split_hashes.attacker"),
        (lambda d: d["metrics"].__setitem__("auc", "0.9"), "metrics.auc"),
        (lambda d: d["per_model"][3].__setitem__("score", float("nan")), "per_model[3].score"),
        (lambda d: d["per_model"][0].__setitem__("role", "suspect"), "per_model[0].role"),
        (lambda d: d["timing_s"].__setitem__("fingerprint_cached", 1), "timing_s.fingerprint_cached"),
        (lambda d: d["metrics"]["tpr_at_fpr"].__setitem__("0.01", None), "metrics.tpr_at_fpr.0.01"),
    ],
)
def test_invalid_field_named(result: dict[str, Any], edit: Any, field: str) -> None:
    edit(result)
    with pytest.raises(ResultError, match=re.escape(f"'{field}'")):
        validate_result(result, "some/file.json")
    with pytest.raises(ResultError, match="some/file.json"):
        validate_result(result, "some/file.json")


def test_wrong_schema_version(result: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({**result, "schema_version": 99}))
    with pytest.raises(ResultError, match=f"schema_version 99 .*schema_version {SCHEMA_VERSION}") as info:
        read_result(path)
    assert str(path) in str(info.value)


def test_invalid_result_is_not_written(result: dict[str, Any], tmp_path: Path) -> None:
    del result["metrics"]
    with pytest.raises(ResultError, match="'metrics'"):
        write_result(result, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_write_is_atomic(result: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    write_result(result, path)
    before = path.read_bytes()

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    changed = {**result, "seed": 5}
    with pytest.raises(OSError, match="disk full"):
        write_result(changed, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_check_result(result: dict[str, Any]) -> None:
    assert check_result(result) == []
    edited = copy.deepcopy(result)
    edited["metrics"]["auc"] = result["metrics"]["auc"] - 0.01
    problems = check_result(edited)
    assert len(problems) == 1 and "metrics.auc" in problems[0]
    edited = copy.deepcopy(result)
    edited["per_model"][0]["score"] = -100.0  # a score edited after the metrics were computed
    assert any("metrics.auc" in p for p in check_result(edited))


def test_hardware_recorded(result: dict[str, Any]) -> None:
    hardware = result["hardware"]
    assert hardware["cpu_count"] == os.cpu_count()
    assert isinstance(hardware["torch_threads"], int) and hardware["torch_threads"] >= 1
    assert isinstance(hardware["gpus"], list) and all(isinstance(g, str) for g in hardware["gpus"])


def test_hardware_is_optional_but_checked(result: dict[str, Any]) -> None:
    older = copy.deepcopy(result)
    del older["hardware"]  # results written before the field existed still validate
    validate_result(older)
    for edit, field in ((lambda h: h.__setitem__("gpus", "H200"), "hardware.gpus"),
                        (lambda h: h.__setitem__("gpus", [0]), "hardware.gpus"),
                        (lambda h: h.pop("torch_threads"), "hardware.torch_threads"),
                        (lambda h: h.__setitem__("cpu_count", "2"), "hardware.cpu_count")):
        broken = copy.deepcopy(result)
        edit(broken["hardware"])
        with pytest.raises(ResultError, match=re.escape(f"'{field}'")):
            validate_result(broken, "r.json")


def test_ci_records_its_bootstrap_seed() -> None:
    result = synthetic_result(seed=7, bootstrap=20)
    assert result["metrics"]["ci"]["seed"] == 7 and result["metrics"]["ci"]["n"] == 20
    assert synthetic_result(bootstrap=0)["metrics"]["ci"] is None


def test_integrity_fields_are_optional_but_checked(result: dict[str, Any]) -> None:
    """Hashes a result names (docs/decisions.md, Integrity): absent in older files, a sha256 when present."""
    validate_result(result)  # written without them, as the published results were
    named = copy.deepcopy(result)
    named["per_model"][0]["sha256"] = "ab" * 32
    named["zoo"]["source_sha256"] = "cd" * 32
    named["fingerprint"] = {"sha256": "ef" * 32, "generation_target": None}
    validate_result(named)
    for edit, field in ((lambda d: d["per_model"][2].__setitem__("sha256", "AB" * 32), "per_model[2].sha256"),
                        (lambda d: d["zoo"].__setitem__("source_sha256", "ab" * 8), "zoo.source_sha256"),
                        (lambda d: d["fingerprint"].__setitem__("sha256", None), "fingerprint.sha256"),
                        (lambda d: d["metrics"]["ci"].__setitem__("seed", "0"), "metrics.ci.seed")):
        broken = copy.deepcopy(named)
        edit(broken)
        with pytest.raises(ResultError, match=re.escape(f"'{field}'")):
            validate_result(broken, "r.json")
