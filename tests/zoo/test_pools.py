"""Defender pools: their own settings (not the test zoo's), the source's architecture, the check
that no pool model copies a scored suspect, and the pool summary every pooled result records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.config import ConfigError, ZooConfig, load_recipe
from bench.methods import METHODS, Fingerprint
from bench.methods.cae import Cae
from bench.pools import SOURCE_ARCH, PoolSpec
from bench.results import ResultError, read_result, validate_result
from bench.zoo.attacks.extract import ExtractConfig
from bench.zoo.plan import plan_zoo
from bench.zoo.pool_plan import pool_summary
from tests.conftest import SMOKE, smoke_overrides

HASHES = {"owner": "o", "attacker": "a", "independent": "i", "test": "t"}  # planning needs names, not data


def _smoke(tmp_path: Path, *extra: str):
    return load_recipe(SMOKE, smoke_overrides(tmp_path, *extra))


def _plan(cfg, specs: list[PoolSpec] | None = None, **zoo_changes):
    """Plan `cfg`'s zoo (no data, no training) with the methods' pools, or `specs`; `zoo_changes`
    replace keys of `zoo:` (e.g. positives=[...])."""
    from bench.evaluate import method_pool_specs

    if zoo_changes:
        raw = OmegaConf.to_container(cfg, resolve=True)
        raw["zoo"].update(zoo_changes)
        cfg = OmegaConf.create(raw)
    return plan_zoo(cfg, HASHES, method_pool_specs(cfg) if specs is None else specs)


@pytest.mark.parametrize("name", ["cae", "uap"])
def test_pool_defaults_differ_from_the_zoos_extract_attack_and_the_negatives(name):
    spec = METHODS.get(name)().pool_spec()
    extract = ExtractConfig()
    assert spec == PoolSpec()  # both methods declare the same defaults, so they share one pool
    assert (spec.surrogate_labels, extract.labels_kind) == ("soft", "hard")
    assert spec.surrogate_temperature != extract.temperature
    assert spec.surrogate_lr != extract.optimizer.lr
    assert spec.reference_lr_scale != 1.0  # negatives train with the source's lr
    assert ZooConfig().pool_seed_offset >= 1000  # negatives' seeds in every recipe are small
    for archs in (spec.surrogate_archs, spec.reference_archs):
        assert SOURCE_ARCH in archs and len(set(archs)) >= 2


def test_planned_pools_use_the_source_arch_and_their_own_settings(tmp_path):
    cfg = _smoke(tmp_path, "zoo.source.arch_params={width: 8}", "zoo.negatives=[{kind: SAST, seed: 1}]")
    plan = _plan(cfg, [PoolSpec(seeds=1)])
    source = plan.source.spec
    references = {j.arch: j for j in plan.by_role("pool") if j.kind == "reference"}
    surrogates = {j.arch: j for j in plan.by_role("pool") if j.kind == "surrogate"}
    assert set(references) == set(surrogates) == {source["arch"], "lenet"}
    # "source" means the source's architecture with its own params; the other family keeps its defaults
    assert references["convnet"].arch_params == surrogates["convnet"].arch_params == {"width": 8}
    assert references["lenet"].arch_params == surrogates["lenet"].arch_params == {}
    for job in references.values():
        assert (job.split, job.seed, job.spec["epochs"]) == ("owner", 1000, source["epochs"])
        assert job.spec["optimizer"]["lr"] == pytest.approx(source["optimizer"]["lr"] / 2)
    for job in surrogates.values():
        (step,) = job.spec["chain"]
        params = step["params"]
        assert step["attack"] == "extract" and (job.split, job.seed) == ("owner", 1000)
        assert (params["labels_kind"], params["temperature"], params["optimizer"]["lr"]) == ("soft", 2.0, 2e-3)
        assert params["epochs"] == source["epochs"] and params["query_budget"] is None


def test_pool_epochs_and_surrogate_settings_are_the_specs(tmp_path):
    spec = PoolSpec(surrogate_archs=["mlp"], reference_archs=["source"], seeds=2, epochs=3, reference_lr_scale=0.2,
                    surrogate_labels="hard", surrogate_epochs=5, surrogate_lr=1e-2, surrogate_queries=100)
    plan = _plan(_smoke(tmp_path), [spec])
    references = [j for j in plan.by_role("pool") if j.kind == "reference"]
    surrogates = [j for j in plan.by_role("pool") if j.kind == "surrogate"]
    assert sorted(j.seed for j in references) == sorted(j.seed for j in surrogates) == [1000, 1001]
    assert {(j.arch, j.spec["epochs"], j.spec["optimizer"]["lr"]) for j in references} == {("convnet", 3, 0.05 * 0.2)}
    params = [j.spec["chain"][0]["params"] for j in surrogates]
    assert {(p["arch"], p["labels_kind"], p["epochs"], p["optimizer"]["lr"], p["query_budget"]) for p in params} == {
        ("mlp", "hard", 5, 1e-2, 100)}


def test_a_reference_that_copies_a_negative_is_refused_naming_both(tmp_path):
    """Pool seeds moved onto the negatives' and the source's lr: the convnet reference with seed 1 is
    the SAST negative with seed 1; planning stops before any training."""
    cfg = _smoke(tmp_path, "methods=[cae]", "methods.cae.reference_lr_scale=1.0", "zoo.pool_seed_offset=1")
    plan = _plan(_smoke(tmp_path))  # the same recipe at the default offset plans fine
    sast = next(j for j in plan.by_role("negative") if j.kind == "SAST" and j.seed == 1)
    with pytest.raises(ConfigError) as err:
        _plan(cfg)
    message = str(err.value)
    assert "Pool reference" in message and "negative SAST" in message and sast.model_id in message
    assert "zoo.pool_seed_offset" in message


def test_a_surrogate_that_copies_a_positive_is_refused_naming_both(tmp_path):
    cfg = _smoke(tmp_path, "methods=[uap]")
    twin = {"attack": "extract", "arch": "lenet", "split": "owner", "labels_kind": "soft", "temperature": 2.0,
            "epochs": cfg.zoo.source.epochs, "seed": 1000,
            "optimizer": {"name": "adam", "lr": 2e-3, "weight_decay": 0.0}}
    with pytest.raises(ConfigError, match=r"Pool surrogate .* positive extract"):
        _plan(cfg, positives=[twin])
    _plan(cfg, positives=[{**twin, "seed": 7}])  # another seed: a different model, allowed


def test_pool_summary_says_how_each_pool_model_differs_from_the_closest_suspect(tmp_path):
    plan = _plan(_smoke(tmp_path, "methods=[cae]"))
    pools = plan.by_role("pool")
    summary = pool_summary(plan, [j.model_id for j in pools])
    suspects = {j.model_id: j for j in plan.by_role("positive", "negative")}
    assert [m["model_id"] for m in summary] == [j.model_id for j in pools]
    for model in summary:
        differs = model["differs_from_suspects"]
        closest = suspects[differs["closest"]]
        assert differs["fields"] and "seed" in differs["fields"]
        if model["role"] == "reference":  # compared with what is trained the same way: a negative
            assert closest.role == "negative" and closest.arch == model["arch"]
            assert "lr" in differs["fields"]
        else:  # a surrogate is compared with the zoo's extractions
            assert closest.role == "positive" and closest.spec["chain"][-1]["attack"] == "extract"
            assert {"split", "temperature"} <= set(differs["fields"])
        assert closest.model_id in differs["note"]


def test_the_result_records_the_pool_summary(smoke_cfg, smoke_zoo, tmp_path, monkeypatch):
    """Through the real loop (pools built and loaded): CAE's result lists each pool model, its
    settings and how it differs from the suspects; the file validates, and a bad entry does not."""
    from bench.evaluate import run_benchmark

    def quick_generate(self, source, ctx):  # the loop is under test here, not CAE: 5 owner samples
        self.pools(ctx)
        x, _ = ctx.owner_data(5)
        with torch.no_grad():
            labels = source(x).argmax(1)
        meta = {"n_fingerprints": 5, "n_requested": 5}  # what CAE's generation_target reads
        return Fingerprint("cae", {"inputs": x.cpu(), "labels": labels.cpu()}, meta)

    monkeypatch.setattr(Cae, "generate", quick_generate)
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}", "methods=[cae]",
                              "methods.cae.pool_epochs=2"])
    outcome = run_benchmark(cfg, progress=False)
    assert not outcome.failed
    (path, result), = outcome.results.items()
    pool = read_result(path)["pool"]
    assert pool == json.loads(json.dumps(result["pool"]))
    assert len(pool["models"]) == len(pool["model_ids"]) == 4
    assert {(m["role"], m["arch"]) for m in pool["models"]} == {
        (role, arch) for role in ("surrogate", "reference") for arch in ("convnet", "lenet")}
    scored = {r["model_id"] for r in result["per_model"]}
    for model in pool["models"]:
        assert model["split"] == "owner" and model["seed"] >= 1000 and model["epochs"] == 2
        assert model["labels"] == ("soft" if model["role"] == "surrogate" else "ground_truth")
        assert model["differs_from_suspects"]["closest"] in scored
    broken = json.loads(json.dumps(result))
    broken["pool"]["models"][0]["role"] = "suspect"
    with pytest.raises(ResultError, match=r"pool.models\[0\].role"):
        validate_result(broken)
    del broken["pool"]["models"]  # results written before the summary existed stay valid
    validate_result(broken)


@pytest.mark.parametrize("key, value, allowed", [
    ("surrogate_labels", "medium", "hard, soft"),
    ("reference_lr_scale", 0.0, "> 0"),
    ("surrogate_temperature", -1.0, "> 0"),
    ("surrogate_epochs", 0, ">= 1, or null"),
    ("surrogate_queries", 0, ">= 1, or null"),
    ("reference_archs", ["sourse"], "Did you mean 'source'"),
])
def test_bad_pool_keys_fail_when_the_recipe_loads_naming_key_value_and_allowed(tmp_path, key, value, allowed):
    override = f"methods.cae.{key}={json.dumps(value)}"
    with pytest.raises(ConfigError) as err:
        _smoke(tmp_path, "methods=[cae]", override)
    message = str(err.value)
    assert key in message and allowed in message
