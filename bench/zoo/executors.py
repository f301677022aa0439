"""The `ray` zoo executor: one Ray task per zoo job (`local` runs in process, in `bench.zoo.build`,
or in worker processes, `bench.zoo.processes`).

With Ray, only the driver writes the manifest: a task (`bench.zoo.tasks.run_job_task`) trains one
model, writes that model's own checkpoint files and returns its manifest record; the driver adds
records as results arrive. A job whose parent (the source) is still pending waits for it; a failed
job is reported and the others go on; models finished before an interruption are skipped on the next
run (they are not pending). Ray is an optional extra (`pip install -e '.[ray]'` in the checkout),
imported only here and only when used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError
from bench.zoo.plan_base import Job, ZooPlan
from bench.zoo.store import ZooStore
from bench.zoo.tasks import (
    JobQueue,
    dispatch,
    failing_jobs,
    plan_summary,
    portable_config,
    run_job_task,
    sort_manifest,
)
from bench.zoo.workers import resolve_workers

log = logging.getLogger(__name__)

RAY_MISSING = ("compute.executor=ray needs Ray, which is not installed. Install it with "
               "pip install -e '.[ray]' from the fpbench checkout (or pip install 'ray[default]'), or use "
               "compute.executor=local. Not pip install 'fpbench[ray]': the PyPI project of that name is unrelated.")
SOCKET_PATH_MAX = 107  # AF_UNIX socket paths: 108 bytes with the terminating NUL (Linux)
# What Ray appends to its temp dir for its longest socket path (7-digit pid), plus a margin.
RAY_SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store") + 8


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
        kwargs["num_cpus"] = max(1, math.ceil(resolve_workers(cfg) * cfg.compute.resources.cpus))
        temp_dir = ray_temp_dir(cfg.paths.cache_dir)
        temp_dir.mkdir(parents=True, exist_ok=True)
        kwargs["_temp_dir"] = str(temp_dir)
    ray.init(**kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_ray(cfg: DictConfig, plan: ZooPlan, pending: list[Job], store: ZooStore, report: Any,
            cost: Callable[[Job], float] | None = None) -> None:
    """Run `pending` as Ray tasks, at most `compute.workers` at once; the driver writes every record.

    Fills `report.built` and `report.failed[model_id] = "Type: message"`; other jobs go on after a
    failure. Must be called with the zoo lock held (`build_zoo` does).

    Raises:
        ConfigError: Ray is not installed, or `compute:` asks for what the Ray cluster cannot give.
    """
    check_ray_config(cfg)
    cfg_data, plan_data, fail_ids = portable_config(cfg), plan_summary(plan), failing_jobs()
    resources = cfg.compute.resources
    threads = cfg.compute.get("cpu_threads") or max(1, int(resources.cpus))  # the recipe's choice, else the cores asked
    trainer_cfg = task_trainer(cfg.compute.trainer, resources.gpus)
    workers = resolve_workers(cfg)
    with ray_session(cfg) as ray:
        _check_cluster(ray, cfg)
        task = ray.remote(run_job_task).options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=1)
        def submit(job: Job) -> Any:
            log.info("submitting %s %s", job.role, job.provenance)
            return task.remote(cfg_data, dataclasses.asdict(job), plan_data, threads, job.model_id in fail_ids,
                               trainer_cfg)

        in_flight: dict[Any, Job] = {}
        try:  # cost: the longest ready job first
            dispatch(JobQueue(pending, cost), in_flight, workers, submit,
                     lambda refs: ray.wait(refs, num_returns=1)[0], partial(_result, ray), store, report)
        finally:
            for ref in in_flight:  # interrupted: stop the rest; finished models are already recorded
                ray.cancel(ref, force=True)
    sort_manifest(store, plan)


def _result(ray: ModuleType, ref: Any) -> tuple[dict[str, Any] | None, BaseException | None]:
    """(record, None) of a finished task, or (None, the error): the task's exception (wrapped by Ray) or a lost worker."""
    try:
        return ray.get(ref), None
    except Exception as err:
        return None, err


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
