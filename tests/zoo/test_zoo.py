"""The zoo: planning, the smoke build, manifest content, skip on rebuild, resume, tampering, locking."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
import torch

from bench.config import ConfigError, load_recipe
from bench.training import accuracy, predicted_labels
from bench.zoo import TamperedCheckpointError, ZooError, ZooStore, load_model
from bench.zoo.build import build_zoo, prepare
from bench.zoo.jobs import fill_source_agreement, finish_record
from bench.zoo.listing import zoo_frame
from bench.zoo.plan import _model_id, plan_zoo
from bench.zoo.tasks import plan_summary
from tests.conftest import SMOKE, smoke_overrides

RECORD_FIELDS = {"model_id", "provenance", "role", "kind", "attack", "arch", "arch_params", "params", "seed",
                 "parent", "test_acc", "source_agreement", "sha256", "train_seconds", "split_hashes", "dataset", "data"}


def test_smoke_zoo_has_source_and_every_negative_kind(smoke_zoo):
    records = smoke_zoo.store.records()
    roles = [r["role"] for r in records.values()]
    assert roles.count("source") == 1
    negatives = [r for r in records.values() if r["role"] == "negative"]
    assert len(negatives) >= 8
    assert {r["kind"] for r in negatives} == {"SAST", "SADT", "DAST", "DADT"}
    source = records[smoke_zoo.plan.source.model_id]
    for record in negatives:
        assert record["parent"] is None
        same_arch = record["kind"].startswith("SA")
        assert (record["arch"] == source["arch"]) == same_arch
        assert record["split"] == ("owner" if record["kind"].endswith("ST") else "independent")


def test_manifest_records_every_field(smoke_zoo):
    for record in smoke_zoo.store.records().values():
        assert RECORD_FIELDS <= set(record), RECORD_FIELDS - set(record)
        assert len(record["model_id"]) == 12 and len(record["sha256"]) == 64
        assert set(record["split_hashes"]) == {"owner", "attacker", "independent", "test"}
        assert record["train_seconds"] >= 0


def test_source_accuracy_is_real(smoke_zoo):
    """The recorded accuracy is recomputed from the saved checkpoint on the test split (>= 95%)."""
    source_id = smoke_zoo.plan.source.model_id
    model = load_model(smoke_zoo.store.root, source_id)
    x, y = smoke_zoo.datamodule.tensors("test")
    measured = accuracy(model, x, y)
    assert measured >= 0.95
    assert measured == pytest.approx(smoke_zoo.store.records()[source_id]["test_acc"], abs=1e-9)


def test_same_recipe_same_ids_and_params_change_ids(smoke_cfg):
    _, plan_a, _ = prepare(smoke_cfg)
    _, plan_b, _ = prepare(smoke_cfg)
    assert [j.model_id for j in plan_a.jobs] == [j.model_id for j in plan_b.jobs]
    changed = load_recipe(SMOKE, [*smoke_overrides(__import__("pathlib").Path("/tmp/x")), "zoo.source.epochs=3"])
    _, plan_c, _ = prepare(changed)
    assert plan_c.source.model_id != plan_a.source.model_id
    assert {j.model_id for j in plan_c.by_role("negative")} != {j.model_id for j in plan_a.by_role("negative")}


def test_records_measure_agreement_with_the_source(smoke_zoo):
    """source_agreement = fraction of test samples where the model's label is the source's, recomputed from checkpoints."""
    records = smoke_zoo.store.records()
    x_test, _ = smoke_zoo.datamodule.tensors("test")
    source_labels = predicted_labels(load_model(smoke_zoo.store.root, smoke_zoo.plan.source.model_id), x_test)
    assert records[smoke_zoo.plan.source.model_id]["source_agreement"] == 1.0
    for job in [*smoke_zoo.plan.by_role("positive"), *smoke_zoo.plan.by_role("negative")[:2]]:
        labels = predicted_labels(load_model(smoke_zoo.store.root, job.model_id), x_test)
        expected = float((labels == source_labels).double().mean())
        assert records[job.model_id]["source_agreement"] == pytest.approx(expected, abs=1e-12), job.provenance
    quantized = next(j for j in smoke_zoo.plan.by_role("positive") if j.attack.startswith("quantize"))
    assert records[quantized.model_id]["source_agreement"] >= 0.95  # int8 barely moves a model
    assert min(r["source_agreement"] for r in records.values()) < 1.0  # and something does move


def test_ray_style_records_get_their_agreement_once_the_source_exists(smoke_cfg, smoke_zoo, tmp_path):
    """A Ray task finishing before the source records null (negatives have no parent); the driver fills it in."""
    _, store = _copy_zoo(smoke_cfg, smoke_zoo, tmp_path)
    plan, dm, expected = smoke_zoo.plan, smoke_zoo.datamodule, smoke_zoo.store.records()
    negative, positive = plan.by_role("negative")[0], plan.by_role("positive")[0]
    for job in (negative, positive):  # what `run_job_task` does: no source labels handed in
        record = finish_record(job, store.load_model(job.model_id), {}, 0.0, dm, store, plan)
        assert record["source_agreement"] == (None if job is negative else expected[job.model_id]["source_agreement"])
        store.add_record({**record, "source_agreement": None})
    fill_source_agreement(dm, store, plan, [negative.model_id, positive.model_id])
    for job in (negative, positive):
        assert store.records()[job.model_id]["source_agreement"] == expected[job.model_id]["source_agreement"]


def test_a_task_given_the_source_id_measures_a_negatives_agreement_once_the_source_is_built(smoke_cfg, smoke_zoo,
                                                                                           tmp_path):
    """`plan_summary` hands tasks the source's id: a negative finishing after the source needs no driver pass."""
    _, store = _copy_zoo(smoke_cfg, smoke_zoo, tmp_path)
    plan, dm, expected = smoke_zoo.plan, smoke_zoo.datamodule, smoke_zoo.store.records()
    negative, source_id = plan.by_role("negative")[0], plan.source.model_id
    assert plan_summary(plan)["source_id"] == source_id
    record = finish_record(negative, store.load_model(negative.model_id), {}, 0.0, dm, store, plan, source_id=source_id)
    assert record["source_agreement"] == expected[negative.model_id]["source_agreement"] < 1.0
    records = store.records()
    del records[source_id]  # the source not built yet: null, filled in by the driver later
    store.write_records(records)
    record = finish_record(negative, store.load_model(negative.model_id), {}, 0.0, dm, store, plan, source_id=source_id)
    assert record["source_agreement"] is None


def test_list_shows_accuracy_and_source_agreement_old_zoos_too(smoke_cfg, smoke_zoo, tmp_path):
    frame = zoo_frame(smoke_zoo.plan, smoke_zoo.store)
    records = smoke_zoo.store.records()
    row = frame[frame["model_id"] == smoke_zoo.plan.by_role("positive")[0].model_id].iloc[0]
    assert row["test_acc"] == f"{records[row['model_id']]['test_acc']:.4f}"
    assert row["source_agreement"] == f"{records[row['model_id']]['source_agreement']:.4f}"
    _, store = _copy_zoo(smoke_cfg, smoke_zoo, tmp_path)  # a zoo built before the field existed
    old = {i: {k: v for k, v in r.items() if k != "source_agreement"} for i, r in store.records().items()}
    store.write_records(old)
    frame = zoo_frame(smoke_zoo.plan, store)
    assert (frame["source_agreement"] == "").all() and (frame["status"] == "built").all()


def test_ids_change_exactly_where_attack_output_changed(tmp_path):
    """int8 quantisation (new grid) gets a new id; fp16 and the rest keep the ids they had. Under
    data.augment every trained model (source, negatives, training attacks) gets another id."""
    positives = ("zoo.positives=[{attack: quantize, dtype: int8, label: int8}, {attack: quantize, dtype: fp16, label: fp16}, "
                 "{attack: ftal, epochs: 1}, {attack: prune, epochs: 0}, "
                 "{chain: [{attack: prune, epochs: 0}, {attack: ftll, epochs: 1}]}]")
    plain = load_recipe(SMOKE, [*smoke_overrides(tmp_path), positives])
    augmented = load_recipe(SMOKE, [*smoke_overrides(tmp_path), positives, "data.augment=true"])
    _, plan, _ = prepare(plain)
    plan_aug = plan_zoo(augmented, plan.split_hashes)
    source_id = plan.source.model_id
    before = {j.attack: _model_id({"role": "positive", "parent": source_id, "chain": j.spec["chain"]})  # the old payload
              for j in plan.by_role("positive")}
    now = {j.attack: j.model_id for j in plan.by_role("positive")}
    assert set(now) == {"int8", "fp16", "ftal", "prune", "prune+ftll"}
    assert now["int8"] != before["int8"]
    assert {k: now[k] for k in now if k != "int8"} == {k: before[k] for k in before if k != "int8"}
    old_source = _model_id({"role": "source", "op": "train", "data": plan.dataset,
                            "split_hash": plan.split_hashes["owner"], "spec": plan.source.spec})
    assert source_id == old_source  # un-augmented ids are the ones they always were
    assert plan_aug.source.model_id != source_id  # augmented batches train another source
    negatives, negatives_aug = ([j.model_id for j in p.by_role("negative")] for p in (plan, plan_aug))
    assert not set(negatives) & set(negatives_aug)
    augmented_source = plan_aug.source.model_id  # positives under augment: the old payload with the new parent
    chains = {j.attack: j.spec["chain"] for j in plan.by_role("positive")}
    for job in plan_aug.by_role("positive"):
        old_style = _model_id({"role": "positive", "parent": augmented_source, "chain": chains[job.attack]})
        trains = job.attack in ("ftal", "prune+ftll")
        assert (job.model_id != old_style) == (trains or job.attack == "int8"), job.attack


def test_rebuild_retrains_nothing(smoke_cfg, smoke_zoo):
    before = smoke_zoo.store.manifest_path.read_bytes()
    report = build_zoo(smoke_cfg, progress=False)
    assert report.built == [] and len(report.skipped) == len(smoke_zoo.plan.jobs)
    assert smoke_zoo.store.manifest_path.read_bytes() == before


def _copy_zoo(smoke_cfg, smoke_zoo, tmp_path):
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path))
    shutil.copytree(smoke_zoo.store.root, tmp_path / "zoo" / smoke_cfg.zoo.name)
    return cfg, ZooStore(tmp_path / "zoo" / smoke_cfg.zoo.name)


def test_interrupted_build_resumes(smoke_cfg, smoke_zoo, tmp_path):
    """A build killed after two cheap models: one lost its record (killed before the manifest write,
    checkpoint orphaned), one lost both. Rerunning builds exactly those two."""
    cfg, store = _copy_zoo(smoke_cfg, smoke_zoo, tmp_path)
    records = store.records()
    cheap = [r["model_id"] for r in records.values() if r["arch"] == "mlp"][:2]
    assert len(cheap) == 2
    for model_id in cheap:
        del records[model_id]
    store.write_records(records)
    store.checkpoint_path(cheap[1]).unlink()
    report = build_zoo(cfg, progress=False)
    assert sorted(report.built) == sorted(cheap)
    assert set(store.records()) == set(smoke_zoo.store.records())


def test_tampered_checkpoint_is_refused_by_id(smoke_cfg, smoke_zoo, tmp_path):
    cfg, store = _copy_zoo(smoke_cfg, smoke_zoo, tmp_path)
    victim = smoke_zoo.plan.by_role("negative")[0].model_id
    path = store.checkpoint_path(victim)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedCheckpointError, match=victim):
        load_model(store.root, victim)
    with pytest.raises(TamperedCheckpointError, match=victim):
        build_zoo(cfg, progress=False)


def test_checkpoints_are_safetensors_not_pickles(smoke_zoo):
    path = smoke_zoo.store.checkpoint_path(smoke_zoo.plan.source.model_id)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    assert "normalize.mean" in header and header["__metadata__"]["model_id"] == smoke_zoo.plan.source.model_id
    assert not raw.startswith(b"PK") and not raw.startswith(b"\x80")  # neither torch zip nor raw pickle


def test_second_build_is_locked_out(smoke_zoo, tmp_path):
    root = tmp_path / "locked"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bench.zoo import ZooStore\n"
        f"with ZooStore({str(root)!r}).lock():\n    print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ZooError, match="being built by another process"):
            with ZooStore(root).lock(timeout=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with ZooStore(root).lock():  # released once the holder is gone
        pass


@pytest.mark.parametrize("override, needle", [
    ("zoo.negatives=[{kind: SAXT, seed: 1}]", "SAST, SADT, DAST, DADT"),
    ("zoo.negatives=[{kind: DAST, seed: 1}]", "different from the source"),
    ("zoo.negatives=[{kind: SAST, arch: mlp, seed: 1}]", "same architecture"),
    ("zoo.negatives=[{kind: DAST, arch: mpl, seed: 1}]", "Did you mean 'mlp'"),
    ("zoo.negatives=[{kind: SAST, seed: 1, epoch: 3}]", "epoch"),
    ("zoo.positives=[{attack: ftlll}]", "Did you mean 'ftll'"),
    ("zoo.source.optimizer.name=rmsprop", "sgd, adam, adamw"),
])
def test_bad_zoo_entries_fail_before_training(tmp_path, override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):  # at load (settings) or planning (entries)
        prepare(load_recipe(SMOKE, [*smoke_overrides(tmp_path), override]))
    assert not (tmp_path / "zoo").exists()


def test_load_model_unknown_id(smoke_zoo):
    with pytest.raises(ZooError, match="not in"):
        load_model(smoke_zoo.store.root, "000000000000")
    assert isinstance(load_model(smoke_zoo.store.root, smoke_zoo.plan.source.model_id), torch.nn.Module)


def test_build_trains_at_the_recipe_threads_and_gives_the_callers_back(smoke_cfg, smoke_zoo, monkeypatch):
    import bench.zoo.build as build

    seen: list[int] = []
    real_prepare = build.prepare

    def prepare_spy(cfg, pool_specs=None):
        seen.append(torch.get_num_threads())
        return real_prepare(cfg, pool_specs)

    monkeypatch.setattr(build, "prepare", prepare_spy)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        build_zoo(smoke_cfg, progress=False)  # built already: plans, verifies, trains nothing
        assert seen == [smoke_cfg.compute.cpu_threads] == [1]
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
