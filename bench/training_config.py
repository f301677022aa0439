"""How a zoo model is trained, as recipe config: the dataclasses and their cheap checks, without Lightning.

`bench.config` builds its schema from these and `bench.recipe_checks` validates with them before any
work, so a recipe error or `fpbench show` answers without importing Lightning (seconds of imports).
`bench.training` re-exports every name here beside the Lightning code that uses them. Lightning's
accelerator and strategy registries are read only for a value other than `auto`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "multistep")
TRAINABLE = ("all", "head")
MAX_EPOCHS = 10_000  # no zoo model needs more; a typo (epochs=100000000) fails at load, not after days
SEED_MAX = 2**32 - 1  # Lightning's seed_everything (numpy's legacy seed) takes [0, 2**32 - 1]: the tightest bound
ACCELERATOR_ALIASES = ("auto", "gpu")  # Lightning's own aliases beside its registered accelerators
AUTO = "auto"  # the accelerator and strategy that are valid on every machine: no registry is read for it
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
# Lightning 2.x's precision strings (lightning_fabric's _PRECISION_INPUT; a test keeps them in step)
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16")


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.05
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 5e-4


@dataclass
class ScheduleConfig:
    name: str = "cosine"  # none | cosine (to 0 over the epochs) | multistep (x gamma at milestones)
    milestones: list[int] = field(default_factory=list)  # epochs, multistep only
    gamma: float = 0.1


@dataclass
class PGDConfig:
    """L-inf PGD (Madry et al.) on [0,1] inputs, used by adversarial training."""

    eps: float = 0.01  # L-inf radius in [0,1] pixel units
    steps: int = 5
    step_size: float | None = None  # None: 2.5 * eps / steps (Madry's rule)
    random_start: bool = True
    adv_ratio: float = 0.5  # fraction of each batch replaced by its adversarial version


@dataclass
class TrainerConfig:
    """Passed to `pytorch_lightning.Trainer` (see `bench.training.make_trainer`)."""

    accelerator: str = "auto"
    devices: Any = "auto"  # "auto", an int, or a list of device indices
    strategy: str = "auto"  # e.g. ddp, ddp_spawn, fsdp
    num_nodes: int = 1
    precision: str = "32-true"  # e.g. 16-mixed, bf16-mixed
    deterministic: bool = False  # True forces deterministic kernels (slower on GPU)
    enable_progress_bar: bool = True
    log_every_n_steps: int = 10
    # fpbench's, not a Trainer argument: the layout of 4-D weights during a fit (channels_last runs the small
    # convnets 1.4x faster on CPU, docs/zoo_throughput.md); models are saved and used contiguous either way
    memory_format: str = "channels_last"  # channels_last | contiguous


def validate_training(optimizer: OptimizerConfig, schedule: ScheduleConfig, epochs: int, where: str) -> None:
    """Cheap checks of a training spec; raise ValueError naming the field and the allowed values."""
    if optimizer.name not in OPTIMIZERS:
        raise ValueError(f"{where}.optimizer.name='{optimizer.name}' is not one of {', '.join(OPTIMIZERS)}.")
    if schedule.name not in SCHEDULES:
        raise ValueError(f"{where}.schedule.name='{schedule.name}' is not one of {', '.join(SCHEDULES)}.")
    if not optimizer.lr > 0:
        raise ValueError(f"{where}.optimizer.lr={optimizer.lr} must be > 0.")
    if optimizer.weight_decay < 0:
        raise ValueError(f"{where}.optimizer.weight_decay={optimizer.weight_decay} must be >= 0.")
    if epochs < 0:
        raise ValueError(f"{where}.epochs={epochs} must be >= 0.")
    if epochs > MAX_EPOCHS:
        raise ValueError(f"{where}.epochs={epochs} must be <= {MAX_EPOCHS} (fpbench's bound, docs/decisions.md).")


def check_seed(where: str, seed: int) -> None:
    """Raise ValueError unless `seed` is a whole number in [0, SEED_MAX] (every seed fpbench passes on
    must be accepted by torch, numpy's default_rng and Lightning's seed_everything alike)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{where}={seed!r} must be an integer in [0, {SEED_MAX}] (2**32 - 1, what Lightning's "
                         "seed_everything accepts). Pick a smaller seed.")


def _accelerator_registry() -> Any:
    # imported here: Lightning takes seconds to import, and the default accelerator ("auto") needs no lookup
    from pytorch_lightning.accelerators import AcceleratorRegistry

    return AcceleratorRegistry


def strategy_names() -> tuple[str, ...]:
    """What `compute.trainer.strategy` may be: `auto` and Lightning's registered strategies."""
    # imported here: Lightning takes seconds to import, and the default strategy ("auto") needs no lookup
    from pytorch_lightning.strategies import StrategyRegistry

    return (AUTO, *StrategyRegistry.available_strategies())


def accelerator_names() -> tuple[str, ...]:
    """What `compute.trainer.accelerator` may be: Lightning's aliases and its registered accelerators."""
    return (*ACCELERATOR_ALIASES, *sorted(_accelerator_registry().available_accelerators()))


def _accelerator_missing(name: str) -> bool:
    """True when this machine lacks the hardware `name` asks for (auto never does)."""
    if name == AUTO:
        return False
    registry = _accelerator_registry()
    if name == "gpu":
        return not any(registry[n]["accelerator"].is_available() for n in ("cuda", "mps"))
    return not registry[name]["accelerator"].is_available()


def several_devices(trainer: Any) -> bool:
    """True when one job's fit already spans several devices or processes (a DDP-style strategy)."""
    devices = trainer.devices
    many = (isinstance(devices, int) and devices > 1) or (isinstance(devices, (list, tuple)) and len(devices) > 1) \
        or devices in (-1, "-1")
    return many or str(trainer.strategy) != "auto" or trainer.num_nodes > 1


def validate_trainer(cfg: Any, local: bool) -> None:
    """Cheap checks of `compute.trainer` before any fit; raise ValueError naming the key and the allowed values.

    `auto` (the default accelerator and strategy) is valid everywhere, so Lightning's registries (and
    Lightning itself) are consulted only for another value.

    Args:
        cfg: a `TrainerConfig` (or its omegaconf node).
        local: the zoo trains in this process (executor local), so the accelerator must exist here;
            Ray workers may have hardware the driver lacks, so their availability is not checked.
    """
    where = "compute.trainer"
    if cfg.accelerator != AUTO and cfg.accelerator not in accelerator_names():
        raise ValueError(f"{where}.accelerator={cfg.accelerator!r} is not one of {', '.join(accelerator_names())}.")
    if local and _accelerator_missing(cfg.accelerator):
        raise ValueError(f"{where}.accelerator={cfg.accelerator!r}: no such device on this machine. "
                         "Fix: compute.trainer.accelerator=auto (or cpu).")
    if str(cfg.strategy).lower() != AUTO and str(cfg.strategy).lower() not in strategy_names():
        raise ValueError(f"{where}.strategy={cfg.strategy!r} is not one of {', '.join(strategy_names())}.")
    if str(cfg.precision) not in PRECISIONS:
        raise ValueError(f"{where}.precision={cfg.precision!r} is not one of {', '.join(PRECISIONS)}.")
    if cfg.num_nodes < 1:
        raise ValueError(f"{where}.num_nodes={cfg.num_nodes} must be >= 1.")
    if cfg.log_every_n_steps < 1:
        raise ValueError(f"{where}.log_every_n_steps={cfg.log_every_n_steps} must be >= 1.")
    if cfg.memory_format not in MEMORY_FORMATS:
        raise ValueError(f"{where}.memory_format={cfg.memory_format!r} is not one of {', '.join(MEMORY_FORMATS)}.")
