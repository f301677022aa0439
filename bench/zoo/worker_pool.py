"""The local executor's worker processes, started before the driver's own slow start so that both overlap.

A spawned worker spends seconds importing torch, Lightning and fpbench and loading the recipe's data
before it trains anything (4.6 s on the 2-core development machine); the driver spends as long
importing the evaluation loop and planning the zoo, on one core. `start_workers` (called by the CLI
right after a recipe is loaded, before those imports) spawns the workers at once and has each one
import the zoo's code and set up the datamodule while the driver goes on; `run_processes` then takes
the warm pool (`take_pool`) instead of spawning its own. This module imports no Lightning: the
driver calls it first.

The workers are warmed only when they will be needed: the local executor with more than one worker,
and a zoo not started yet (no manifest: a first build has every model to train). A warm pool no build
takes (the zoo was complete, a dry command) is terminated by `release_pool`, also at exit.
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.log_setup import setup_logging
from bench.zoo.workers import resolve_workers, trains_on_gpu

log = logging.getLogger(__name__)

PATH_KEYS = ("data_dir", "zoo_dir", "results_dir", "cache_dir")


def portable_config(cfg: DictConfig) -> dict[str, Any]:
    """The recipe as plain data for a task, with relative paths made absolute (driver's cwd)."""
    data: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]  # a DictConfig: a dict
    for key in PATH_KEYS:
        data["paths"][key] = os.path.abspath(data["paths"][key])
    data["tracking"]["wandb"]["dir"] = os.path.abspath(data["tracking"]["wandb"]["dir"])
    return data


def data_key(cfg_data: dict[str, Any]) -> str:
    """What a worker's datamodule depends on: the data config, its folder and the split seed."""
    return json.dumps([cfg_data["data"], cfg_data["paths"]["data_dir"], cfg_data["zoo"]["split_seed"]], sort_keys=True)


def visible_gpus(cfg: DictConfig) -> int:
    """GPUs the workers are spread over (0 when jobs train on the CPU)."""
    if not trains_on_gpu(cfg.compute.trainer):
        return 0
    import torch

    return torch.cuda.device_count()


def start_worker(slots: Any, gpus: int, log_level: int, warm_data: dict[str, Any] | None = None) -> None:
    """Worker initializer: leave Ctrl-C to the driver, take a worker slot, see one GPU of `gpus`, and with
    `warm_data` (`portable_config`) import the zoo's code and set up the datamodule before the first job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(quiet=log_level > logging.INFO, worker=True)  # as the CLI: fpbench's lines, not the libraries' banners
    slot = slots.get()
    if gpus > 1:  # before CUDA is initialised in this process
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(gpus)]
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
    if warm_data is not None:
        try:
            from bench.zoo.tasks import task_datamodule_of  # optional: heavy, imported here while the driver starts

            task_datamodule_of(warm_data)
        except Exception:  # an initializer that raises breaks the whole pool: the first job meets the error instead
            log.debug("warming a zoo worker failed; its first job sets it up", exc_info=True)


def _ready() -> None:
    """A no-op task: submitting one per worker makes the executor spawn every worker now."""


@dataclass
class WorkerPool:
    """Spawned worker processes and their slot queue (worker i sees GPU i mod the visible count)."""

    executor: ProcessPoolExecutor
    slots: Any
    workers: int
    key: tuple[int, int, str]  # (gpus, log level, data_key) the workers were started with


def new_pool(workers: int, cfg_data: dict[str, Any], gpus: int, log_level: int, warm: bool = False) -> WorkerPool:
    """`workers` spawned processes (never forked: a forked copy of a process that has run torch's thread
    pools can hang); with `warm`, every one is spawned now and loads the code and data before its first job."""
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in range(workers):
        slots.put(slot)
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker,
                                   initargs=(slots, gpus, log_level, cfg_data if warm else None))
    if warm:
        for _ in range(workers):  # the executor spawns a process per submitted task while none is idle
            executor.submit(_ready)
    return WorkerPool(executor, slots, workers, (gpus, log_level, data_key(cfg_data)))


_WARM: list[WorkerPool] = []  # the pool `start_workers` started and no build has taken yet (at most one)


def start_workers(cfg: DictConfig) -> bool:
    """Spawn and warm the recipe's zoo workers now, when a build will need them (see the module docstring).

    Returns:
        True if a warm pool was started.
    """
    if _WARM or cfg.compute.executor != "local":
        return False
    workers = resolve_workers(cfg)
    manifest = Path(cfg.paths.zoo_dir) / str(cfg.zoo.name) / "manifest.jsonl"
    if workers <= 1 or manifest.exists():
        return False
    level = logging.getLogger("bench").getEffectiveLevel()
    _WARM.append(new_pool(workers, portable_config(cfg), visible_gpus(cfg), level, warm=True))
    log.debug("started %d warm zoo workers", workers)
    return True


def take_pool(cfg_data: dict[str, Any], gpus: int, log_level: int) -> WorkerPool | None:
    """The warm pool, if one was started for this data, GPUs and log level: the caller shuts it down.
    A pool started for something else is terminated."""
    if not _WARM:
        return None
    pool = _WARM.pop()
    if pool.key == (gpus, log_level, data_key(cfg_data)):
        return pool
    terminate(pool)
    return None


def release_pool() -> None:
    """Terminate a warm pool no build took (its workers may still be importing: nothing is lost)."""
    while _WARM:
        terminate(_WARM.pop())


def terminate(pool: WorkerPool) -> None:
    """Stop `pool`'s processes now and shut its executor down."""
    for process in list(getattr(pool.executor, "_processes", {}).values()):  # the stdlib's own handle on its workers
        process.terminate()
    pool.executor.shutdown(wait=True, cancel_futures=True)


atexit.register(release_pool)  # a fallback: the CLI releases the pool itself (interpreter exit first joins the workers)
