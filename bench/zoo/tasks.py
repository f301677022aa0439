"""Zoo jobs run away from the driver: the work of one task, the launch order, and collecting results.

Both executors that run jobs outside the driver's process use this module: worker processes on this
machine (`bench.zoo.processes`, the `local` executor with `compute.workers` > 1) and Ray tasks
(`bench.zoo.executors`). A task trains one model, writes that model's own checkpoint files and
returns its manifest record; only the driver writes the manifest, adding records as they arrive,
then rewrites it in plan order (`sort_manifest`), as an in-process build writes it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.training_config import TrainerConfig
from bench.wandb_runs import log_zoo_model, training_logger_factory
from bench.zoo.jobs import finish_record, run_job, setup_datamodule, zoo_root
from bench.zoo.plan_base import Job, ZooPlan
from bench.zoo.store import ZooStore
from bench.zoo.worker_pool import portable_config  # noqa: F401  (re-exported: the executors' name for it)
from datamodules.base import DataConfig

log = logging.getLogger(__name__)

FAIL_JOB_ENV = "FPBENCH_TEST_FAIL_JOB"  # test hook: comma-separated model ids whose task raises
_DATAMODULES: dict[str, Any] = {}  # this process's datamodules, by data config: a worker loads its data once


def plan_summary(plan: ZooPlan) -> dict[str, Any]:
    """What a task needs of the driver's plan: its name, dataset and split hashes (checked on the task's node), and
    the source's model id (a job without a parent measures its agreement with the source once that is built)."""
    return {"name": plan.name, "dataset": plan.dataset, "split_hashes": dict(plan.split_hashes),
            "source_id": plan.source.model_id if plan.jobs else None}


def failing_jobs() -> set[str]:
    """The model ids `FPBENCH_TEST_FAIL_JOB` names (the test hook), read in the driver."""
    return {i for i in os.environ.get(FAIL_JOB_ENV, "").split(",") if i}


def task_datamodule(cfg: DictConfig) -> Any:
    """The recipe's datamodule, set up once per process and data config (tasks of one worker share it)."""
    key = json.dumps([OmegaConf.to_container(cfg.data, resolve=True), cfg.paths.data_dir, cfg.zoo.split_seed],
                     sort_keys=True, default=str)
    if key not in _DATAMODULES:
        _DATAMODULES[key] = setup_datamodule(cfg)
    return _DATAMODULES[key]


def task_config(cfg_data: dict[str, Any]) -> DictConfig:
    """The driver's resolved, validated recipe from `portable_config` (the zoo does not import bench.config)."""
    cfg = OmegaConf.create(cfg_data)
    cfg.data = OmegaConf.merge(OmegaConf.structured(DataConfig), cfg_data["data"])  # typed, as the datamodules read it
    return cfg


def task_datamodule_of(cfg_data: dict[str, Any]) -> Any:
    """`task_datamodule` of a `portable_config` (a warm worker sets its data up before its first job)."""
    return task_datamodule(task_config(cfg_data))


def run_job_task(cfg_data: dict[str, Any], job_data: dict[str, Any], plan_data: dict[str, Any], threads: int,
                 fail: bool = False, trainer_cfg: Any = None, log_training: bool = True) -> dict[str, Any]:
    """Body of one task: make one model, save its checkpoint, return its manifest record.

    Args:
        cfg_data: `portable_config(cfg)`.
        job_data: `dataclasses.asdict(job)`.
        plan_data: `plan_summary(plan)` of the driver's plan (checked against this node's data).
        threads: torch intra-op threads (`compute.cpu_threads`, else the task's CPU share), so tasks do not
            oversubscribe cores.
        fail: raise before training (the `FPBENCH_TEST_FAIL_JOB` test hook).
        trainer_cfg: the `TrainerConfig` to train with; None: the recipe's `compute.trainer`.
        log_training: log the training curve to W&B when the recipe's tracking asks for it.
    """
    torch.set_num_threads(max(1, threads))
    cfg = task_config(cfg_data)
    job = Job(**job_data)
    if fail:
        raise RuntimeError(f"{FAIL_JOB_ENV} names {job.model_id}: failing it on purpose (test hook)")
    dm = task_datamodule(cfg)
    plan = ZooPlan(name=plan_data["name"], dataset=plan_data["dataset"], split_hashes=plan_data["split_hashes"])
    if dm.split_hashes() != plan.split_hashes:
        raise RuntimeError(f"The data under paths.data_dir={cfg.paths.data_dir} here differs from the driver's "
                           "(split hashes differ); every node needs the same dataset files.")
    factory = training_logger_factory(cfg) if log_training else None
    logger = factory(job) if factory else False
    if trainer_cfg is None:
        trainer_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainerConfig), cfg.compute.trainer))
    root_dir = str(Path(cfg.paths.cache_dir) / "lightning")
    store = ZooStore(zoo_root(cfg))
    try:
        model, info, seconds = run_job(job, dm, store, trainer_cfg, root_dir, False, logger)
        record = finish_record(job, model, info, seconds, dm, store, plan, source_id=plan_data.get("source_id"))
        if logger:
            log_zoo_model(logger.experiment, record, store.checkpoint_path(job.model_id))  # W&B artifact + lineage
        return record
    finally:
        if logger:
            logger.experiment.finish()


def describe_error(err: BaseException) -> str:
    """"Type: message" of a task's failure (the original exception, not Ray's wrapper)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    message = str(err).strip().splitlines()
    return f"{type(err).__name__}: {message[-1] if message else ''}".rstrip(": ")


def nominal_images(job: Job, split_size: Callable[[str], int]) -> int:
    """Training images a job's fits go through: epochs x the training split (attacks: the attacker's split).

    `split_size` is the datamodule's (`dm.split_size`). PGD's extra passes and extraction's labelling are
    not counted: a cost estimate for ordering jobs, not a FLOP count.
    """
    if job.op == "import":
        return 0
    if job.op == "train":
        return int(job.spec.get("epochs", 0) or 0) * split_size(job.spec.get("split", "owner"))
    return sum(int(step["params"].get("epochs", 0) or 0) for step in job.spec["chain"]) * split_size("attacker")


class JobQueue:
    """Pending jobs in launch order: parents of other pending jobs first, then the longest first.

    A job is ready when its parent is not pending (built before) or was built in this run; a job
    whose parent failed fails too. With `cost` (job -> estimated work, e.g. `nominal_images`), ready
    jobs start longest first, so a long job does not start last and leave the other workers idle at the
    end (longest-processing-time scheduling); without it, in the plan's order. The order changes which
    worker trains a model and when, never what it trains.
    """

    def __init__(self, pending: list[Job], cost: Callable[[Job], float] | None = None) -> None:
        pending_ids = {job.model_id for job in pending}
        parents = {job.parent for job in pending if job.parent in pending_ids}
        costs = {job.model_id: cost(job) if cost else 0 for job in pending}
        # stable: the plan's order among equals
        self.waiting = sorted(pending, key=lambda job: (job.model_id not in parents, -costs[job.model_id]))
        self.unfinished = set(pending_ids)

    def ready(self, limit: int) -> list[Job]:
        out = [job for job in self.waiting if job.parent not in self.unfinished][:max(limit, 0)]
        self.waiting = [job for job in self.waiting if job not in out]
        return out

    def finished(self, job: Job) -> None:
        self.unfinished.discard(job.model_id)

    def orphans(self, failed: set[str]) -> list[Job]:
        """Remove and return the waiting jobs whose parent failed."""
        out = [job for job in self.waiting if job.parent in failed]
        self.waiting = [job for job in self.waiting if job not in out]
        return out

    def fail_orphans(self, report: Any) -> None:
        """Record every waiting job whose parent failed as failed too (`DependencyError`), transitively."""
        while orphans := self.orphans(set(report.failed)):
            for job in orphans:
                report.failed[job.model_id] = (f"DependencyError: parent {job.parent} failed "
                                               f"({report.failed[job.parent]})")
                self.finished(job)
                log.error("%s not built: its parent %s failed", job.model_id, job.parent)

    def __bool__(self) -> bool:
        return bool(self.waiting)


def collect(job: Job, record: dict[str, Any] | None, error: BaseException | None, store: ZooStore, report: Any,
            queue: JobQueue, total: int) -> None:
    """Add a finished task's record to the manifest (the driver's only write), or report its failure."""
    if error is not None:
        report.failed[job.model_id] = describe_error(error)
        log.error("%s %s failed: %s", job.role, job.provenance, report.failed[job.model_id])
    else:
        store.add_record(record)
        report.built.append(job.model_id)
        log.info("[%d/%d] built %s %s (test acc %.3f, %.1f s)", len(report.built), total, job.role, job.model_id,
                 record["test_acc"], record["train_seconds"])
    queue.finished(job)


def dispatch(queue: JobQueue, in_flight: dict[Any, Job], limit: int, submit: Callable[[Job], Any],
             wait_first: Callable[[list[Any]], Iterable[Any]],
             outcome: Callable[[Any], tuple[dict[str, Any] | None, BaseException | None]], store: ZooStore,
             report: Any, after: Callable[[list[Any]], None] | None = None) -> None:
    """The executors' one loop: keep up to `limit` jobs in flight, record each as it finishes, fail orphans.

    `in_flight` (handle -> job) is the caller's, so that its `finally` can stop what still runs after an
    interruption. Executors differ only in their handles (Ray object refs, futures):

    Args:
        submit: starts a job, returns its handle.
        wait_first: blocks until at least one of the handles is done; returns the done ones.
        outcome: a done handle's (record, None) or (None, error).
        after: called with each round's done handles after they are recorded (a progress bar; a broken
            pool that fails the rest by emptying `queue` and `in_flight`).
    """
    total = len(queue.waiting) + len(in_flight)
    while queue or in_flight:
        for job in queue.ready(limit - len(in_flight)):
            in_flight[submit(job)] = job
        if not in_flight:  # nothing can start: whatever waits has an ancestor that was not built
            for job in queue.orphans(set(queue.unfinished)):
                report.failed.setdefault(job.model_id, f"DependencyError: parent {job.parent} was not built")
            break
        done = list(wait_first(list(in_flight)))
        for handle in done:
            record, error = outcome(handle)
            collect(in_flight.pop(handle), record, error, store, report, queue, total)
        queue.fail_orphans(report)
        if after is not None:
            after(done)


def sort_manifest(store: ZooStore, plan: ZooPlan) -> None:
    """Rewrite the manifest in plan order (records arrive in completion order), as a local build writes it."""
    records = store.records()
    order = [job.model_id for job in plan.jobs if job.model_id in records]
    ordered = {i: records[i] for i in order} | {i: r for i, r in records.items() if i not in order}
    if list(ordered) != list(records):
        store.write_records(ordered)
