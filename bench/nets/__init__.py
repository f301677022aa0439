"""Architectures: every model is `Classifier(Normalize(mean, std), features, Linear head)`.

Importing this package imports every module it holds, sorted by name (`import_submodules`), so `ARCHS` is
complete and a new architecture is one new file: a factory `(in_channels, num_classes, image_size, **params)
-> (features, feature_dim)` registered with `@ARCHS.register("<name>")` (the one place its name is written;
factories are functions, so the registry has no `name_attr`) and, when the default test shapes do not suit
it, `@tested_with(ArchTestConfig(...))`. The modules named in `HELPERS` register nothing. Build models with
`build_model`; any timm model is available as `timm:<model_name>` (randomly initialised).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.nets.base import ARCHS, ArchTestConfig, Classifier, FeatureFactory, Normalize, arch_test_config, tested_with
from bench.nets.factory_net import FACTORY_PREFIX, check_factory_arch, factory_parts, is_factory_arch
from bench.nets.timm_net import TIMM_PREFIX, check_timm_arch, is_timm_arch, timm_features
from bench.registry import import_submodules

HELPERS = ("base", "factory_net", "frozen", "timm_net")  # modules that register nothing
import_submodules(__name__, __path__, HELPERS)

__all__ = [
    "ARCHS",
    "ArchTestConfig",
    "Classifier",
    "Normalize",
    "arch_descriptions",
    "arch_names",
    "arch_test_config",
    "build_model",
    "check_arch",
    "count_parameters",
    "new_model",
    "tested_with",
]

# The factory arguments build_model fills in itself; everything after them is a tunable param.
POSITIONAL_ARGS = ("in_channels", "num_classes", "image_size")
TIMM_NOTE = f"{TIMM_PREFIX}<name>"
FACTORY_NOTE = f"{FACTORY_PREFIX}<package.module:function>"


def arch_names() -> list[str]:
    """Registered architecture names, plus `timm:<name>` (any timm model) and `factory:<...>` (your function)."""
    return [*ARCHS.names(), TIMM_NOTE, FACTORY_NOTE]


def arch_descriptions() -> dict[str, str]:
    """Name -> one-line description for `fpbench list archs`, including the `timm:<name>` entry."""
    descriptions = ARCHS.describe()
    descriptions[TIMM_NOTE] = (
        "any timm model, e.g. timm:resnet18 (random init; params go to timm.create_model)"
    )
    descriptions[FACTORY_NOTE] = "your own function building the model, e.g. factory:mypkg.nets:make_net (docs/byo.md)"
    return descriptions


def accepted_params(factory: FeatureFactory) -> list[str] | None:
    """Keyword params a factory accepts beyond the positional ones; None when it takes **kwargs."""
    names = []
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.name not in POSITIONAL_ARGS and parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.append(parameter.name)
    return names


def check_arch(arch: str, params: dict[str, Any] | None = None, construct: bool = True) -> None:
    """Validate an arch name and its params without building weights (cheap, for recipe checks).

    Args:
        arch: a registered name, `timm:<name>` or `factory:<...>`.
        params: the arch params.
        construct: for timm archs, let timm's constructor check the params on the meta device (see
            `check_timm_params`); `build_model` passes False since its build checks them anyway.

    Raises:
        RegistryError: unknown arch (or unknown timm model), with a "did you mean" hint.
        ValueError: a param the arch does not accept, naming the accepted keys.
    """
    params = dict(params or {})
    if is_timm_arch(arch):
        check_timm_arch(arch, params, construct=construct)
        return
    if is_factory_arch(arch):
        check_factory_arch(arch, params)
        return
    factory = ARCHS.get(arch)
    accepted = accepted_params(factory)
    if accepted is None:
        return
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown param(s) {unknown} for arch '{arch}'. "
            f"Accepted: {', '.join(accepted) if accepted else '(none)'}."
        )


def build_model(
    arch: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    params: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Classifier:
    """Build `Classifier(Normalize(mean, std), features, Linear(feature_dim, num_classes))`.

    Args:
        arch: a registered name (see `arch_names()`) or `timm:<model_name>`.
        in_channels: image channels; must match len(mean) and len(std).
        num_classes: number of outputs of the head.
        image_size: height (= width) of the input images.
        mean: per-channel mean of the [0,1] pixels, applied inside the model.
        std: per-channel standard deviation, applied inside the model.
        params: architecture keyword params (e.g. {"width": 32}); for timm, kwargs of create_model.
        seed: when given, initialisation is deterministic; the global RNG state is left untouched.

    Returns:
        The classifier, in train mode, on the CPU.

    Raises:
        RegistryError: unknown arch, with a "did you mean" hint.
        ValueError: an unknown param, a bad param value, or mean/std not matching in_channels.
    """
    params = dict(params or {})
    check_arch(arch, params, construct=False)
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(
            f"mean {list(mean)} and std {list(std)} need one value per channel (in_channels={in_channels})."
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {list(std)}.")
    if seed is None:
        return _build(arch, in_channels, num_classes, image_size, mean, std, params)
    # fork_rng restores the CPU RNG afterwards; devices=[] because models are built on the CPU.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(arch, in_channels, num_classes, image_size, mean, std, params)


def new_model(arch: str, arch_params: dict[str, Any], data: Any, seed: int | None) -> Classifier:
    """A freshly initialised `arch` sized for a datamodule's images and classes.

    Args:
        arch: a registered name or `timm:<model_name>`.
        arch_params: the architecture's keyword params.
        data: anything with `in_channels`, `num_classes`, `image_size`, `mean` and `std` (a datamodule).
        seed: deterministic initialisation (see `build_model`).
    """
    return build_model(arch, in_channels=data.in_channels, num_classes=data.num_classes,
                       image_size=data.image_size, mean=data.mean, std=data.std, params=dict(arch_params),
                       seed=seed)


def _build(
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    params: dict[str, Any],
) -> Classifier:
    if is_timm_arch(arch):
        features, feature_dim = timm_features(arch, in_channels, params)
    elif is_factory_arch(arch):
        features, dim = factory_parts(arch, in_channels, num_classes, image_size, params)
        if dim is None:  # a whole model: its own last layer is the classifier, there is no separate head
            return Classifier(Normalize(mean, std), features, nn.Identity())
        feature_dim = dim
    else:
        features, feature_dim = ARCHS.get(arch)(in_channels, num_classes, image_size, **params)
    return Classifier(Normalize(mean, std), features, nn.Linear(feature_dim, num_classes))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as BatchNorm statistics and Normalize are not counted).

    Args:
        model: any module.
        trainable_only: count only parameters with requires_grad.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
