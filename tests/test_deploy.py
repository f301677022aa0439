"""The deployment layer (issue #19, items 1, 3 and 5): each wrapper on known inputs, the chain, the
query-aware defender on a toy model, query counting, validation before compute, unchanged hashes and
ids, and the loop on the smoke zoo with every suspect (negatives too) deployed. The contract
(`bench.deploy.contract`) runs over every registered wrapper with the `test_config` it carries, and
fails on wrappers that break it (issue #28, item 2)."""

from __future__ import annotations

import builtins
import glob
import json
import pkgutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import bench.deploy
from bench.cli import main
from bench.config import load_recipe, run_config, run_config_sha256, to_dict
from bench.deploy import (
    DEPLOYMENTS,
    Answer,
    DeployedSuspect,
    InputTransform,
    OutputRestriction,
    build_deployment,
    chain_label,
    parse_chain,
)
from bench.deploy.contract import check_deployment
from bench.oracle import Oracle
from bench.zoo.plan import plan_zoo
from tests.conftest import REPO, SMOKE, smoke_overrides

HASHES = {"owner": "o", "attacker": "a", "independent": "i", "test": "t"}  # planning needs names, not data


def _transform(name: str, x: torch.Tensor, seed: int = 0, **params) -> torch.Tensor:
    return build_deployment(name, params, "t").transform(x, torch.Generator().manual_seed(seed))


def _answer(probs: torch.Tensor) -> Answer:
    return Answer(inputs=torch.zeros(len(probs), 1), probs=probs, labels=probs.argmax(1), model_probs=probs,
                  flagged=torch.zeros(len(probs), dtype=torch.bool))


def _restrict(name: str, probs: torch.Tensor, seed: int = 0, **params) -> Answer:
    return build_deployment(name, params, "t").restrict(_answer(probs), torch.Generator().manual_seed(seed))


def _images(channels: int = 1, n: int = 6, side: int = 8) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(1))


# -- the contract, over every registered wrapper ------------------------------------------------------
@pytest.mark.parametrize("name", DEPLOYMENTS.names())
def test_deployment_contract(name):
    """Its `test_config`, config checks, shape and range, one query per input, seeded, the global RNG untouched."""
    check_deployment(name)


@dataclass
class _NoConfig:
    """No parameters."""


class _Shrink(InputTransform):
    """Broken (test): crops the queries to half their width."""

    name, Config, test_config = "broken_shrink", _NoConfig, None

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return x[..., :4]


class _Double(OutputRestriction):
    """Broken (test): doubles the probabilities."""

    name, Config, test_config = "broken_double", _NoConfig, None

    def restrict(self, answer: Answer, generator: torch.Generator | None) -> Answer:
        answer.probs = answer.probs * 2
        return answer


class _GlobalDraw(InputTransform):
    """Broken (test): draws from the global RNG (its answers do not change)."""

    name, Config, test_config, random = "broken_global", _NoConfig, None, True

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return (x + 0 * torch.rand(x.shape)).clamp(0, 1)


class _Untested(OutputRestriction):
    """Broken (test): no `test_config`."""

    name, Config = "broken_untested", _NoConfig

    def restrict(self, answer: Answer, generator: torch.Generator | None) -> Answer:
        return answer


@contextmanager
def _registered(cls: type) -> Iterator[str]:
    """`cls` in `DEPLOYMENTS` for the block, removed again (other tests parametrise over the registry)."""
    DEPLOYMENTS.register(cls)
    try:
        yield cls.name
    finally:
        DEPLOYMENTS._items.pop(cls.name)
        DEPLOYMENTS._descriptions.pop(cls.name)


@pytest.mark.parametrize("cls, fragment", [
    (_Shrink, r"'broken_shrink': transform gave \(48, 1, 8, 4\)"),
    (_Double, "'broken_double': probabilities left"),
    (_GlobalDraw, "'broken_global' drew from the global RNG"),
    (_Untested, r"'broken_untested' \(.*_Untested\) has no `test_config`: set it"),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_the_contract_fails_naming_the_wrapper_and_the_rule(cls, fragment):
    with _registered(cls) as name, pytest.raises(AssertionError, match=fragment):
        check_deployment(name)
    assert cls.name not in DEPLOYMENTS


def test_every_module_is_found_and_none_is_named_after_a_standard_name():
    """`round` lives in `rounding.py`; every wrapper module registers itself (no import list to extend)."""
    modules = {info.name for info in pkgutil.iter_modules(bench.deploy.__path__)}
    shadowing = modules & (set(sys.stdlib_module_names) | set(dir(builtins)))
    assert not shadowing, f"bench/deploy modules named after standard names: {sorted(shadowing)}"
    built_in = [DEPLOYMENTS.get(name).__module__ for name in DEPLOYMENTS.names()]
    wrappers = {module.rsplit(".", 1)[1] for module in built_in if module.startswith("bench.deploy.")}
    assert wrappers == modules - set(bench.deploy.HELPERS) and DEPLOYMENTS.get("round").__module__ == "bench.deploy.rounding"


# -- input transforms -----------------------------------------------------------------------------
def test_bits_maps_to_the_nearest_level():
    x = torch.tensor([0.0, 0.3, 0.49, 0.51, 0.7, 1.0]).view(1, 1, 2, 3)
    assert _transform("bits", x, bits=1).flatten().tolist() == [0, 0, 0, 1, 1, 1]
    levels = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16) / 255
    assert torch.equal(_transform("bits", levels, bits=8), levels)
    out = _transform("bits", _images(), bits=2)
    assert set((out * 3).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0} and torch.allclose(out * 3, (out * 3).round())


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_keeps_a_constant_image_and_the_shape_dtype_and_range(channels):
    x = torch.full((2, channels, 8, 8), 0.4)
    out = _transform("jpeg", x, quality=50)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert (out - 0.4).abs().max() <= 1 / 255 + 1e-6
    noisy = _images(channels)
    squeezed = _transform("jpeg", noisy, quality=10)
    assert squeezed.min() >= 0 and squeezed.max() <= 1 and not torch.allclose(squeezed, noisy, atol=0.02)
    assert (squeezed * 255 - (squeezed * 255).round()).abs().max() < 1e-4  # decoded uint8 values


def test_jpeg_refuses_two_channels():
    with pytest.raises(ValueError, match="2 channels; JPEG takes 1"):
        _transform("jpeg", torch.zeros(1, 2, 8, 8))


def test_noise_sigma_zero_is_identity_and_draws_are_seeded():
    x = _images()
    assert torch.equal(_transform("noise", x, sigma=0.0), x)
    grey = torch.full((64, 1, 8, 8), 0.5)
    a, b, c = (_transform("noise", grey, seed=s, sigma=0.1) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float((a - 0.5).std()) - 0.1) < 0.01
    assert _transform("noise", x, sigma=1.0).min() >= 0 and _transform("noise", x, sigma=1.0).max() <= 1


def test_crop_full_scale_is_identity_and_a_small_crop_zooms():
    x = _images(3)
    assert torch.equal(_transform("crop", x, scale=[1.0, 1.0]), x)
    ramp = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(4, 1, 8, 8).contiguous()
    out = _transform("crop", ramp, scale=[0.25, 0.25])
    assert out.shape == ramp.shape and out.min() >= 0 and out.max() <= 1
    spread = out[..., -1] - out[..., 0]  # half the side: the ramp's range halves
    assert torch.allclose(spread, torch.full_like(spread, 0.5), atol=0.08)


def test_blur_keeps_constants_and_median_removes_an_outlier():
    const = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(_transform("blur", const, kernel=3, sigma=1.0), const, atol=1e-6)
    salt = torch.zeros(1, 1, 8, 8)
    salt[0, 0, 4, 4] = 1.0
    assert torch.equal(_transform("blur", salt, kind="median", kernel=3), torch.zeros_like(salt))
    blurred = _transform("blur", salt, kernel=3, sigma=1.0)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5 and 0 < blurred[0, 0, 4, 4] < 1 and blurred[0, 0, 3, 4] > 0
    assert torch.equal(_transform("blur", salt, kernel=1), salt)


# -- output restrictions ---------------------------------------------------------------------------
PROBS = torch.tensor([[0.61234, 0.28766, 0.1], [0.1, 0.2, 0.7], [0.333, 0.334, 0.333]])


def test_top1_gives_one_hot_of_the_label():
    out = _restrict("top1", PROBS)
    assert out.probs.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]] and out.labels.tolist() == [0, 2, 1]


def test_round_keeps_decimals_and_labels():
    out = _restrict("round", PROBS, decimals=2)
    assert torch.allclose(out.probs, torch.tensor([[0.61, 0.29, 0.1], [0.1, 0.2, 0.7], [0.33, 0.33, 0.33]]))
    assert out.labels.tolist() == [0, 2, 1]  # the API's label stays the model's, ties or not


def test_topk_truncates_and_renormalises():
    out = _restrict("topk", PROBS, k=2)
    assert ((out.probs > 0).sum(1) == 2).all() and torch.allclose(out.probs.sum(1), torch.ones(3))
    assert torch.allclose(out.probs[0], torch.tensor([0.61234, 0.28766, 0.0]) / 0.9)
    assert torch.equal(_restrict("topk", PROBS, k=5).probs, PROBS)


@pytest.mark.parametrize("p", [0.0, 1.0, 0.5])
def test_random_labels_changes_the_fraction_p(p):
    probs = torch.softmax(torch.randn(400, 10, generator=torch.Generator().manual_seed(0)), 1)
    out = _restrict("random_labels", probs, p=p)
    changed = (out.labels != probs.argmax(1)).float().mean()
    assert changed == p if p in (0.0, 1.0) else abs(float(changed) - p) < 0.08
    assert torch.equal(out.probs.argmax(1), out.labels) and torch.allclose(out.probs.sum(1), torch.ones(400))
    assert torch.equal(out.probs.sort(1).values, probs.sort(1).values)  # a swap: the same values answered


# -- chains, seeding, counting ----------------------------------------------------------------------
class Counting(nn.Module):
    """A fixed linear classifier on flattened inputs that counts the rows it sees."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data = weight.clone()
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.linear(x.flatten(1))


def test_chain_order_label_and_registry():
    chain = parse_chain([{"top1": {}}, {"jpeg": {"quality": 75}}, "noise"], "zoo.deploy")
    assert chain_label(chain) == "top1+jpeg(quality=75)+noise(sigma=0.05)"
    suspect = DeployedSuspect(Counting(torch.randn(3, 64)), chain, "m")
    assert [d.name for d in suspect.inputs] == ["jpeg", "noise"] and [d.name for d in suspect.outputs] == ["top1"]
    assert {"jpeg", "noise", "blur", "bits", "crop", "top1", "round", "topk", "random_labels", "query_aware"} <= set(DEPLOYMENTS)


def test_queries_are_counted_once_and_streams_are_reproducible():
    model = Counting(torch.randn(10, 64, generator=torch.Generator().manual_seed(0)))
    chain = parse_chain([{"noise": {"sigma": 0.2}}, {"random_labels": {"p": 0.5}}], "zoo.deploy")
    suspect = DeployedSuspect(model, chain, "model-a", batch_size=8)
    x = _images(n=37)
    oracle = Oracle(suspect.stream("akh"), access="probs")
    first = oracle.labels(x)
    assert oracle.queries == 37 and model.rows == 37  # batches of 8, each row once, no extra model call
    probs = oracle.probs(x)
    assert oracle.queries == 74 and probs.shape == (37, 10)
    again = Oracle(suspect.stream("akh")).labels(x)
    other = Oracle(suspect.stream("sac")).labels(x)
    elsewhere = Oracle(DeployedSuspect(model, chain, "model-b", batch_size=8).stream("akh")).labels(x)
    assert torch.equal(first, again) and not torch.equal(first, other) and not torch.equal(first, elsewhere)


# -- the query-aware defender -----------------------------------------------------------------------
def _blobs(n: int, seed: int) -> torch.Tensor:
    """Two clusters at +-3 along the first axis of a 1x1x2 'image', far from the boundary x0 = 0."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0]])[torch.randint(0, 2, (n,), generator=g)]
    return (centres + torch.randn(n, 2, generator=g)).view(n, 1, 1, 2)


@pytest.mark.parametrize("signals", [["margin"], ["entropy"], ["margin", "distance"]])
def test_defender_flags_boundary_queries_and_passes_clean_data_at_its_rate(signals):
    model = Counting(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))  # boundary: x0 = 0
    chain = parse_chain([{"query_aware": {"signals": signals, "false_flag_rate": 0.05, "calibration_samples": 4000}}],
                        "zoo.deploy")
    suspect = DeployedSuspect(model, chain, "toy").prepare(_blobs(4000, seed=0))
    model.rows = 0
    near = torch.tensor([[0.02, 0.0], [-0.05, 0.5], [0.1, -1.0]]).view(3, 1, 1, 2)
    far = torch.tensor([[3.0, 0.0], [-3.2, 0.3]]).view(2, 1, 1, 2)  # the clusters' centres: confident, in distribution
    oracle = Oracle(suspect.stream("probe"))
    labels = oracle.labels(torch.cat([near, far]))
    model_labels = model(torch.cat([near, far])).argmax(1)
    assert oracle.queries == 5 and model.rows == 5 + 5  # the model_labels call above: calibration is not counted
    assert (labels[:3] != model_labels[:3]).all() and torch.equal(labels[3:], model_labels[3:])
    assert suspect.flag_rate("probe") == pytest.approx(3 / 5)
    off = torch.tensor([[4.0, 9.0]]).view(1, 1, 1, 2)  # far from the boundary and far from the data
    assert (Oracle(suspect).labels(off) != model(off).argmax(1)).item() == ("distance" in signals)
    clean = suspect.utility(_blobs(4000, seed=1), torch.zeros(4000, dtype=torch.long))
    assert abs(clean["defender_false_flag_rate"] - 0.05) < 0.02


def test_defender_needs_calibration_data():
    suspect = DeployedSuspect(Counting(torch.eye(2)), parse_chain(["query_aware"], "d"), "toy")
    with pytest.raises(ValueError, match="at least 20 clean samples"):
        suspect.prepare(_blobs(5, seed=0))


# -- configuration: validated before compute, hashes and ids unchanged --------------------------------
def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


NEGATIVES = ["{kind: SAST, seed: [1, 2]}", "{kind: SADT, seed: [1, 2]}", "{kind: DAST, arch: [lenet, mlp], seed: 1}",
             "{kind: DADT, arch: [lenet, mlp], seed: 1}"]  # the smoke recipe's, as an override writes them


def _negatives(**deploy: str) -> str:
    """`zoo.negatives=[...]` as the smoke recipe's, with `deploy: <chain>` added to the entries of some kinds."""
    entries = [e[:-1] + f", deploy: {deploy[e[7:11]]}}}" if e[7:11] in deploy else e for e in NEGATIVES]
    return f"zoo.negatives=[{', '.join(entries)}]"
BAD = [
    (["zoo.deploy=[{jpg: {quality: 75}}]"], "zoo.deploy[0]: Unknown deployment 'jpg'. Did you mean 'jpeg'?"),
    (["zoo.deploy=[{jpeg: {quality: 0}}]"], "zoo.deploy[0] (jpeg): jpeg.quality=0 must be in [1, 100]"),
    (["zoo.deploy=[{top1: {}}, {crop: {scale: [0.9, 0.5]}}]"], "zoo.deploy[1] (crop): crop.scale=[0.9, 0.5] must be"),
    (["zoo.deploy=[{blur: {kernal: 3}}]"],
     "Unknown key 'kernal' in zoo.deploy[0] (blur). Did you mean 'kernel'? Valid keys: kind, kernel, sigma"),
    (["zoo.deploy=[{random_labels: {p: 2}}]"], "random_labels.p=2.0 must be in [0, 1]"),
    (["zoo.deploy=[{query_aware: {signals: [margn]}}]"], "query_aware.signals[]='margn' is not one of margin"),
    (["zoo.positives=[{attack: ftll, epochs: 1, deploy: [{noise: {sigma: -1}}]}]"],
     "zoo.positives[0].deploy[0] (noise): noise.sigma=-1.0 must be in [0, 1]"),
    (["zoo.negatives=[{kind: SAST, seed: 1, deploy: [{topp: {}}]}]"], "zoo.negatives[0].deploy[0]: Unknown deployment"),
    (["zoo.deploy=[{top1: {}}]", "zoo.endpoints=[{label: a, role: positive, url: 'http://h/p'}]"],
     "zoo.deploy applies to zoo models only"),
]


@pytest.mark.parametrize("overrides, fragment", BAD, ids=[f[:40] for _, f in BAD])
def test_bad_deployment_exits_2_before_any_work(tmp_path, capsys, overrides, fragment):
    root = tmp_path / "out"
    code = main(["run", str(SMOKE), *smoke_overrides(root), "methods=[akh]", *overrides])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("fpbench: error: ") and err.count("fpbench: error:") == 1, err
    assert fragment in err and _files(root) == []


def test_empty_deploy_keeps_published_hashes_and_deployment_keeps_model_ids():
    cfg = load_recipe(REPO / "recipes" / "quickstart.yaml", [])
    published = {json.loads(Path(p).read_text())["config_sha256"]
                 for p in glob.glob(str(REPO / "results" / "runs" / "quickstart" / "*" / "*.json"))}
    assert published
    for entry in to_dict(cfg)["methods"]:
        assert "deploy" not in run_config(cfg, entry)["zoo"]
        if entry["name"] in ("akh", "sac", "ipguard"):
            assert run_config_sha256(cfg, entry) in published, entry["name"]
    deployed = load_recipe(REPO / "recipes" / "quickstart.yaml", ["zoo.deploy=[{top1: {}}]"])
    entry = to_dict(cfg)["methods"][0]
    assert run_config_sha256(deployed, entry) != run_config_sha256(cfg, entry)
    plain = plan_zoo(load_recipe(SMOKE, []), HASHES)
    per_entry = plan_zoo(load_recipe(SMOKE, [_negatives(DADT="[{bits: {bits: 3}}]")]), HASHES)
    assert [j.model_id for j in plain.jobs] == [j.model_id for j in per_entry.jobs]
    assert [j.provenance for j in plain.jobs] == [j.provenance for j in per_entry.jobs]
    assert [j.deploy for j in per_entry.jobs if j.kind == "DADT"] == [[{"bits": {"bits": 3}}]] * 2
    assert all(j.deploy is None for j in per_entry.jobs if j.kind != "DADT")


# -- the loop -------------------------------------------------------------------------------------
def test_the_loop_deploys_every_suspect_and_records_utility(smoke_zoo, smoke_root, tmp_path):
    from bench.evaluate import run_benchmark

    negatives = _negatives(SAST="[{random_labels: {p: 1}}]", DAST="[query_aware]", DADT="[{jpeg: {quality: 30}}]")
    cfg = load_recipe(SMOKE, [*smoke_overrides(smoke_root), f"paths.results_dir={tmp_path / 'results'}",
                              f"paths.cache_dir={tmp_path / 'cache'}", "methods=[oracle_label,akh]",
                              "zoo.deploy=[{top1: {}}]", negatives, "eval.bootstrap.n=0"])
    outcome = run_benchmark(cfg, progress=False)
    assert not outcome.zoo.built  # the same checkpoints: nothing retrained
    records = outcome.zoo.store.records()
    results = {r["method"]["name"]: r for r in outcome.results.values()}
    assert results["oracle_label"]["metrics"]["auc"] == 1.0
    akh = results["akh"]
    assert len(akh["per_model"]) == 18
    for row in akh["per_model"]:
        record = records[row["model_id"]]
        assert row["sha256"] == record["sha256"] and row["deploy"].startswith("top1")
        assert row["provenance"] == f"{record['provenance']}|deploy={row['deploy']}"
        assert row["queries"] == akh["fingerprint"]["queries_per_suspect"]  # counted once through the chain
        if row["deploy"] == "top1":  # labels as the model's: the utility is the model's accuracy
            assert row["test_acc_deployed"] == row["test_acc"]
        assert ("defender_false_flag_rate" in row) == ("query_aware" in row["deploy"])
    by_kind = {}
    for row in akh["per_model"]:
        by_kind.setdefault(row["kind"] or "positive", []).append(row)
    for row in by_kind["SAST"]:  # every label changed: right answers only where the model was wrong
        assert row["deploy"] == "top1+random_labels(p=1)" and row["test_acc_deployed"] <= 1 - row["test_acc"] + 1e-9
    assert all(r["deploy"] == "top1+jpeg(quality=30)" for r in by_kind["DADT"])
    for row in by_kind["DAST"]:
        assert row["deploy"].startswith("top1+query_aware(signals=[margin],false_flag_rate=0.05")
        assert 0 < row["defender_false_flag_rate"] < 0.2 and 0 <= row["defender_flag_rate"] <= 1
        # only flagged queries change their answer (low-margin ones are often wrong: it may even help)
        assert abs(row["test_acc_deployed"] - row["test_acc"]) <= row["defender_false_flag_rate"] + 1e-9
    assert all(r["deploy"] == "top1" for r in by_kind["SADT"] + by_kind["positive"])


def test_overhead_benchmark_writes_figures(tmp_path):
    """`fpbench perf deployment` at tiny sizes: every wrapper timed, figures well formed (no timing asserted)."""
    from bench.perf import run_perf

    overrides = [f"perf.recipe={SMOKE}", "perf.repeats=1", "eval.query_batch_size=64", f"paths.cache_dir={tmp_path / 'c'}"]
    record = json.loads(run_perf(["deployment"], tmp_path, overrides)["deployment"].read_text())
    figures = record["figures"]
    assert record["status"] == "ok" and not figures["errors"] and set(figures["wrappers"]) == set(DEPLOYMENTS)
    assert all(w["seconds_per_batch"] > 0 and w["overhead"] > -1 for w in figures["wrappers"].values())
    assert isinstance(figures["within_target"], bool) and figures["query_batch_size"] == 64


def test_penultimate_features_only_where_a_linear_head_follows_them():
    """A whole model from a `factory:` arch has no head: its `features` are logits, so distances fall back to pixels."""
    from bench.deploy.base import split_forward
    from bench.nets import build_model

    common = {"in_channels": 1, "num_classes": 10, "image_size": 8, "mean": [0.0], "std": [1.0]}
    assert split_forward(build_model("convnet", **common))
    assert not split_forward(build_model("factory:tests.zoo.byo_factories:small_cnn", **common))
    assert split_forward(build_model("factory:tests.zoo.byo_factories:cnn_features", **common))
