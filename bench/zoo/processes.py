"""The `local` executor on every core: zoo jobs in `compute.workers` worker processes of this machine.

Used when `bench.zoo.workers.resolve_workers` gives more than one worker (e.g. `compute.cpu_threads: 1`
on a multi-core machine, the quickstart's setting). Each worker is a fresh Python process (spawned,
never forked: a forked copy of a process that has run torch's thread pools can hang) that loads the
data once and then trains one job after another at `compute.cpu_threads` threads, writing that
model's checkpoint and returning its record; the driver alone writes the manifest
(`bench.zoo.tasks`). A job waits for its parent; a failed job is reported and the others go on.

A worker trains exactly what the in-process path trains: the same code (`bench.zoo.jobs`), seeds,
data order and thread count, so the weights are bit for bit those of `compute.workers=1` on the same
machine (tests/zoo/test_processes.py). On GPUs, worker *i* sees GPU *i* mod the visible count
(`CUDA_VISIBLE_DEVICES`), so `compute.workers=N` packs N / GPUs models on each device. The CLI starts
the workers before its own imports when a first build will need them (`bench.zoo.worker_pool`), and
the build takes that warm pool.

Ctrl-C: the workers ignore SIGINT; the driver stops them and raises KeyboardInterrupt. Models
finished before are recorded; the rest are built by the next run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.progress import Progress
from bench.zoo.plan_base import ZooPlan
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
from bench.zoo.worker_pool import new_pool, take_pool, visible_gpus

log = logging.getLogger(__name__)

WORKER_DIED = ("a worker process died before returning its model ({error}). Either it ran out of memory (fewer "
               "compute.workers, or compute.workers=1), or the script that called build_zoo has no "
               "`if __name__ == \"__main__\":` guard (worker processes are spawned: they import the main module "
               "again). Models finished before are kept; run the build again to finish the rest.")


def run_processes(cfg: DictConfig, plan: ZooPlan, pending: list, store: ZooStore, report: Any, workers: int,
                  log_training: bool = True, progress: bool = True, cost: Callable[[Any], float] | None = None) -> None:
    """Run `pending` in `workers` worker processes; the driver writes every record, then sorts the manifest.

    Fills `report.built` and `report.failed[model_id] = "Type: message"`. Must be called with the zoo lock
    held (`build_zoo` does).

    Args:
        workers: worker processes (`resolve_workers`), at most one per pending job is started.
        log_training: log each model's training curve to W&B when the recipe's tracking asks for it.
        progress: count finished models (`bench.progress`: a bar on a terminal, else lines with an ETA;
            workers train without Lightning's bars).
        cost: job -> estimated work; ready jobs start longest first (`JobQueue`).
    """
    cfg_data, plan_data, fail_ids = portable_config(cfg), plan_summary(plan), failing_jobs()
    threads = int(cfg.compute.cpu_threads or 1)
    trainer_cfg = OmegaConf.to_object(cfg.compute.trainer)
    workers = max(1, min(workers, len(pending)))
    gpus, level = visible_gpus(cfg), logging.getLogger("bench").getEffectiveLevel()
    warm = take_pool(cfg_data, gpus, level)  # started by the CLI before its own imports (bench.zoo.worker_pool)
    pool = warm or new_pool(workers, cfg_data, gpus, level)
    workers = min(pool.workers, len(pending))
    log.info("training %d models in %d worker processes (%d thread%s each)", len(pending), workers, threads,
             "" if threads == 1 else "s")
    bar = Progress(len(pending), "zoo models", unit="model", enabled=progress)  # a bar, or a line per finished model
    queue, in_flight = JobQueue(pending, cost), {}

    def submit(job: Any) -> Future:
        return pool.executor.submit(run_job_task, cfg_data, dataclasses.asdict(job), plan_data, threads,
                                    job.model_id in fail_ids, trainer_cfg, log_training)

    def after(done: list[Future]) -> None:
        bar.update(len(done))
        if any(isinstance(f.exception(), BrokenProcessPool) for f in done):  # the pool is gone: stop here
            _fail_rest(queue, in_flight, report)

    try:
        dispatch(queue, in_flight, workers, submit, lambda futures: wait(futures, return_when=FIRST_COMPLETED)[0],
                 _outcome, store, report, after)
    finally:
        bar.close()
        _stop(pool.executor, in_flight)
    sort_manifest(store, plan)


def _fail_rest(queue: JobQueue, in_flight: dict[Future, Any], report: Any) -> None:
    """After a worker died, every job not finished fails with the reason and the fix."""
    for job in [*in_flight.values(), *queue.ready(len(queue.waiting)), *queue.orphans(set(queue.unfinished))]:
        report.failed.setdefault(job.model_id, "WorkerDied: " + WORKER_DIED.format(error="the pool broke"))
        queue.finished(job)
    in_flight.clear()


def _outcome(future: Future) -> tuple[dict[str, Any] | None, BaseException | None]:
    error = future.exception()
    if isinstance(error, BrokenProcessPool):
        error = RuntimeError(WORKER_DIED.format(error=error))
    return (None, error) if error is not None else (future.result(), None)


def _stop(pool: ProcessPoolExecutor, in_flight: dict[Future, Any]) -> None:
    """Shut the pool down; when jobs are still running (an interruption), terminate their processes."""
    if in_flight:
        for process in list(getattr(pool, "_processes", {}).values()):  # the stdlib's own handle on its workers
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)

