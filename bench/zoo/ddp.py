"""Multi-process launches (Lightning's `ddp` re-launch, torchrun, SLURM srun): the other ranks.

Such a launcher re-runs the whole command in every process. Rank 0 builds the zoo as usual; a rank
> 0 runs the same fits beside it (each fit waits for every rank) and writes nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.zoo.jobs import run_job
from bench.zoo.plan_base import ZooPlan
from bench.zoo.store import ZooError, ZooStore

RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # what launchers set
PARENT_WAIT_S = 1800.0  # how long a DDP rank > 0 waits for rank 0 to record a parent model


def is_rank_zero() -> bool:
    """False in the other processes of a multi-process launch, which re-run the whole command."""
    return all(os.environ.get(key, "0") == "0" for key in RANK_ENV)


def follow_rank_zero(plan: ZooPlan, dm: Any, store: ZooStore, trainer_cfg: Any, root_dir: str,
                     logger_factory: Any = None, wait_s: float = PARENT_WAIT_S) -> list[str]:
    """A DDP rank > 0: run the same fits as rank 0, in the same order, and write nothing.

    Rank 0 alone holds the zoo lock and writes checkpoints and records. This rank takes the same
    pending jobs from the manifest (rank 0 writes nothing before the first fit, which waits for
    every rank) and waits for each parent's record before loading it. Returns the model ids followed.
    """
    pending = store.unbuilt(plan.jobs)
    for job in pending:
        if job.parent is not None:
            wait_for_record(store, job.parent, wait_s)
        logger = logger_factory(job) if logger_factory else False  # W&B loggers log on rank 0 only
        run_job(job, dm, store, trainer_cfg, root_dir, False, logger)
    return [job.model_id for job in pending]


def wait_for_record(store: ZooStore, model_id: str, wait_s: float, poll_s: float = 0.5) -> dict[str, Any]:
    """The record of `model_id` once rank 0 has written it (and its checkpoint verifies)."""
    deadline = time.monotonic() + wait_s
    while True:
        record = store.records().get(model_id)
        if record is not None and store.verify(record):
            return record
        if time.monotonic() > deadline:
            raise ZooError(f"Rank 0 did not record model {model_id} within {wait_s:.0f} s; see rank 0's error.")
        time.sleep(poll_s)
