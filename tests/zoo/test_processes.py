"""The local executor on every core (bench.zoo.processes, bench.zoo.workers) and channels-last fits.

Worker processes must build exactly the zoo the in-process path builds (same ids, same bytes on the
same machine), report failures like Ray does, and stop cleanly on Ctrl-C; a channels-last fit must
keep its recipe (epochs, steps, the data and its order) and its accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from bench.config import ConfigError, load_recipe
from bench.nets import new_model
from bench.training import ClassifierModule, OptimizerConfig, ScheduleConfig, TrainerConfig, accuracy, fit
from bench.zoo import workers as workers_mod
from bench.zoo.workers import resolve_workers
from tests.conftest import REPO, SMOKE, sigint_default, smoke_overrides
from tests.zoo.test_executors import SMALL, assert_failed_source_spares_the_negatives


@pytest.fixture(scope="module")
def in_process_and_workers(tmp_path_factory):
    """The small digits zoo built in process (workers=1) and by two worker processes."""
    from bench.zoo.build import build_zoo

    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    first = build_zoo(load_recipe(SMOKE, smoke_overrides(one, *SMALL, "compute.workers=1")), progress=False)
    second = build_zoo(load_recipe(SMOKE, smoke_overrides(two, *SMALL, "compute.workers=2")), progress=False)
    return first, second


def test_worker_processes_build_the_same_bytes(in_process_and_workers):
    first, second = in_process_and_workers
    assert not second.failed and sorted(second.built) == sorted(first.built) and len(first.built) == 5
    one, two = first.store.records(), second.store.records()
    assert list(two) == list(one)  # the driver rewrites the manifest in plan order
    for model_id, record in one.items():  # same code, seeds, data order and threads: the same weights
        assert two[model_id]["sha256"] == record["sha256"], record["provenance"]
        assert two[model_id]["test_acc"] == record["test_acc"]
        assert two[model_id]["source_agreement"] == record["source_agreement"]
        assert two[model_id]["check"] == record["check"]


def test_a_failed_job_is_reported_and_the_others_built(tmp_path, monkeypatch):
    """The source fails in its worker: reported with its error, its positives as DependencyError, negatives built."""
    assert_failed_source_spares_the_negatives(tmp_path, monkeypatch, "compute.workers=2")


def test_automatic_workers_fill_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(workers_mod, "usable_cores", lambda: 8)
    monkeypatch.setattr(workers_mod.torch.cuda, "is_available", lambda: False)

    def workers(*extra: str) -> int:
        return resolve_workers(load_recipe(SMOKE, smoke_overrides(tmp_path, "compute.workers=null", *extra)))

    assert workers() == 8  # smoke: cpu_threads 1
    assert workers("compute.cpu_threads=3") == 2
    assert workers("compute.cpu_threads=16") == 1
    assert workers("compute.cpu_threads=null") == 1  # torch's default threads already use every core
    assert workers("compute.trainer.strategy=ddp_spawn", "compute.trainer.devices=2") == 1
    assert resolve_workers(load_recipe(SMOKE, smoke_overrides(tmp_path, "compute.workers=3"))) == 3
    monkeypatch.setattr(workers_mod.torch.cuda, "is_available", lambda: True)
    assert workers() == 1  # a GPU: one model per device unless compute.workers asks for more


@pytest.mark.parametrize("override, message", [
    ("compute.workers=0", r"compute.workers=0 must be >= 1"),
    ("compute.trainer.memory_format=nhwc", r"compute.trainer.memory_format='nhwc' is not one of channels_last, contiguous"),
])
def test_bad_compute_values_are_refused_at_load(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(SMOKE, smoke_overrides(tmp_path, override))


def test_several_local_workers_with_ddp_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"compute.workers=2 with compute.trainer.strategy=ddp_spawn .*Fix: compute.workers=1"):
        load_recipe(SMOKE, smoke_overrides(tmp_path, "compute.workers=2", "compute.trainer.strategy=ddp_spawn",
                                           "compute.trainer.devices=2"))


def _fit_recording(dm, memory_format: str, epochs: int = 3) -> tuple[torch.nn.Module, list[str], list[int]]:
    """A convnet fit on the digits owner split; returns the model and, per step, a hash of its labels and its size."""
    model = new_model("convnet", {}, dm, 0)
    module = ClassifierModule(model, OptimizerConfig(lr=0.05), ScheduleConfig(), epochs)
    seen, sizes = [], []
    step = module.training_step

    def recording(batch, batch_idx):
        seen.append(hashlib.sha256(batch[1].numpy().tobytes() + batch[0].numpy().tobytes()).hexdigest())
        sizes.append(len(batch[1]))
        return step(batch, batch_idx)

    module.training_step = recording
    loader = dm.loader("owner", batch_size=64, shuffle=True, train=True, generator_seed=0)
    trainer = TrainerConfig(enable_progress_bar=False, memory_format=memory_format)
    fit(module, loader, trainer, root_dir=str(dm.data_dir), seed=0)
    return module.model, seen, sizes


def test_a_channels_last_fit_keeps_its_recipe_and_accuracy(smoke_cfg):
    """Same epochs, steps, batches (contents and order) as a contiguous fit; weights come back contiguous; the
    accuracy within 0.03 of the contiguous fit's (docs/zoo_throughput.md states the seed-to-seed noise)."""
    from bench.zoo.jobs import setup_datamodule

    dm = setup_datamodule(smoke_cfg)
    before_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        old, old_batches, old_sizes = _fit_recording(dm, "contiguous")
        new, new_batches, new_sizes = _fit_recording(dm, "channels_last")
    finally:
        torch.set_num_threads(before_threads)
    n = dm.split_size("owner")
    assert new_batches == old_batches and new_sizes == old_sizes  # the same data in the same order, step by step
    assert len(new_sizes) == 3 * -(-n // 64) and sum(new_sizes) == 3 * n  # 3 epochs of every owner image
    assert all(p.is_contiguous() for p in new.parameters())  # saved and queried as before
    x, y = dm.tensors("test")
    assert abs(accuracy(new, x, y) - accuracy(old, x, y)) <= 0.03
    assert accuracy(new, x, y) > 0.8


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_the_rerun_finishes(tmp_path):
    """SIGINT to `fpbench zoo` with 2 worker processes once one model is recorded: exit 130, no worker left
    behind, and the rerun trains only the rest."""
    from bench.zoo.build import build_zoo

    slow_negatives = "zoo.negatives=[{kind: SAST, seed: [1, 2, 3, 4], epochs: 40}]"
    overrides = smoke_overrides(tmp_path, *SMALL, slow_negatives, "compute.workers=2")
    manifest = tmp_path / "zoo" / "smoke" / "manifest.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "-q", "zoo", str(SMOKE), *overrides], cwd=tmp_path, env=env,
                            preexec_fn=sigint_default,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (manifest.exists() and manifest.read_text().strip()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, stderr = proc.communicate(timeout=300)
    finished = {json.loads(line)["model_id"] for line in manifest.read_text().splitlines() if line.strip()}
    assert finished and proc.returncode == 130, (proc.returncode, stderr[-3000:])
    assert not _live_group_members(proc.pid), "processes of the build still running"
    again = build_zoo(load_recipe(SMOKE, overrides), progress=False)
    assert again.built and not again.failed
    assert finished <= set(again.skipped) and not finished & set(again.built)


def _live_group_members(group: int, grace_s: float = 10.0) -> list[str]:
    """Processes of `group` still alive after `grace_s` (zombies waiting to be reaped are not alive)."""
    deadline = time.monotonic() + grace_s
    while True:
        ps = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-g", str(group)], capture_output=True, text=True).stdout
        alive = [line for line in ps.splitlines() if line.strip() and not line.strip().startswith("Z")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def test_worker_logs_are_fpbenchs_lines_only(tmp_path):
    """`fpbench zoo` with two workers, output to a file: one line per built model, none of Lightning's
    banners or the data line once per worker (the workers log like the CLI, bench.log_setup)."""
    overrides = smoke_overrides(tmp_path, *SMALL, "compute.workers=2")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "bench", "zoo", str(SMOKE), *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    built = [line for line in out.splitlines() if "] built " in line]
    total = int(built[0].split("/")[1].split("]")[0])  # `[k/N] built role id (...)`
    assert sorted(int(line[1:].split("/")[0]) for line in built) == list(range(1, total + 1)) and total >= 5
    for banner in ("GPU available", "Trainer.fit", "litlogger", "LeafSpec"):
        assert banner not in out, banner
    assert out.count("digits splits") == 1  # the driver's line; the workers keep theirs to themselves


def test_warm_workers_started_before_the_build_train_its_jobs(in_process_and_workers, tmp_path, monkeypatch):
    """`start_workers` (the CLI calls it before its own imports) spawns the workers; the build takes that pool
    and trains the same bytes as one process; nothing is left running."""
    from bench.zoo import processes, worker_pool
    from bench.zoo.build import build_zoo

    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, *SMALL, "compute.workers=2"))
    assert worker_pool.start_workers(cfg) and len(worker_pool._WARM) == 1
    pool = worker_pool._WARM[0]
    assert len(pool.executor._processes) == 2  # spawned now, not at the first job
    monkeypatch.setattr(processes, "new_pool", lambda *a, **k: pytest.fail("the build spawned a pool of its own"))
    report = build_zoo(cfg, progress=False)
    assert not worker_pool._WARM and not report.failed and len(report.built) == 5
    one = in_process_and_workers[0].store.records()
    for model_id, record in report.store.records().items():
        assert record["sha256"] == one[model_id]["sha256"], record["provenance"]
    assert pool.executor._processes is None or not any(p.is_alive() for p in pool.executor._processes.values())


def test_no_warm_workers_where_no_first_build_needs_them(tmp_path, monkeypatch):
    """One worker, Ray, or a zoo already started (a manifest): nothing is spawned. A pool no build takes, or
    one started for other data, is terminated at once (its workers may still be importing)."""
    from bench.zoo import worker_pool

    def start(*extra: str) -> bool:
        return worker_pool.start_workers(load_recipe(SMOKE, smoke_overrides(tmp_path, *SMALL, *extra)))

    assert not start("compute.workers=1") and not start("compute.executor=ray", "compute.workers=2")
    manifest = tmp_path / "zoo" / "smoke" / "manifest.jsonl"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("")
    assert not start("compute.workers=2") and not worker_pool._WARM
    manifest.unlink()
    assert start("compute.workers=2")
    processes = list(worker_pool._WARM[0].executor._processes.values())
    worker_pool.release_pool()
    assert not worker_pool._WARM and not any(p.is_alive() for p in processes)
    cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, *SMALL, "compute.workers=2"))
    assert worker_pool.start_workers(cfg)
    other = worker_pool.portable_config(load_recipe(SMOKE, smoke_overrides(tmp_path, *SMALL, "compute.workers=2",
                                                                          "zoo.split_seed=7")))
    processes = list(worker_pool._WARM[0].executor._processes.values())
    assert worker_pool.take_pool(other, 0, logging.getLogger("bench").getEffectiveLevel()) is None
    assert not worker_pool._WARM and not any(p.is_alive() for p in processes)
