"""Integrity end to end (issue #16, items 7-10): the fingerprint cache verifies its sha256, results name
the checkpoints and fingerprint they measured, `fpbench leaderboard --check` re-derives hashes, CI and
zoo facts, and a damaged manifest names its file, line or model and the fix."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.config import load_recipe
from bench.evaluate import MethodRun, _generate, run_benchmark
from bench.io import sha256_json
from bench.methods.base import Fingerprint, FingerprintIntegrityError, FingerprintMethod, GenerationContext
from bench.metrics import BootstrapConfig
from bench.nets import build_model
from bench.report import check_results
from bench.results import make_result, result_path, write_result
from bench.zoo.store import ZooError, ZooStore
from tests.conftest import REPO, SMOKE, smoke_overrides

DATA = {"name": "toy", "in_channels": 1, "num_classes": 3, "image_size": 4, "mean": [0.5], "std": [0.5]}
ARCH_PARAMS = {"hidden": 8, "depth": 1}
# (model id, role, attack, kind)
MODELS = (("src000000000", "source", None, None), ("pos000000000", "positive", "ftll", None),
          ("pos000000001", "positive", "ftal", None), ("neg000000000", "negative", None, "SAST"),
          ("neg000000001", "negative", None, "DAST"))
SCORES = {"pos000000000": 0.9, "pos000000001": 0.4, "neg000000000": 0.5, "neg000000001": 0.1}


# -- 7: the fingerprint cache ----------------------------------------------------------------------
class Counting(FingerprintMethod):
    """A stub method (not registered) that counts its generations."""

    name = "counting"
    Config = dict
    calls = 0

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        type(self).calls += 1
        return Fingerprint(self.name, {"x": torch.arange(6, dtype=torch.float32)}, {"n_fingerprints": 6})

    def _score(self, fp: Fingerprint, suspect: Any) -> float:
        return 0.0


def _cached(cache: Path) -> MethodRun:
    run = MethodRun(entry={"name": "counting"}, method=Counting({}), config_sha256="0" * 64)
    ctx = GenerationContext(datamodule=None, seed=0, device=torch.device("cpu"), num_classes=3)
    _generate(run, nn.Linear(2, 2), ctx, cache)
    return run


def test_saved_fingerprint_is_verified_on_load(tmp_path):
    fp = Fingerprint("m", {"x": torch.ones(3)}, {"note": "a"})
    folder = fp.save(tmp_path / "fp")
    assert len(fp.sha256) == 64 and Fingerprint.load(folder).sha256 == fp.sha256
    meta = folder / "fingerprint.json"
    original = meta.read_bytes()
    meta.write_text(meta.read_text().replace('"a"', '"b"'))  # the meta is covered too
    with pytest.raises(FingerprintIntegrityError, match="fingerprint.json was changed") as info:
        Fingerprint.load(folder)
    assert info.value.path == meta and not info.value.unrecorded
    meta.write_bytes(original)
    tensors = folder / "fingerprint.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 1  # one bit of one tensor value
    tensors.write_bytes(bytes(data))
    with pytest.raises(FingerprintIntegrityError, match="fingerprint.safetensors was changed"):
        Fingerprint.load(folder)
    (folder / "sha256.json").unlink()  # as an entry cached before the hashes existed
    with pytest.raises(FingerprintIntegrityError, match="sha256.json is missing") as info:
        Fingerprint.load(folder)
    assert info.value.unrecorded
    assert Fingerprint.load(folder, verify=False).tensors["x"].shape == (3,)


def test_edited_cache_entry_is_moved_aside_and_regenerated(tmp_path, caplog):
    cache = tmp_path / "fingerprints" / "counting" / "key"
    Counting.calls = 0
    first = _cached(cache)
    assert (Counting.calls, first.cached) == (1, False)
    again = _cached(cache)
    assert (Counting.calls, again.cached, again.fingerprint.sha256) == (1, True, first.fingerprint.sha256)
    tensors = cache / "fingerprint.safetensors"
    edited = Fingerprint("counting", {"x": torch.zeros(6)}, {"n_fingerprints": 6})
    edited.save(tmp_path / "other")
    tensors.write_bytes((tmp_path / "other" / "fingerprint.safetensors").read_bytes())  # a valid file, other values
    with caplog.at_level(logging.WARNING, logger="bench.evaluate"):
        third = _cached(cache)
    assert Counting.calls == 2 and not third.cached  # regenerated, the edited values never used
    assert torch.equal(third.fingerprint.tensors["x"], torch.arange(6, dtype=torch.float32))
    assert third.fingerprint.sha256 == json.loads((cache / "sha256.json").read_text())["sha256"]  # the new entry's
    aside = [p for p in cache.parent.iterdir() if p.name.startswith("key.rejected-")]
    assert len(aside) == 1 and str(tensors) in caplog.text and str(aside[0]) in caplog.text
    assert torch.equal(Fingerprint.load(aside[0], verify=False).tensors["x"], torch.zeros(6))  # kept for inspection


def test_cache_entry_without_hashes_is_regenerated_in_place(tmp_path):
    cache = tmp_path / "key"
    Counting.calls = 0
    _cached(cache)
    (cache / "sha256.json").unlink()
    run = _cached(cache)
    assert Counting.calls == 2 and not run.cached and (cache / "sha256.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


# -- a tiny zoo and results measured on it ------------------------------------------------------------
def tiny_zoo(root: Path) -> ZooStore:
    store = ZooStore(root / "toy")
    records = {}
    for i, (model_id, role, attack, kind) in enumerate(MODELS):
        shape = {k: v for k, v in DATA.items() if k != "name"}
        model = build_model("mlp", **shape, params=ARCH_PARAMS, seed=i)
        sha = store.save_model(model_id, model, {"model_id": model_id})
        records[model_id] = {"model_id": model_id, "role": role, "attack": attack, "kind": kind, "arch": "mlp",
                             "provenance": f"toy {model_id}", "arch_params": ARCH_PARAMS, "data": DATA, "sha256": sha,
                             "test_acc": 0.5 + i / 100, "train_seconds": 0.0}
    store.write_records(records)
    return store


def zoo_result(store: ZooStore, roles: dict[str, str] | None = None) -> dict[str, Any]:
    records = store.records()
    roles = roles or {}
    per_model = [{"model_id": i, "role": roles.get(i, r["role"]), "attack": r["attack"], "kind": r["kind"],
                  "group": i if i in roles else (r["attack"] or r["kind"]), "score": SCORES[i], "queries": 10,
                  "test_acc": r["test_acc"], "sha256": r["sha256"]}
                 for i, r in records.items() if r["role"] != "source"]
    source = records["src000000000"]
    boot = {"n": 50, "confidence": 0.95, "seed": 3}
    return make_result(
        seed=0, method={"name": "akh", "version": "2", "access": "label", "config": {}},
        config={"seed": 0, "eval": {"bootstrap": boot}, "zoo": {"name": "toy"}, "method": {"name": "akh"}},
        zoo={"name": "toy", "manifest_sha256": store.manifest_sha256(), "dataset": "toy",
             "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"},
             "source_id": source["model_id"], "source_test_acc": source["test_acc"], "source_sha256": source["sha256"]},
        per_model=per_model, timing_s={"generate": 1.0, "verify": 1.0, "total": 2.0, "fingerprint_cached": False},
        bootstrap=BootstrapConfig(**boot), git_path=None)


@pytest.fixture
def measured(tmp_path) -> tuple[ZooStore, Path, Path]:
    """(zoo store, results dir, the result file) of one result measured on the tiny zoo."""
    store = tiny_zoo(tmp_path / "zoo")
    result = zoo_result(store)
    path = result_path(tmp_path / "results", "toy", "akh", result["config_sha256"], 0)
    write_result(result, path)
    return store, tmp_path / "results", path


def _edit(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _problems(results: Path, store: ZooStore | None = None) -> str:
    return "\n".join(check_results(results, zoo_dir=store.root.parent if store else None))


# -- 8: what a result names ------------------------------------------------------------------------
def test_loop_records_checkpoint_and_fingerprint_hashes_and_rejects_an_edited_cache(smoke_cfg, smoke_zoo, tmp_path, caplog):
    root = Path(smoke_cfg.paths.zoo_dir).parent
    cfg = load_recipe(SMOKE, [*smoke_overrides(root), "methods=[akh]", f"paths.cache_dir={tmp_path / 'cache'}",
                              f"paths.results_dir={tmp_path / 'results'}"])
    first = next(iter(run_benchmark(cfg, progress=False).results.values()))
    records = smoke_zoo.store.records()
    assert all(r["sha256"] == records[r["model_id"]]["sha256"] for r in first["per_model"])
    assert first["zoo"]["source_sha256"] == records[smoke_zoo.plan.source.model_id]["sha256"]
    (entry,) = (tmp_path / "cache" / "fingerprints" / "akh").iterdir()
    assert first["fingerprint"]["sha256"] == json.loads((entry / "sha256.json").read_text())["sha256"]
    assert check_results(tmp_path / "results", zoo_dir=Path(smoke_cfg.paths.zoo_dir)) == []
    tensors = Fingerprint.load(entry).tensors  # the case: the cached fingerprint edited on disk
    Fingerprint("akh", {k: v.flip(0) for k, v in tensors.items()}, {}).save(tmp_path / "edited")
    (entry / "fingerprint.safetensors").write_bytes((tmp_path / "edited" / "fingerprint.safetensors").read_bytes())
    with caplog.at_level(logging.WARNING, logger="bench.evaluate"):
        again = next(iter(run_benchmark(cfg, progress=False).results.values()))
    assert f"{entry / 'fingerprint.safetensors'} was changed" in caplog.text
    assert again["timing_s"]["fingerprint_cached"] is False  # regenerated (its meta, the timing, differs: a new sha256)
    assert again["fingerprint"]["sha256"] == json.loads((entry / "sha256.json").read_text())["sha256"]
    assert [r["score"] for r in again["per_model"]] == [r["score"] for r in first["per_model"]]


# -- 9: fpbench leaderboard --check ----------------------------------------------------------------
def test_clean_results_pass_and_published_ones_still_do(measured):
    store, results, _ = measured
    assert check_results(results) == [] and check_results(results, zoo_dir=store.root.parent) == []
    assert check_results(REPO / "results") == []  # written before the integrity fields existed


def test_config_edits_are_caught(measured):
    _, results, path = measured
    _edit(path, lambda d: d["config"]["zoo"].__setitem__("name", "other"))
    assert "config_sha256 is" in _problems(results)
    _edit(path, lambda d: d.__setitem__("config_sha256", sha256_json(d["config"])))  # rewritten consistently
    assert f"the file is named {path.name} but" in _problems(results)


@pytest.mark.parametrize(("change", "message"), [
    (lambda ci: ci["auc"].__setitem__(0, ci["auc"][0] - 0.05), "metrics.ci.auc is"),
    (lambda ci: ci["tpr_at_fpr"]["0.1"].__setitem__(1, 0.5), "metrics.ci.tpr_at_fpr['0.1'] is"),
    (lambda ci: ci.__setitem__("seed", 4), "metrics.ci.seed is 4 but config eval.bootstrap.seed is 3"),
    (lambda ci: ci.__setitem__("n", 49), "metrics.ci.n is 49 but config eval.bootstrap.n is 50"),
])
def test_ci_edits_are_caught(measured, change, message):
    _, results, path = measured
    _edit(path, lambda d: change(d["metrics"]["ci"]))
    assert message in _problems(results)


def test_ci_is_redrawn_with_the_config_seed_in_older_files(measured):
    _, results, path = measured
    _edit(path, lambda d: d["metrics"]["ci"].pop("seed"))
    assert check_results(results) == []
    _edit(path, lambda d: d["metrics"]["ci"]["auc"].__setitem__(1, 0.5))
    assert "metrics.ci.auc is" in _problems(results)
    _edit(path, lambda d: d["metrics"].__setitem__("ci", None))
    assert "metrics.ci is null but config eval.bootstrap.n is 50" in _problems(results)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["per_model"][0].__setitem__("test_acc", 0.99), "1 model(s) whose test_acc differs from the manifest"),
    (lambda d: d["per_model"][1].__setitem__("sha256", "f" * 64), "1 model(s) whose sha256 differs from the manifest"),
    (lambda d: d["zoo"].__setitem__("source_test_acc", 0.1), "source (0.1 vs 0.5)"),
    (lambda d: d["zoo"].__setitem__("manifest_sha256", "e" * 64), "zoo.manifest_sha256 eeeeeeeeeeee… matches neither"),
    (lambda d: d["per_model"][2].__setitem__("model_id", "unknown00000"), "not in the manifest"),
])
def test_edits_against_the_zoo_are_caught(measured, change, message):
    store, results, path = measured
    _edit(path, change)
    assert check_results(results) == []  # nothing in the file itself contradicts the edit
    assert message in _problems(results, store)


def test_checkpoint_swapped_with_its_manifest_sha256_is_caught(measured):
    store, results, _ = measured
    records = store.records()
    victim = "neg000000000"
    other = store.checkpoint_path("neg000000001").read_bytes()
    store.checkpoint_path(victim).write_bytes(other)
    assert f"whose checkpoint differs from its manifest sha256 of {store.manifest_path}: {victim}" in _problems(results, store)
    records[victim]["sha256"] = records["neg000000001"]["sha256"]  # ... and the manifest made to agree
    store.write_records(records)
    problems = _problems(results, store)
    assert f"whose sha256 differs from the manifest of {store.manifest_path}: {victim}" in problems
    assert "zoo.manifest_sha256" in problems


def test_roles_flipped_with_consistent_metrics_are_caught(measured, tmp_path):
    store, _, _ = measured
    flipped = zoo_result(store, roles={"neg000000000": "positive", "pos000000001": "negative"})
    folder = tmp_path / "flipped"
    write_result(flipped, result_path(folder, "toy", "akh", flipped["config_sha256"], 0))
    assert check_results(folder) == []  # metrics, hash and CI are all consistent
    assert "2 model(s) whose role differs from the manifest" in _problems(folder, store)


def test_a_zoo_that_grew_since_still_matches(measured):
    store, results, _ = measured
    records = store.records()
    records["pool00000000"] = {**records["neg000000001"], "model_id": "pool00000000", "role": "pool"}
    store.write_records(records)  # a later run added pool models: the old manifest is a prefix
    assert check_results(results, zoo_dir=store.root.parent) == []


def test_cli_check_with_zoo_dir(measured, capsys):
    store, results, path = measured
    _edit(path, lambda d: d["per_model"][0].__setitem__("test_acc", 0.99))
    assert main(["leaderboard", "--check", "--results-dir", str(results)]) == 0
    assert main(["leaderboard", "--check", "--results-dir", str(results), "--zoo-dir", str(store.root.parent)]) == 1
    assert "test_acc differs" in capsys.readouterr().out
    assert main(["leaderboard", "--check", "--results-dir", str(results), "--zoo-dir", str(results / "nope")]) == 2
    assert "--zoo-dir" in capsys.readouterr().err


# -- 10: a damaged manifest -----------------------------------------------------------------------------
def _damage_line(store: ZooStore, line: int, change: Callable[[bytes], bytes]) -> None:
    lines = store.manifest_path.read_bytes().split(b"\n")
    lines[line - 1] = change(lines[line - 1])
    store.manifest_path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw[: len(raw) // 2], ":3 is not valid JSON"),  # truncated
    (lambda raw: raw.replace(b'"role"', b'"r\xe9le"'), ":3 is not UTF-8 text"),
    (lambda raw: raw.replace(b'"sha256"', b'"sha"'), ":3 (model pos000000001) lacks sha256"),
    (lambda raw: raw.replace(b'"model_id"', b'"id"'), ":3 lacks model_id"),
    (lambda raw: b"[1, 2]", ":3 is a JSON list"),
])
def test_damaged_manifest_line_names_file_line_and_fix(measured, change, message):
    store, results, _ = measured
    _damage_line(store, 3, change)
    with pytest.raises(ZooError, match="delete line 3 of") as info:
        store.records()
    assert f"{store.manifest_path}{message}" in str(info.value) and "fpbench zoo" in str(info.value)
    assert f"{store.manifest_path}{message}" in _problems(results, store)  # --check reports it, does not crash


def test_checkpoint_that_does_not_fit_its_architecture_names_the_model(measured):
    store, _, _ = measured
    records = store.records()
    records["pos000000000"]["arch_params"] = {"hidden": 16, "depth": 1}  # the record edited after the build
    store.write_records(records)
    with pytest.raises(ZooError, match="Model pos000000000 .* cannot be loaded") as info:
        store.load_model("pos000000000")
    text = str(info.value)
    assert "size mismatch" in text and str(store.checkpoint_path("pos000000000")) in text and "fpbench zoo" in text
    assert isinstance(store.load_model("pos000000001"), nn.Module)
