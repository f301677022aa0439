"""How many zoo jobs run at once: `compute.workers`, or, when it is null, what fills this machine's cores.

A zoo of small models trains fastest one thread per model and one model per core (docs/zoo_throughput.md):
with `compute.cpu_threads: 1` on a 2-core machine, two jobs at once build about twice the models per
hour of one. `compute.workers: null` (the default) picks that count; a number overrides it. On a GPU
the automatic count is 1 (one model per device); `compute.workers=N` packs N jobs on each device
(`bench.zoo.processes` spreads worker processes over the visible GPUs; Ray does it with fractional
`compute.resources.gpus`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from bench.training_config import several_devices


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and `taskset` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def trains_on_gpu(trainer: Any) -> bool:
    """True when `compute.trainer` puts the fits on a GPU here (cuda/gpu, or auto with CUDA present)."""
    accelerator = str(trainer.accelerator)
    return accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available())


def resolve_workers(cfg: Any) -> int:
    """Zoo jobs at once: `compute.workers`, or when null, one per `compute.cpu_threads` cores.

    The automatic count is 1 when `compute.cpu_threads` is null (torch's default already uses every
    core), when jobs train on a GPU (one model per device unless asked for more), and when one job's
    fit spans several devices (DDP).
    """
    compute = cfg.compute
    if compute.workers is not None:
        return int(compute.workers)
    if compute.cpu_threads is None or several_devices(compute.trainer) or trains_on_gpu(compute.trainer):
        return 1
    return max(1, usable_cores() // int(compute.cpu_threads))
