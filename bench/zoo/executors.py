"""The `ray` zoo executor: one Ray task per zoo job (`local` runs in process, in `bench.zoo.build`).

With Ray, only the driver writes the manifest: a task trains one model, writes that model's own
checkpoint files and returns its manifest record; the driver adds records as results arrive. A job
whose parent (the source) is still pending waits for it; a failed job is reported and the others
go on; models finished before an interruption are skipped on the next run (they are not pending).
Ray is an optional extra (`pip install -e '.[ray]'` in the checkout), imported only here and only when used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.config import ConfigError, RecipeConfig
from bench.tracking import log_zoo_model, training_logger_factory
from bench.zoo.jobs import finish_record, run_job, setup_datamodule, zoo_root
from bench.zoo.plan_base import Job, ZooPlan
from bench.zoo.store import ZooStore

log = logging.getLogger(__name__)

RAY_MISSING = ("compute.executor=ray needs Ray, which is not installed. Install it with "
               "pip install -e '.[ray]' from the fpbench checkout (or pip install 'ray[default]'), or use "
               "compute.executor=local. Not pip install 'fpbench[ray]': the PyPI project of that name is unrelated.")
FAIL_JOB_ENV = "FPBENCH_TEST_FAIL_JOB"  # test hook: comma-separated model ids whose Ray task raises
SOCKET_PATH_MAX = 107  # AF_UNIX socket paths: 108 bytes with the terminating NUL (Linux)
# What Ray appends to its temp dir for its longest socket path (7-digit pid), plus a margin.
RAY_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store") + 8
PATH_KEYS = ("data_dir", "zoo_dir", "results_dir", "cache_dir")


def require_ray() -> ModuleType:
    """Import Ray, or raise ConfigError with the install command (before any work)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def check_ray_config(cfg: DictConfig) -> None:
    """Cheap checks of `compute:` for the Ray executor; raise ConfigError naming the fix."""
    require_ray()
    resources = cfg.compute.resources
    if resources.cpus <= 0 and resources.gpus <= 0:
        raise ConfigError(f"compute.resources cpus={resources.cpus} gpus={resources.gpus}: a Ray task needs "
                          "cpus > 0 or gpus > 0 (e.g. compute.resources.cpus=1).")
    if resources.cpus < 0 or resources.gpus < 0:
        raise ConfigError(f"compute.resources cpus={resources.cpus} gpus={resources.gpus} must be >= 0.")
    if relaunches_script(str(cfg.compute.trainer.strategy)):
        raise ConfigError(f"compute.trainer.strategy={cfg.compute.trainer.strategy} re-launches the command line, "
                          "which inside a Ray task is Ray's worker. With compute.executor=ray use strategy=ddp_spawn "
                          "(one task, several devices), or compute.executor=local for ddp/SLURM.")


def relaunches_script(strategy: str) -> bool:
    """True for Lightning strategies that start their other ranks by re-running the command line."""
    return strategy.startswith(("ddp", "fsdp", "deepspeed")) and not any(
        word in strategy for word in ("spawn", "fork", "notebook"))


def task_trainer(trainer: DictConfig, gpus: float) -> Any:
    """The TrainerConfig a task uses: `strategy: auto` over several GPUs becomes ddp_spawn, because
    Lightning's default (ddp) would re-run Ray's worker script for its other ranks."""
    trainer_cfg = OmegaConf.to_object(trainer)
    devices = trainer_cfg.devices
    several = (isinstance(devices, int) and devices > 1) or (isinstance(devices, (list, tuple)) and len(devices) > 1) \
        or (devices in ("auto", -1, "-1") and gpus > 1)
    if several and trainer_cfg.strategy == "auto":
        trainer_cfg.strategy = "ddp_spawn"
    return trainer_cfg


def ray_temp_dir(cache_dir: str | os.PathLike) -> Path:
    """`<cache_dir>/ray` (absolute), or `/tmp/fpbench-ray-<uid>` when that is too long for Ray's sockets."""
    preferred = Path(cache_dir).resolve() / "ray"
    if len(str(preferred).encode()) + RAY_SOCKET_SUFFIX <= SOCKET_PATH_MAX:
        return preferred
    fallback = Path("/tmp") / f"fpbench-ray-{os.getuid()}"
    log.info("Ray temp dir %s is too long for a Unix socket path; using %s", preferred, fallback)
    return fallback


@contextmanager
def ray_session(cfg: DictConfig) -> Iterator[ModuleType]:
    """Connect to `compute.ray.address` (or $RAY_ADDRESS), or start a local Ray instance sized for
    `compute.workers` jobs; shut it down afterwards if fpbench started it."""
    ray = require_ray()
    if ray.is_initialized():  # the caller's own Ray session (e.g. a notebook): use it, leave it running
        yield ray
        return
    address = cfg.compute.ray.address or None
    kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "ignore_reinit_error": True,
                              "log_to_driver": False}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["num_cpus"] = max(1, math.ceil(cfg.compute.workers * cfg.compute.resources.cpus))
        temp_dir = ray_temp_dir(cfg.paths.cache_dir)
        temp_dir.mkdir(parents=True, exist_ok=True)
        kwargs["_temp_dir"] = str(temp_dir)
    ray.init(**kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def portable_config(cfg: DictConfig) -> dict[str, Any]:
    """The recipe as plain data for a task, with relative paths made absolute (driver's cwd)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in PATH_KEYS:
        data["paths"][key] = os.path.abspath(data["paths"][key])
    data["tracking"]["wandb"]["dir"] = os.path.abspath(data["tracking"]["wandb"]["dir"])
    return data


def run_job_task(cfg_data: dict[str, Any], job_data: dict[str, Any], plan_data: dict[str, Any], threads: int,
                 fail: bool = False) -> dict[str, Any]:
    """Body of one Ray task: make one model, save its checkpoint, return its manifest record.

    Args:
        cfg_data: `portable_config(cfg)`.
        job_data: `dataclasses.asdict(job)`.
        plan_data: {"name", "dataset", "split_hashes"} of the driver's plan (checked against this node's data).
        threads: torch intra-op threads (`compute.cpu_threads`, else the task's CPU request), so tasks do not
            oversubscribe cores.
        fail: raise before training (the `FPBENCH_TEST_FAIL_JOB` test hook).
    """
    torch.set_num_threads(max(1, threads))
    cfg = OmegaConf.merge(OmegaConf.structured(RecipeConfig), cfg_data)
    job = Job(**job_data)
    if fail:
        raise RuntimeError(f"{FAIL_JOB_ENV} names {job.model_id}: failing it on purpose (test hook)")
    dm = setup_datamodule(cfg)
    plan = ZooPlan(name=plan_data["name"], dataset=plan_data["dataset"], split_hashes=plan_data["split_hashes"])
    if dm.split_hashes() != plan.split_hashes:
        raise RuntimeError(f"The data under paths.data_dir={cfg.paths.data_dir} on this node differs from the driver's "
                           "(split hashes differ); every Ray node needs the same dataset files.")
    factory = training_logger_factory(cfg)
    logger = factory(job) if factory else False
    trainer_cfg = task_trainer(cfg.compute.trainer, cfg.compute.resources.gpus)
    root_dir = str(Path(cfg.paths.cache_dir) / "lightning")
    store = ZooStore(zoo_root(cfg))
    try:
        model, info, seconds = run_job(job, dm, store, trainer_cfg, root_dir, False, logger)
        record = finish_record(job, model, info, seconds, dm, store, plan)
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


class JobQueue:
    """Pending jobs in launch order: parents of other pending jobs first, then the plan's order.

    A job is ready when its parent is not pending (built before) or was built in this run; a job
    whose parent failed fails too.
    """

    def __init__(self, pending: list[Job]) -> None:
        pending_ids = {job.model_id for job in pending}
        parents = {job.parent for job in pending if job.parent in pending_ids}
        self.waiting = sorted(pending, key=lambda job: job.model_id not in parents)  # stable: plan order kept
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

    def __bool__(self) -> bool:
        return bool(self.waiting)


def run_ray(cfg: DictConfig, plan: ZooPlan, pending: list[Job], store: ZooStore, report: Any) -> None:
    """Run `pending` as Ray tasks, at most `compute.workers` at once; the driver writes every record.

    Fills `report.built` and `report.failed[model_id] = "Type: message"`; other jobs go on after a
    failure. Must be called with the zoo lock held (`build_zoo` does).

    Raises:
        ConfigError: Ray is not installed, or `compute:` asks for what the Ray cluster cannot give.
    """
    check_ray_config(cfg)
    cfg_data = portable_config(cfg)
    plan_data = {"name": plan.name, "dataset": plan.dataset, "split_hashes": dict(plan.split_hashes)}
    fail_ids = {i for i in os.environ.get(FAIL_JOB_ENV, "").split(",") if i}
    resources = cfg.compute.resources
    threads = cfg.compute.get("cpu_threads") or max(1, int(resources.cpus))  # the recipe's choice, else the cores asked
    with ray_session(cfg) as ray:
        _check_cluster(ray, cfg)
        task = ray.remote(run_job_task).options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=1)
        queue, in_flight = JobQueue(pending), {}
        try:
            while queue or in_flight:
                for job in queue.ready(cfg.compute.workers - len(in_flight)):
                    log.info("submitting %s %s", job.role, job.provenance)
                    ref = task.remote(cfg_data, dataclasses.asdict(job), plan_data, threads, job.model_id in fail_ids)
                    in_flight[ref] = job
                if not in_flight:  # nothing can start: whatever waits has a failed ancestor
                    for job in queue.orphans(set(queue.unfinished)):
                        report.failed[job.model_id] = f"DependencyError: parent {job.parent} was not built"
                    break
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    _collect(ray, ref, in_flight.pop(ref), store, report, queue, len(pending))
                for job in queue.orphans(set(report.failed)):
                    report.failed[job.model_id] = f"DependencyError: parent {job.parent} failed ({report.failed[job.parent]})"
                    queue.finished(job)
                    log.error("%s not built: its parent %s failed", job.model_id, job.parent)
        finally:
            for ref in in_flight:  # interrupted: stop the rest; finished models are already recorded
                ray.cancel(ref, force=True)
    sort_manifest(store, plan)


def sort_manifest(store: ZooStore, plan: ZooPlan) -> None:
    """Rewrite the manifest in plan order (records arrive in completion order), as a local build writes it."""
    records = store.records()
    order = [job.model_id for job in plan.jobs if job.model_id in records]
    ordered = {i: records[i] for i in order} | {i: r for i, r in records.items() if i not in order}
    if list(ordered) != list(records):
        store.write_records(ordered)


def _collect(ray: ModuleType, ref: Any, job: Job, store: ZooStore, report: Any, queue: JobQueue, total: int) -> None:
    try:
        record = ray.get(ref)
    except Exception as err:  # the task's exception (wrapped by Ray) or a lost worker
        report.failed[job.model_id] = describe_error(err)
        log.error("%s %s failed: %s", job.role, job.provenance, report.failed[job.model_id])
    else:
        store.add_record(record)
        report.built.append(job.model_id)
        log.info("[%d/%d] built %s %s (test acc %.3f, %.1f s)", len(report.built), total, job.role, job.model_id,
                 record["test_acc"], record["train_seconds"])
    queue.finished(job)


def _check_cluster(ray: ModuleType, cfg: DictConfig) -> None:
    """Fail fast when no node could ever run a task (Ray would otherwise wait forever)."""
    available = ray.cluster_resources()
    resources = cfg.compute.resources
    for key, asked in (("CPU", resources.cpus), ("GPU", resources.gpus)):
        if asked > available.get(key, 0.0):
            message = (f"compute.resources.{key.lower()}s={asked} per job, but the Ray cluster has "
                       f"{available.get(key, 0.0):g} {key}s. Lower it, or join a cluster that has them (compute.ray.address).")
            if cfg.compute.ray.address:  # an autoscaling cluster may still add nodes
                log.warning(message)
            else:
                raise ConfigError(message)
