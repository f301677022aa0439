"""Range and choice checks of a merged recipe, run by `bench.config.load_recipe` before any data is read.

Every check raises `ValueError` naming the key, the bad value, what is allowed and the fix; the loader
turns it into a `ConfigError` (the CLI exits 2, nothing written). Bounds where the papers and tools
are silent are fpbench's own decisions: docs/decisions.md, "Validation bounds". Zoo entries beyond
the source (negatives, positives, defender pools) are checked by the zoo planner once resolved.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.budgets import check_budgets
from bench.deploy import parse_chain
from bench.io import name_problem
from bench.metrics import validate_bootstrap
from bench.model_spec import check_model_spec
from bench.training_config import check_seed, several_devices, validate_trainer
from datamodules import DATAMODULES
from datamodules.base import validate_data_config

EXECUTORS = ("local", "ray")
WANDB_MODES = ("offline", "online", "disabled")
EVAL_DEVICE_TYPES = ("cpu", "cuda", "mps")  # what the evaluation loop moves models to


def check_recipe(cfg: DictConfig) -> None:
    """Every check of the merged recipe (`trials.count` is checked by the loader first)."""
    problem = name_problem(cfg.zoo.name)
    if problem:
        raise ValueError(f"zoo.name={cfg.zoo.name!r} is not a valid folder name: it {problem}. "
                         "Pick a plain name such as 'my_zoo'.")
    if cfg.compute.executor not in EXECUTORS:
        raise ValueError(f"compute.executor='{cfg.compute.executor}' is not one of {', '.join(EXECUTORS)}.")
    if cfg.tracking.wandb.mode not in WANDB_MODES:
        raise ValueError(f"tracking.wandb.mode='{cfg.tracking.wandb.mode}' is not one of {', '.join(WANDB_MODES)}.")
    if cfg.compute.cpu_threads is not None and cfg.compute.cpu_threads < 1:
        raise ValueError(f"compute.cpu_threads={cfg.compute.cpu_threads} must be >= 1 (or null for torch's default).")
    check_workers(cfg)
    for key in ("cpus", "gpus"):
        if cfg.compute.resources[key] < 0:
            raise ValueError(f"compute.resources.{key}={cfg.compute.resources[key]} must be >= 0.")
    if cfg.data.name not in DATAMODULES:
        raise ValueError(DATAMODULES.unknown_message(cfg.data.name))
    check_eval(cfg.eval)
    validate_trainer(cfg.compute.trainer, local=cfg.compute.executor == "local")
    validate_data_config(cfg.data, DATAMODULES.spec(cfg.data.name))  # the spec: no Lightning import
    check_seeds(cfg)
    check_model_spec(cfg.zoo.source, "zoo.source")  # every zoo entry again in the planner, once resolved
    check_deploy(cfg)


def check_deploy(cfg: DictConfig) -> None:
    """`zoo.deploy`: every wrapper known and its parameters valid; not combined with endpoints (docs/deployment.md)."""
    entries = OmegaConf.to_container(cfg.zoo.deploy, resolve=True)
    if not entries:
        return
    parse_chain(entries, "zoo.deploy")
    if cfg.zoo.endpoints:
        raise ValueError("zoo.deploy applies to zoo models only: endpoint suspects (zoo.endpoints) cannot be deployed "
                         "yet, and scoring them undeployed would measure the FPR under two deployments. Fix: drop "
                         "zoo.endpoints or zoo.deploy.")


def check_seeds(cfg: DictConfig) -> None:
    """Every recipe-level seed, the last trial's (`seed + trials.count - 1`) included, in [0, SEED_MAX]."""
    last = int(cfg.trials.count) - 1
    check_seed("seed", cfg.seed)
    if last:
        check_seed(f"seed + trials.count - 1 (the last trial's seed, trials.count={cfg.trials.count})", cfg.seed + last)
    if last and cfg.trials.new_source:
        check_seed("zoo.source.seed + trials.count - 1 (the last trial's source seed)", cfg.zoo.source.seed + last)
    check_seed("zoo.split_seed", cfg.zoo.split_seed)
    check_seed("zoo.pool_seed_offset", cfg.zoo.pool_seed_offset)
    check_seed("eval.bootstrap.seed", cfg.eval.bootstrap.seed)


def check_eval(ev: DictConfig) -> None:
    """`eval:`: FPR targets, the oracle's batch size, the bootstrap, query budgets, and a device this machine has."""
    if not ev.fpr_targets:
        raise ValueError("eval.fpr_targets is empty; give at least one FPR in (0, 1), e.g. eval.fpr_targets=[0.01,0.1].")
    for target in ev.fpr_targets:
        if not 0 < target < 1:
            raise ValueError(f"eval.fpr_targets contains {target}; every target must be in (0, 1).")
    if len({float(t) for t in ev.fpr_targets}) < len(ev.fpr_targets):
        raise ValueError(f"eval.fpr_targets={list(ev.fpr_targets)} lists a target twice; give each once.")
    if ev.query_batch_size < 1:
        raise ValueError(f"eval.query_batch_size={ev.query_batch_size} must be >= 1 (queries sent to a suspect at once).")
    validate_bootstrap(ev.bootstrap)
    check_budgets(list(ev.budgets))
    check_device(str(ev.device))


def check_device(name: str) -> None:
    """`eval.device`: auto, or a torch device string of a type this machine has (cuda:N below its GPU count)."""
    if name == "auto":
        return
    usage = "Use auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps."
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"eval.device={name!r} is not a device name. {usage}") from None
    if device.type not in EVAL_DEVICE_TYPES:
        raise ValueError(f"eval.device={name!r}: device type '{device.type}' is not one of "
                         f"{', '.join(EVAL_DEVICE_TYPES)}. {usage}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"eval.device={name!r}, but this machine has no CUDA device torch can use. "
                             "Fix: eval.device=auto or eval.device=cpu.")
        if device.index is not None and device.index >= count:
            raise ValueError(f"eval.device={name!r}, but this machine has {count} CUDA device(s): "
                             f"cuda:0..cuda:{count - 1}. Fix: pick one of those, or eval.device=cuda.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"eval.device={name!r}, but MPS is not available here. Fix: eval.device=auto or cpu.")


# -- values anywhere in a recipe -----------------------------------------------------------------------

def check_values(data: Any, path: str = "") -> None:
    """Refuse a non-finite number anywhere in `data` (a recipe as plain containers, or a part of it) and a
    null inside any `arch_params` mapping; the message names the key path (e.g. `zoo.source.optimizer.lr`).

    A null arch param is refused because timm drops null keyword arguments while the model id hashes
    them: two ids would name one model.
    """
    if isinstance(data, float) and not math.isfinite(data):
        raise ValueError(f"{path}={data} is not a finite number; inf and nan are refused everywhere in a recipe. "
                         "Fix: give a finite value.")
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
        if key == "arch_params" and isinstance(value, dict):
            nulls = sorted(str(k) for k, v in value.items() if v is None)
            if nulls:
                raise ValueError(f"{where}.{nulls[0]} is null: an arch param needs a value (timm drops null keyword "
                                 "arguments, while the model id would hash it). Fix: remove the key to use the "
                                 "architecture's default, or give a value.")
        check_values(value, where)


# -- sizes a method config implies ---------------------------------------------------------------------------

MAX_SIZE = 10_000_000  # no method needs ten million of anything; n_samples=10**12 asked for terabytes
COUNT_SUFFIXES = ("samples", "fingerprints", "seeds", "pairs", "candidates", "queries", "pool", "batch_size")
PER_ITEM_SUFFIX = "length"  # samples per fingerprint item (ADV-TRA's trajectory); `half_` counts twice
GIB = 2**30


def machine_memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def sample_shape(cfg: DictConfig) -> tuple[int, int, int]:
    """(C, H, W) of one image of the recipe's dataset, from its `DataSpec` (no data read, no Lightning)."""
    return DATAMODULES.spec(cfg.data.name).shape(cfg.data.image_size)


def _size_fields(entry: dict[str, Any]) -> dict[str, int]:
    """The whole-number fields of a method entry (list elements as `name[i]`), seeds left out (bounded apart)."""
    out: dict[str, int] = {}
    for key, value in entry.items():
        if key == "seed" or key.endswith("_seed"):
            continue
        for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            if isinstance(item, int) and not isinstance(item, bool):
                out[key if i is None else f"{key}[{i}]"] = item
    return out


def implied_samples(sizes: dict[str, int]) -> tuple[int, str]:
    """Images a method config holds at once, estimated from field names alone: the largest sample count
    (`n_*` or a name ending in one of `COUNT_SUFFIXES`) times every per-item length (`*length`).

    Returns:
        (images, how they were counted, e.g. "adv_tra.n_fingerprints=100 x 4 (half_length=2, twice)").
    """
    counts = {k: v for k, v in sizes.items() if k.startswith("n_") or k.endswith(COUNT_SUFFIXES)}
    if not counts:
        return 0, ""
    key = max(counts, key=counts.__getitem__)
    images, how = counts[key], f"{key}={counts[key]}"
    for name, value in sizes.items():
        if name.endswith(PER_ITEM_SUFFIX):
            factor = value * (2 if name.startswith("half_") else 1)
            images *= factor
            how += f" x {factor} ({name}={value}{', twice' if name.startswith('half_') else ''})"
    return images, how


def check_method_sizes(entry: dict[str, Any], cfg: DictConfig) -> None:
    """Every size of a resolved method entry in [0, MAX_SIZE], and the samples it implies within the memory
    cap (`compute.max_sample_memory_gb`, or this machine's RAM): bytes = images x C x H x W x 4."""
    name = entry["name"]
    sizes = _size_fields(entry)
    for key, value in sizes.items():
        if value < 0:
            raise ValueError(f"method '{name}': {name}.{key}={value} must be >= 0 (it is a size or count).")
        if value > MAX_SIZE:
            raise ValueError(f"method '{name}': {name}.{key}={value} is above fpbench's bound on any method size, "
                             f"{MAX_SIZE:,} (docs/recipes.md, \"Size bounds\"). Fix: lower it.")
    images, how = implied_samples(sizes)
    channels, height, width = sample_shape(cfg)
    needed = images * channels * height * width * 4
    configured = cfg.compute.max_sample_memory_gb
    cap = int(configured * GIB) if configured is not None else machine_memory_bytes()
    if cap is not None and needed > cap:
        where = ("compute.max_sample_memory_gb" if configured is not None
                 else "this machine's RAM (set compute.max_sample_memory_gb to change the cap)")
        raise ValueError(f"method '{name}': {name}.{how} asks for {images:,} images of {channels}x{height}x{width} "
                         f"float32 at once = {needed / GIB:,.1f} GiB, above the cap of {cap / GIB:,.1f} GiB from "
                         f"{where}. Fix: lower {name}.{how.split('=')[0]}.")


def check_workers(cfg: Any) -> None:
    """Cheap checks of `compute.workers`; raise ValueError naming the key and the fix."""
    workers = cfg.compute.workers
    if workers is None:
        return
    if workers < 1:
        raise ValueError(f"compute.workers={workers} must be >= 1 (or null: one job per compute.cpu_threads cores).")
    if workers > 1 and cfg.compute.executor == "local" and several_devices(cfg.compute.trainer):
        raise ValueError(f"compute.workers={workers} with compute.trainer.strategy={cfg.compute.trainer.strategy} "
                         f"devices={cfg.compute.trainer.devices}: each job's fit already spans several devices or "
                         "processes, and the local executor cannot run several such fits at once. Fix: "
                         "compute.workers=1, or compute.executor=ray (docs/scaling.md).")
