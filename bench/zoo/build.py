"""Building a zoo: run the planned jobs, skipping verified models, writing each record atomically.

The `local` executor lives here (jobs in process, in plan order) and in `bench.zoo.processes` (jobs in
worker processes, when `compute.workers` resolves to more than one); `ray` is `bench.zoo.executors`;
the other ranks of a multi-process launch follow rank 0 through `bench.zoo.ddp`. The work of one
job is `bench.zoo.jobs`, which all three call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError
from bench.pools import PoolSpec
from bench.progress import Progress
from bench.wandb_runs import log_zoo_model
from bench.zoo.ddp import follow_rank_zero, is_rank_zero
from bench.zoo.executors import run_ray
from bench.zoo.external import preflight
from bench.zoo.jobs import (
    fill_source_agreement,
    finish_record,
    run_job,
    setup_datamodule,
    source_test_labels,
    zoo_root,
)
from bench.zoo.plan import ZooPlan, plan_zoo
from bench.zoo.processes import run_processes
from bench.zoo.store import ZooStore
from bench.zoo.tasks import nominal_images
from bench.zoo.workers import resolve_workers

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    plan: ZooPlan
    store: ZooStore
    datamodule: Any = None
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def prepare(cfg: DictConfig, pool_specs: list[PoolSpec] | None = None) -> tuple[Any, ZooPlan, ZooStore]:
    """Set up the data and plan the zoo (cheap; all recipe errors surface here, before training)."""
    dm = setup_datamodule(cfg)
    plan = plan_zoo(cfg, dm.split_hashes(), pool_specs)
    preflight(plan.jobs, dm)  # external weights: format, keys, shapes, classes, input shape (ConfigError)
    return dm, plan, ZooStore(zoo_root(cfg))


@contextmanager
def recipe_threads(cfg: DictConfig) -> Iterator[int]:
    """Run the block at torch's intra-op thread count `compute.cpu_threads` (tiny CPU models train
    ~10x faster on one thread than on two), then give the caller back its own count, errors included.

    Yields:
        The thread count in force inside the block.
    """
    before = torch.get_num_threads()
    if cfg.compute.cpu_threads is not None:
        torch.set_num_threads(int(cfg.compute.cpu_threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def build_zoo(cfg: DictConfig, pool_specs: list[PoolSpec] | None = None, progress: bool = True,
              logger_factory: Any = None, require_suspects: bool = False) -> BuildReport:
    """Build (or finish building) the recipe's zoo; models already built and verified are skipped.

    Trains at torch's intra-op thread count `compute.cpu_threads` when the recipe gives one; the
    caller's own count is back in force on return (`recipe_threads`).

    Args:
        cfg: a loaded recipe (`bench.config.load_recipe`).
        pool_specs: defender pools requested by the methods about to run.
        progress: show Lightning's progress bar (or epoch lines) for each fit, and count finished models
            with an ETA (`bench.progress`).
        logger_factory: job -> Lightning logger (W&B), or None for no logger.
        require_suspects: fail before training unless there are positives and negatives to score.
    """
    with recipe_threads(cfg):
        return _build_zoo(cfg, pool_specs, progress, logger_factory, require_suspects)


def _build_zoo(cfg: DictConfig, pool_specs: list[PoolSpec] | None, progress: bool, logger_factory: Any,
               require_suspects: bool) -> BuildReport:
    start, started_at = time.perf_counter(), time.time()
    dm, plan, store = prepare(cfg, pool_specs)
    if require_suspects and not (plan.by_role("positive") and plan.by_role("negative")):
        raise ConfigError(f"Zoo '{plan.name}' plans {len(plan.by_role('positive'))} positives and "
                          f"{len(plan.by_role('negative'))} negatives; evaluation needs at least one of each. "
                          "Add entries under zoo.positives and zoo.negatives.")
    report = BuildReport(plan=plan, store=store, datamodule=dm)
    trainer_cfg = OmegaConf.to_object(cfg.compute.trainer)
    root_dir = str(Path(cfg.paths.cache_dir) / "lightning")
    if not is_rank_zero():  # a DDP rank > 0 (ddp re-launch, torchrun, SLURM): train alongside rank 0, write nothing
        follow_rank_zero(plan, dm, store, trainer_cfg, root_dir, logger_factory)
        raise SystemExit(0)  # rank 0 alone writes the zoo and goes on (evaluation) by itself
    with store.lock():
        store.clean_stale_temps(started_at)
        pending = store.unbuilt(plan.jobs)
        report.skipped = [job.model_id for job in plan.jobs if job not in pending]
        workers = resolve_workers(cfg)
        cost = partial(nominal_images, split_size=dm.split_size)  # the executors start the longest ready job first
        if pending and cfg.compute.executor == "ray":
            run_ray(cfg, plan, pending, store, report, cost)
            fill_source_agreement(dm, store, plan, report.built)  # tasks may finish before the source
        elif len(pending) > 1 and workers > 1:  # every core: jobs in worker processes (bench.zoo.processes)
            run_processes(cfg, plan, pending, store, report, workers, logger_factory is not None, progress,
                          cost=cost)
            fill_source_agreement(dm, store, plan, report.built)
        else:
            _run_in_process(pending, dm, store, plan, report, trainer_cfg, root_dir, progress, logger_factory)
    report.seconds = time.perf_counter() - start
    return report


def _run_in_process(pending: list, dm: Any, store: ZooStore, plan: ZooPlan, report: BuildReport, trainer_cfg: Any,
                    root_dir: str, progress: bool, logger_factory: Any) -> None:
    """Train `pending` here, in plan order: a line as each model starts, and the overall count as models finish.

    The count (`zoo models: 3/23 done, 12 s elapsed, ETA 80 s`) is a log line on a terminal too
    (`bar=False`): there Lightning's own bar is drawing each fit.
    """
    reference: torch.Tensor | None = None  # the source's test labels, read once
    with Progress(len(pending), "zoo models", unit="model", enabled=progress, bar=False) as finished:
        for n, job in enumerate(pending, 1):
            log.info("[%d/%d] %s %s", n, len(pending), job.role, job.provenance)
            logger = logger_factory(job) if logger_factory else False
            model, info, seconds = run_job(job, dm, store, trainer_cfg, root_dir, progress, logger)
            if reference is None and job.role != "source":
                reference = source_test_labels(dm, store, plan.source.model_id)
            record = finish_record(job, model, info, seconds, dm, store, plan, reference)
            store.add_record(record)
            report.built.append(job.model_id)
            if logger:
                log_zoo_model(logger.experiment, record, store.checkpoint_path(job.model_id))  # W&B artifact + lineage
                logger.experiment.finish()
            finished.update()
