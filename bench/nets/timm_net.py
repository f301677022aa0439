"""Any timm model as a feature extractor: the arch string `timm:<model_name>`.

Not registered in `ARCHS` (timm has its own registry of ~1,000 names); `build_model` routes names
with the `timm:` prefix here. Models are created with `pretrained=False`; only a zoo entry with
`pretrained: true` downloads timm's published weights (`pretrained_features_state`, docs/byo.md).
Hub names work too: `timm:hf-hub:<org/name>` (online) and `timm:local-dir:<folder>` (offline).
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.registry import RegistryError

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"

# build_model sets these itself; letting params override them would break the Classifier contract.
RESERVED_PARAMS = ("pretrained", "num_classes", "in_chans", "global_pool")
# timm's model sources: `hf-hub:<org/name>` (Hugging Face Hub, online) and `local-dir:<folder>` (offline).
HUB_SOURCES = ("hf-hub", "hf_hub", "local-dir")


def is_timm_arch(arch: str) -> bool:
    """True for arch strings of the form `timm:<model_name>`."""
    return arch.startswith(TIMM_PREFIX)


def timm_model_name(arch: str) -> str:
    """The timm model name in `timm:<model_name>`; raises ValueError when it is empty."""
    name = arch[len(TIMM_PREFIX) :]
    if not name:
        raise ValueError(f"Arch {arch!r} names no timm model; write e.g. 'timm:resnet18'.")
    return name


def check_timm_arch(arch: str, params: dict[str, Any], construct: bool = True) -> str:
    """Validate a `timm:` arch and its params without building weights; return the model name.

    Args:
        construct: also let timm's constructor check `params` on the meta device (`check_timm_params`);
            `build_model` skips it, since the real build that follows checks them too.

    Raises:
        RegistryError: the model name is not in timm (with a "did you mean" hint).
        ValueError: params set one of the keys build_model controls, or one timm's constructor refuses.
    """
    import timm  # imported here: timm is slow to import and only some zoos use it

    name = timm_model_name(arch)
    source, _, model_id = name.partition(":")
    if source in HUB_SOURCES:
        _check_hub_name(arch, source, model_id)
    elif not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"Unknown timm model '{name}'.{hint} See timm.list_models() for all names.")
    reserved = sorted(set(params) & set(RESERVED_PARAMS))
    if reserved:
        raise ValueError(
            f"Arch {arch!r}: params {reserved} are set by build_model (pretrained=False, num_classes=0, "
            f"in_chans=in_channels, pooled features); remove them."
        )
    if construct and params and source not in ("hf-hub", "hf_hub"):  # a hub name's config needs the network
        check_timm_params(arch, name, params)
    return name


def check_timm_params(arch: str, name: str, params: dict[str, Any]) -> None:
    """Let timm's constructor check `params` by building `name` on the meta device (no memory, ~0.1 s).

    Raises:
        ValueError: a param the model's constructor does not take (named, with the ones it takes), or a
            value it refuses.
    """
    import timm

    try:
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, num_classes=0, **params)
    except TypeError as error:  # the constructor rejected a keyword
        unknown = re.findall(r"unexpected keyword argument '(\w+)'", str(error)) or sorted(params)
        raise ValueError(f"Arch {arch!r}: unknown arch param(s) {unknown} for timm's {name} ({error}). Fix: remove "
                         f"them from arch_params.{_accepted_hint(name)}") from None
    except (ValueError, AssertionError) as error:
        raise ValueError(f"Arch {arch!r}: timm cannot build {name} with arch_params {params}: {error}") from None
    except Exception as error:  # what the meta device cannot do (a value read back): the real build checks
        log.debug("meta-device check of %s with %s skipped: %s", arch, params, error)


def _accepted_hint(name: str) -> str:
    """" Accepted: ..." from the constructor of the class timm builds for `name` ("" when it cannot tell)."""
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, num_classes=0)
    except Exception:  # only a hint: without it the message still names the bad param
        return ""
    keys = [p.name for p in inspect.signature(type(model).__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in RESERVED_PARAMS]
    return f" Accepted by {type(model).__name__}: {', '.join(keys)}." if keys else ""


def _check_hub_name(arch: str, source: str, model_id: str) -> None:
    """A hub name: `hf-hub:<org/name>` is checked when timm downloads its config (online only);
    `local-dir:<folder>` must hold timm's `config.json` naming a timm architecture."""
    import timm

    if not model_id:
        raise ValueError(f"Arch {arch!r} names no model after '{source}:'; write e.g. 'timm:hf-hub:timm/resnet18.a1_in1k'.")
    if source != "local-dir":
        return
    config = Path(model_id) / "config.json"
    try:
        architecture = json.loads(config.read_text(encoding="utf-8")).get("architecture")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"Arch {arch!r}: cannot read {config} ({type(err).__name__}); a timm local-dir folder holds "
                         "config.json and model.safetensors (timm's save_for_hf/push_to_hf_hub layout).") from None
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise RegistryError(f"Arch {arch!r}: {config} names architecture {architecture!r}, which timm does not know.")


def timm_features(arch: str, in_channels: int, params: dict[str, Any]) -> tuple[nn.Module, int]:
    """Create `timm:<model_name>` without its classifier, returning pooled [B, num_features] features.

    Args:
        arch: `timm:<model_name>`, e.g. `timm:resnet18`.
        in_channels: image channels (timm adapts the stem via `in_chans`).
        params: extra keyword arguments for `timm.create_model`, e.g. `{"img_size": 32}` for a ViT.

    Returns:
        (timm model with num_classes=0, its pooled feature size).

    Raises:
        RegistryError: unknown timm model name.
        ValueError: a reserved or unknown parameter.
    """
    import timm

    name = check_timm_arch(arch, params, construct=False)  # the build below checks the params itself
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **params)
    except TypeError as error:  # the model's constructor rejected a keyword
        raise ValueError(
            f"Arch {arch!r}: timm.create_model rejected params {sorted(params)}: {error}. "
            f"Accepted keys are those of the model's constructor in timm."
        ) from None
    # Some models (MobileNetV3, ...) put a hidden layer after pooling; its size is what forward returns.
    feature_dim = getattr(model, "head_hidden_size", None) or model.num_features
    return model, int(feature_dim)


def pretrained_features_state(arch: str, in_channels: int, params: dict[str, Any]) -> dict[str, Any]:
    """timm's published weights for `timm:<model_name>` (or a hub name such as `timm:hf-hub:org/name`)
    as a state dict of the features (no classifier); downloads once into timm's cache.

    Raises:
        RuntimeError: the download failed (offline: give `pretrained_weights: FILE` instead).
    """
    import timm

    name = timm_model_name(arch)
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_channels, **params)
    except Exception as error:  # network, hub or checkpoint errors alike
        raise RuntimeError(f"Cannot get timm's pretrained weights for {arch!r} ({error}). Offline, save them once "
                           "elsewhere and give 'pretrained_weights: FILE' (docs/byo.md).") from None
    return model.state_dict()
