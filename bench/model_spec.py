"""`ModelSpec`, how one zoo model is trained from scratch (or imported), and its checks.

A leaf of the configuration: it imports the training dataclasses only, so the zoo planner reads model
specs without importing the recipe loader, the methods or the deployments (docs/architecture.md,
"Import direction"). `bench.config` builds the recipe schema from it and re-exports `ModelSpec`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from bench.training_config import OptimizerConfig, ScheduleConfig, check_seed, validate_training


@dataclass
class ModelSpec:
    """How one model is trained from scratch (the source; negatives and pools override fields)."""

    arch: str = "convnet"
    arch_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    split: str = "owner"
    seed: int = 0
    # External models (docs/byo.md): a weights file imports the model instead of training it.
    weights: str | None = None  # safetensors or torch state dict, relative to the recipe; set: no training
    mean: list[float] | None = None  # the model's input normalisation; None: the datamodule's
    std: list[float] | None = None  # per-channel std of that normalisation; None: the datamodule's
    pretrained: bool = False  # start training from timm's published weights (downloads once; timm: archs)
    pretrained_weights: str | None = None  # the offline path: a local file of those weights (any arch)
    factory: str | None = None  # "package.module:function" builds the model: shorthand for arch "factory:<it>"
    # An imported model's test accuracy as its owner recorded it: checked at planning (docs/byo.md, "Normalisation")
    test_acc: float | None = None


# ModelSpec's external-model fields (docs/byo.md) at their defaults: left out of hashed configs, so the
# config hashes (result file names) of recipes that do not use them stay what they were.
EXTERNAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelSpec)
                     if f.name in ("weights", "mean", "std", "pretrained", "pretrained_weights", "factory", "test_acc")}


def without_unset_external(spec: dict[str, Any]) -> dict[str, Any]:
    """A model spec dict without the external-model fields that are at their defaults."""
    return {k: v for k, v in spec.items() if not (k in EXTERNAL_DEFAULTS and v == EXTERNAL_DEFAULTS[k])}


def check_model_spec(spec: Any, where: str) -> None:
    """One from-scratch training spec (a `ModelSpec` or its node): optimizer, schedule, epochs in
    [0, MAX_EPOCHS], batch_size >= 1, seed in [0, SEED_MAX].

    Raises:
        ValueError: naming `<where>.<key>`, the bad value and what is allowed.
    """
    validate_training(spec.optimizer, spec.schedule, spec.epochs, where)
    if spec.batch_size < 1:
        raise ValueError(f"{where}.batch_size={spec.batch_size} must be >= 1.")
    check_seed(f"{where}.seed", spec.seed)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved recipe as plain Python containers (a fresh copy; unset external-model fields left out)."""
    data = cast(dict[str, Any], copy.deepcopy(OmegaConf.to_container(cfg, resolve=True)))  # a DictConfig: a dict
    if isinstance(data.get("zoo", {}).get("source"), dict):
        data["zoo"]["source"] = without_unset_external(data["zoo"]["source"])
    return data
