"""Executors: the Ray executor builds the same zoo as `local`, reports failures, resumes after a kill.

The fast tests need no Ray instance; the Ray builds start one each (tens of seconds) and are `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.config import ConfigError, load_recipe
from bench.zoo import ZooStore
from bench.zoo.ddp import is_rank_zero
from bench.zoo.executors import check_ray_config, ray_temp_dir, relaunches_script, task_trainer
from bench.zoo.plan import Job
from bench.zoo.tasks import FAIL_JOB_ENV, JobQueue, describe_error
from tests.conftest import REPO, SMOKE, sigint_default, smoke_overrides

# A small digits zoo: source, two negatives, two positives (one with a fit, one without).
SMALL = ["zoo.source.epochs=4",
         "zoo.negatives=[{kind: SAST, seed: 1, epochs: 2}, {kind: DAST, arch: mlp, seed: 1, epochs: 2}]",
         "zoo.positives=[{attack: ftll, epochs: 1}, {attack: prune, rate: 0.4, epochs: 0}]"]
RAY = ["compute.executor=ray", "compute.workers=2"]


def _job(model_id: str, parent: str | None = None) -> Job:
    return Job(model_id=model_id, role="positive" if parent else "negative", provenance=model_id, op="train",
               spec={}, arch="convnet", arch_params={}, seed=0, parent=parent)


# -- fast: no Ray instance -----------------------------------------------------------------
def test_missing_ray_is_a_config_error_before_training(tmp_path, monkeypatch):
    from bench.zoo.build import build_zoo

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, *SMALL, *RAY))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[ray\]' from the fpbench checkout"):
        build_zoo(cfg, progress=False)
    assert not (tmp_path / "zoo" / "smoke" / "manifest.jsonl").exists()


def test_job_queue_runs_parents_first_and_drops_orphans():
    jobs = [_job("neg1"), _job("child1", "src"), _job("src"), _job("neg2"), _job("child2", "src"), _job("old", "built")]
    queue = JobQueue(jobs)
    first = queue.ready(2)
    assert [j.model_id for j in first] == ["src", "neg1"]  # the parent jumps ahead; the plan order is kept
    assert [j.model_id for j in queue.ready(10)] == ["neg2", "old"]  # children wait; a built parent is no wait
    queue.finished(first[0])
    assert [j.model_id for j in queue.ready(1)] == ["child1"]
    assert [j.model_id for j in queue.orphans({"src"})] == ["child2"]
    assert not queue


def test_dispatch_keeps_the_limit_records_in_order_and_fails_descendants():
    """The executors' shared loop with in-memory handles: never more than `limit` in flight, each finished
    job recorded once, a failed parent's children failed as DependencyError without being submitted."""
    from types import SimpleNamespace

    from bench.zoo.tasks import dispatch

    jobs = [_job("src"), _job("bad"), _job("child", "src"), _job("orphan", "bad"), _job("grandchild", "orphan"),
            _job("neg")]
    added, submitted, peak = [], [], []
    store = SimpleNamespace(add_record=added.append)
    report = SimpleNamespace(built=[], failed={})
    in_flight: dict = {}

    def submit(job: Job) -> str:
        submitted.append(job.model_id)
        peak.append(len(in_flight) + 1)
        return f"handle-{job.model_id}"

    def outcome(handle: str) -> tuple:
        model_id = handle.removeprefix("handle-")
        if model_id == "bad":
            return None, RuntimeError("boom")
        return {"model_id": model_id, "test_acc": 0.9, "train_seconds": 1.0}, None

    dispatch(JobQueue(jobs), in_flight, 2, submit, lambda handles: handles[:1], outcome, store, report)
    assert max(peak) == 2 and not in_flight
    assert sorted(submitted) == ["bad", "child", "neg", "src"]  # orphans are never submitted
    assert report.built == [r["model_id"] for r in added] and sorted(report.built) == ["child", "neg", "src"]
    assert report.failed["bad"] == "RuntimeError: boom"
    assert report.failed["orphan"].startswith("DependencyError: parent bad failed")
    assert report.failed["grandchild"].startswith("DependencyError: parent orphan failed")


def test_job_queue_starts_the_longest_ready_job_first():
    from bench.zoo.tasks import nominal_images

    jobs = [_job("short"), _job("child", "src"), _job("long"), _job("src"), _job("mid")]
    cost = {"short": 1, "child": 99, "long": 50, "src": 2, "mid": 10}
    queue = JobQueue(jobs, lambda job: cost[job.model_id])
    assert [j.model_id for j in queue.ready(3)] == ["src", "long", "mid"]  # a parent still jumps ahead
    queue.finished(jobs[3])
    assert [j.model_id for j in queue.ready(10)] == ["child", "short"]
    sizes = {"owner": 100, "attacker": 10}.__getitem__
    trained = Job(model_id="t", role="negative", provenance="t", op="train", spec={"epochs": 3, "split": "owner"},
                  arch="convnet", arch_params={}, seed=0)
    attacked = Job(model_id="a", role="positive", provenance="a", op="attack", arch="convnet", arch_params={}, seed=0,
                   spec={"chain": [{"attack": "prune", "params": {"epochs": 2}}, {"attack": "quantize", "params": {}}]})
    assert nominal_images(trained, sizes) == 300 and nominal_images(attacked, sizes) == 20


def test_ray_temp_dir_falls_back_for_long_paths(tmp_path):
    assert ray_temp_dir("/c") == Path("/c/ray")
    long_dir = tmp_path / ("x" * 80)
    fallback = ray_temp_dir(long_dir)
    assert fallback.is_absolute() and str(fallback).startswith("/tmp/fpbench-ray-")


def test_relaunching_strategies_and_multi_gpu_tasks(tmp_path):
    from omegaconf import OmegaConf

    from bench.training import TrainerConfig

    assert relaunches_script("ddp") and relaunches_script("ddp_find_unused_parameters_true")
    assert not relaunches_script("ddp_spawn") and not relaunches_script("auto")
    trainer = OmegaConf.structured(TrainerConfig(devices=2))
    assert task_trainer(trainer, gpus=2).strategy == "ddp_spawn"
    assert task_trainer(OmegaConf.structured(TrainerConfig()), gpus=0).strategy == "auto"


def test_ray_config_checks_refuse_ddp_relaunch_and_empty_resources(tmp_path, monkeypatch):
    # the checks after `require_ray` are plain config checks: run them whether Ray is installed or not
    monkeypatch.setattr("bench.zoo.executors.require_ray", lambda: None)
    check_ray_config(load_recipe(SMOKE, smoke_overrides(tmp_path, *RAY)))  # the smoke recipe's defaults pass
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, *RAY, "compute.trainer.strategy=ddp"))
    with pytest.raises(ConfigError, match="ddp_spawn"):
        check_ray_config(cfg)
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, *RAY, "compute.resources.cpus=0", "compute.resources.gpus=0"))
    with pytest.raises(ConfigError, match=r"compute.resources.cpus=1"):
        check_ray_config(cfg)


def test_describe_error_unwraps_the_cause():
    class Wrapped(Exception):
        cause = ValueError("bad lr\nsecond line")

    assert describe_error(Wrapped("ray noise")) == "ValueError: second line"
    assert describe_error(KeyError("x")) == "KeyError: 'x'"


def test_rank_zero_from_launcher_environment(monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert is_rank_zero()
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert not is_rank_zero()


# -- slow: real Ray builds -----------------------------------------------------------------
@pytest.fixture(scope="module")
def local_and_ray(tmp_path_factory):
    """The small zoo built once by `local` and once by `ray` with 2 workers."""
    from bench.zoo.build import build_zoo

    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    local_root, ray_root = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("ray")
    local = build_zoo(load_recipe(SMOKE, smoke_overrides(local_root, *SMALL)), progress=False)
    ray = build_zoo(load_recipe(SMOKE, smoke_overrides(ray_root, *SMALL, *RAY)), progress=False)
    return local, ray, ray_root


@pytest.mark.slow
def test_ray_builds_the_local_zoo(local_and_ray):
    local, ray, _ = local_and_ray
    assert not ray.failed and sorted(ray.built) == sorted(local.built)
    assert [j.model_id for j in ray.plan.jobs] == [j.model_id for j in local.plan.jobs]
    local_records, ray_records = local.store.records(), ray.store.records()
    assert list(ray_records) == list(local_records)  # the driver rewrites the manifest in plan order
    for model_id, record in ray_records.items():
        assert record["test_acc"] == pytest.approx(local_records[model_id]["test_acc"], abs=0.02), record["provenance"]
        assert ray.store.verify(record)
        assert record["parent"] is None or record["parent"] in ray_records


@pytest.mark.slow
def test_ray_rerun_builds_only_what_is_missing(local_and_ray, tmp_path):
    from bench.zoo.build import build_zoo

    _, ray, ray_root = local_and_ray
    shutil.copytree(ray_root / "zoo", tmp_path / "zoo")
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, *SMALL, *RAY))
    store = ZooStore(tmp_path / "zoo" / "smoke")
    records = store.records()
    source_id = ray.plan.source.model_id
    no_record, no_checkpoint = [i for i in records if i != source_id][:2]
    del records[no_record]  # as if killed after the checkpoint was written, before its record
    store.write_records(records)
    store.checkpoint_path(no_checkpoint).unlink()
    again = build_zoo(cfg, progress=False)
    assert sorted(again.built) == sorted([no_record, no_checkpoint]) and not again.failed
    assert source_id in again.skipped and len(again.skipped) == len(ray.plan.jobs) - 2


def assert_failed_source_spares_the_negatives(tmp_path, monkeypatch, *overrides: str) -> None:
    """Build the small zoo with the source's task failing (the test hook): it is reported with its error, its
    positives as DependencyError, and the negatives are built. Shared by every executor's test."""
    from bench.zoo.build import build_zoo, prepare

    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, *SMALL, *overrides))
    _, plan, store = prepare(cfg)
    source_id = plan.source.model_id
    monkeypatch.setenv(FAIL_JOB_ENV, source_id)  # the test hook: this job's task raises
    report = build_zoo(cfg, progress=False)  # `fpbench zoo` exits 1 when report.failed is not empty
    assert report.failed[source_id].startswith("RuntimeError: ") and FAIL_JOB_ENV in report.failed[source_id]
    positives = [j.model_id for j in plan.by_role("positive")]
    assert sorted(report.failed) == sorted([source_id, *positives])
    assert all(report.failed[i].startswith("DependencyError: ") for i in positives)
    negatives = sorted(j.model_id for j in plan.by_role("negative"))
    assert sorted(report.built) == negatives and sorted(store.records()) == negatives


@pytest.mark.slow
def test_ray_failed_job_is_reported_and_the_others_built(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    assert_failed_source_spares_the_negatives(tmp_path, monkeypatch, *RAY)


@pytest.mark.slow
def test_ray_build_killed_midway_resumes_without_retraining(tmp_path):
    """SIGINT to `fpbench zoo ... executor=ray` once one model is recorded; the rerun trains only the rest."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    from bench.zoo.build import build_zoo

    slow_negatives = "zoo.negatives=[{kind: SAST, seed: [1, 2, 3, 4], epochs: 40}]"
    overrides = smoke_overrides(tmp_path, *SMALL, slow_negatives, *RAY)
    manifest = tmp_path / "zoo" / "smoke" / "manifest.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "-q", "zoo", str(SMOKE), *overrides], cwd=tmp_path, env=env,
                            preexec_fn=sigint_default,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not (manifest.exists() and manifest.read_text().strip()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    finished = {json.loads(line)["model_id"] for line in manifest.read_text().splitlines() if line.strip()}
    assert finished and proc.returncode == 130, (proc.returncode, stderr[-3000:])  # 130: interrupted, resumable
    again = build_zoo(load_recipe(SMOKE, overrides), progress=False)
    assert again.built and not again.failed
    assert finished <= set(again.skipped) and not finished & set(again.built)
    assert sorted(again.built + again.skipped) == sorted(j.model_id for j in again.plan.jobs)
