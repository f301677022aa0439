"""Range and choice checks of a merged recipe, run by `bench.config.load_recipe` before any data is read.

Every check raises `ValueError` naming the key, the bad value, what is allowed and the fix; the loader
turns it into a `ConfigError` (the CLI exits 2, nothing written). Bounds where the papers and tools
are silent are fpbench's own decisions: docs/decisions.md, "Validation bounds". Zoo entries beyond
the source (negatives, positives, defender pools) are checked by the zoo planner once resolved.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench.budgets import check_budgets
from bench.deploy import parse_chain
from bench.io import name_problem
from bench.metrics import validate_bootstrap
from bench.training import check_seed, validate_trainer, validate_training
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
    if cfg.compute.workers < 1:
        raise ValueError(f"compute.workers={cfg.compute.workers} must be >= 1.")
    for key in ("cpus", "gpus"):
        if cfg.compute.resources[key] < 0:
            raise ValueError(f"compute.resources.{key}={cfg.compute.resources[key]} must be >= 0.")
    if cfg.data.name not in DATAMODULES:
        raise ValueError(DATAMODULES.unknown_message(cfg.data.name))
    check_eval(cfg.eval)
    validate_trainer(cfg.compute.trainer, local=cfg.compute.executor == "local")
    validate_data_config(cfg.data, DATAMODULES.get(cfg.data.name))
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


def check_model_spec(spec: Any, where: str) -> None:
    """One from-scratch training spec (a `ModelSpec` or its node): optimizer, schedule, epochs in
    [0, MAX_EPOCHS], batch_size >= 1, seed in [0, SEED_MAX]."""
    validate_training(spec.optimizer, spec.schedule, spec.epochs, where)
    if spec.batch_size < 1:
        raise ValueError(f"{where}.batch_size={spec.batch_size} must be >= 1.")
    check_seed(f"{where}.seed", spec.seed)


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
