"""External models: weights trained elsewhere, imported into an ordinary zoo (docs/byo.md).

A weights file is read without unpickling anything (`bench.zoo.weights_file`: safetensors, a PyTorch
state dict or a Lightning checkpoint through `torch.load(weights_only=True)`). Every check (the file, its format, the
keys and shapes against the architecture, the class count and the input shape) runs at plan time
and raises `ConfigError`, so a bad file stops the CLI with exit 2 before any training or writing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import ConfigError
from bench.io import sha256_file
from bench.nets import build_model, new_model
from bench.nets.factory_net import is_factory_arch
from bench.nets.timm_net import is_timm_arch, pretrained_features_state
from bench.training import accuracy
from bench.zoo.attacks import ATTACKS
from bench.zoo.weights_file import WEIGHT_SUFFIXES as WEIGHT_SUFFIXES
from bench.zoo.weights_file import read_state_dict, resolve_file

log = logging.getLogger(__name__)

# WEIGHT_SUFFIXES and resolve_file are imported from here by the importer, planner and `fpbench verify`.


def _timm_classifier(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    name = cfg.get("classifier")
    return name if isinstance(name, str) else None


def to_classifier_keys(state: dict[str, torch.Tensor], model: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    """Map a timm model's own state dict (`conv1.weight`, `fc.weight`) onto fpbench's Classifier
    (`features.conv1.weight`, `head.weight`), and a whole `factory:` model's onto `features.*`; a
    Classifier state dict passes unchanged."""
    if any(k.startswith(("features.", "head.")) for k in state):
        return state
    if is_factory_arch(arch) and not model.has_linear_head:  # a whole model: all of its keys are the features'
        return {"features." + key: value for key, value in state.items()}
    if not is_timm_arch(arch):
        return state
    classifier = _timm_classifier(model.features)
    out = {}
    for key, value in state.items():
        if classifier and key.startswith(classifier + "."):
            out["head." + key[len(classifier) + 1:]] = value
        else:
            out["features." + key] = value
    return out


def _mismatch_message(state: dict[str, torch.Tensor], model: nn.Module, where: str, arch: str,
                      keys: list[str] | None = None) -> str | None:
    expected = {k: v for k, v in model.state_dict().items() if keys is None or k in keys}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        def show(names: list[str]) -> str:
            return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "") if names else "none"
        return (f"{where}: the weights do not fit arch '{arch}': missing keys: {show(missing)}; unexpected keys: "
                f"{show(unexpected)}. Set 'arch:'/'arch_params:' to the architecture the weights were saved from.")
    return None


def check_fit(state: dict[str, torch.Tensor], model: nn.Module, where: str, arch: str, data: Any) -> None:
    """Raise ConfigError unless `state` loads strictly into `model` (keys, class count, shapes)."""
    message = _mismatch_message(state, model, where, arch)
    if message:
        raise ConfigError(message)
    head = state.get("head.weight")
    if head is not None and head.shape[0] != data.num_classes:
        raise ConfigError(f"{where}: class-count mismatch: the weights' head has {head.shape[0]} outputs, dataset "
                          f"'{data.name}' has {data.num_classes} classes. Import a model trained for this dataset.")
    for key, value in model.state_dict().items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ConfigError(f"{where}: shape mismatch at '{key}': weights {list(state[key].shape)}, arch '{arch}' on "
                              f"{data.in_channels}x{data.image_size}x{data.image_size} inputs expects {list(value.shape)}. "
                              "Input shape or arch_params differ from what the model was trained with.")


def dry_forward(model: nn.Module, data: Any, where: str) -> None:
    """A forward pass on a zero batch of the dataset's shape; its output must be [2, num_classes]."""
    x = torch.zeros(2, data.in_channels, data.image_size, data.image_size)
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except RuntimeError as err:
        raise ConfigError(f"{where}: input-shape mismatch: the model fails on {list(x.shape[1:])} inputs of dataset "
                          f"'{data.name}' ({str(err).splitlines()[0][:200]}).") from None
    if tuple(out.shape) != (2, data.num_classes):
        raise ConfigError(f"{where}: the model outputs {list(out.shape[1:])} per input; dataset '{data.name}' has "
                          f"{data.num_classes} classes.")


def load_external(entry: dict[str, Any], data: Any, base_dir: str | None, where: str,
                  expected_sha256: str | None = None) -> nn.Module:
    """Build `entry['arch']` for `data` with the entry's normalisation and load its weights, checked.

    Args:
        entry: a resolved model spec with `weights`, `arch`, `arch_params` and optional `mean`/`std`.
        data: the datamodule (shapes, classes, default normalisation).
        base_dir: the recipe's folder (`paths.recipe_dir`).
        where: the recipe location for messages.
        expected_sha256: when given, the file must still have this sha256 (planned vs built).

    Raises:
        ConfigError: any problem with the file or its fit, before any training.
    """
    path = resolve_file(entry["weights"], base_dir, where)
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise ConfigError(f"{where}: {entry['weights']} changed since the zoo was planned (sha256 differs). Rerun.")
    state = read_state_dict(path, where, entry["weights"])
    mean, std = entry.get("mean"), entry.get("std")
    if "normalize.mean" in state and "normalize.std" in state:  # the file carries its own normalisation
        file_mean, file_std = state["normalize.mean"].flatten().tolist(), state["normalize.std"].flatten().tolist()
        if mean is not None and not torch.allclose(torch.tensor(mean, dtype=torch.float32), torch.tensor(file_mean)):
            raise ConfigError(f"{where}: mean {mean} disagrees with the file's normalize.mean {file_mean}; drop 'mean:'.")
        if std is not None and not torch.allclose(torch.tensor(std, dtype=torch.float32), torch.tensor(file_std)):
            raise ConfigError(f"{where}: std {std} disagrees with the file's normalize.std {file_std}; drop 'std:'.")
        mean, std = file_mean, file_std
    try:
        model = build_model(entry["arch"], in_channels=data.in_channels, num_classes=data.num_classes,
                            image_size=data.image_size, mean=mean if mean is not None else data.mean,
                            std=std if std is not None else data.std, params=dict(entry.get("arch_params") or {}))
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    state = to_classifier_keys(state, model, entry["arch"])
    # The model was built with the normalisation in force (the entry's, the file's, else the dataset's).
    state = {**state, **{k: v for k, v in model.state_dict().items() if k.startswith("normalize.")}}
    check_fit(state, model, where, entry["arch"], data)
    model.load_state_dict(state, strict=True)
    dry_forward(model, data, where)
    return model


def load_pretrained_features(model: nn.Module, path: Path, arch: str, where: str, shown: str | None = None) -> None:
    """Load published weights into `model.features` (its head and normalisation stay): the offline
    path of `pretrained: true`. Keys are checked strictly over the features; `shown` is the path as written."""
    state = to_classifier_keys(read_state_dict(path, where, shown), model, arch)
    state = {k: v for k, v in state.items() if k.startswith("features.")}
    keys = [k for k in model.state_dict() if k.startswith("features.")]
    message = _mismatch_message(state, model, where, arch, keys)
    if message:
        raise ConfigError(message.replace("the weights", "the pretrained weights"))
    for key in keys:
        if tuple(state[key].shape) != tuple(model.state_dict()[key].shape):
            raise ConfigError(f"{where}: pretrained weights' '{key}' is {list(state[key].shape)}, arch '{arch}' expects "
                              f"{list(model.state_dict()[key].shape)}.")
    model.features.load_state_dict({k[len("features."):]: v for k, v in state.items()}, strict=True)


def import_entry(job: Any) -> dict[str, Any]:
    """What `load_external` reads for an import job (the file at its planned absolute path)."""
    ext = job.external
    return {"weights": ext["path"], "arch": job.arch, "arch_params": job.arch_params, "mean": ext.get("mean"),
            "std": ext.get("std")}


def apply_pretrained(model: nn.Module, job: Any, data: Any) -> None:
    """Start a training job from published weights: a local file (`pretrained_weights`) or timm's download."""
    if job.external and job.external.get("pretrained_weights"):
        path = Path(job.external["path"])
        if sha256_file(path) != job.external["sha256"]:
            raise ConfigError(f"{job.external['pretrained_weights']} changed since the zoo was planned; rerun.")
        load_pretrained_features(model, path, job.arch, f"{job.role} {job.model_id}", job.external["pretrained_weights"])
    elif job.spec.get("pretrained"):
        model.features.load_state_dict(pretrained_features_state(job.arch, data.in_channels, job.arch_params))


def preflight(jobs: list[Any], data: Any) -> None:
    """Every check of every external file of the plan (imports and local pretrained weights) and of every
    `factory:` model (the user's function is called once), before any work.

    Raises:
        ConfigError: the first bad file, naming the recipe entry and the fix.
    """
    by_id = {job.model_id: job for job in jobs}
    heads: dict[str, bool] = {}  # factory (arch, params) -> whether its model has a linear head
    for job in jobs:  # the user's function runs once per (arch, params): what it returns is checked
        if is_factory_arch(job.arch) and _factory_key(job.arch, job.arch_params) not in heads:
            try:
                heads[_factory_key(job.arch, job.arch_params)] = new_model(job.arch, job.arch_params, data, 0).has_linear_head
            except ValueError as err:
                raise ConfigError(f"{job.role} {job.provenance}: {err}") from None
    for job in jobs:
        if job.op == "attack":
            _check_head_attacks(job, by_id, data, heads)
        if job.op == "import":
            where = f"{job.role} '{job.external['weights']}'"
            check_imported_accuracy(load_external(import_entry(job), data, None, where, job.external["sha256"]),
                                    job.spec.get("test_acc"), data, where)
        elif job.op == "train" and job.external and job.external.get("pretrained_weights"):
            apply_pretrained(new_model(job.arch, job.arch_params, data, 0), job, data)


# An owner's recorded accuracy and ours differ by float kernels only (a few flipped labels); `verify` uses it too.
ACC_TOLERANCE = 0.02


def check_imported_accuracy(model: nn.Module, recorded: float | None, data: Any, where: str) -> None:
    """An imported model's accuracy on the test split against what its owner recorded (`test_acc:`), and a
    warning when it is near chance: both are what a wrong input normalisation (`mean`/`std`) looks like.

    Raises:
        ConfigError: the measured accuracy is more than `ACC_TOLERANCE` from the recorded one.
    """
    measured = accuracy(model, *data.tensors("test"))
    if recorded is not None and abs(measured - float(recorded)) > ACC_TOLERANCE:
        raise ConfigError(f"{where}: its accuracy on the test split is {measured:.4f}, its owner recorded "
                          f"test_acc {float(recorded):.4f}: not the model described, or imported with the wrong input "
                          "normalisation. Check 'arch:' and 'mean:'/'std:' (a model that normalises inside forward "
                          "needs mean: [0.0], std: [1.0]; a suspect inherits the source's with its architecture).")
    if measured < 1.5 / data.num_classes:
        log.warning("%s: its test accuracy %.4f is near chance (%d classes): if it is a working model, its input "
                    "normalisation ('mean:'/'std:') is probably wrong, and its scores are meaningless.", where,
                    measured, data.num_classes)


def _factory_key(arch: str, params: dict[str, Any]) -> str:
    return json.dumps([arch, params], sort_keys=True)


def _check_head_attacks(job: Any, by_id: dict[str, Any], data: Any, heads: dict[str, bool]) -> None:
    """FTLL/RTLL/RTAL on a whole model from a `factory:` arch (no linear head): refused before any training.

    `heads` caches whether each factory's model has a linear head (an extraction into another factory
    arch adds its entry here)."""
    parent = by_id.get(job.parent)
    arch, params = (parent.arch, parent.arch_params) if parent is not None else (job.arch, job.arch_params)
    for step in job.spec.get("chain", []):
        step_params = step.get("params", {})
        if step_params.get("arch"):  # an extraction into another architecture
            arch, params = step_params["arch"], step_params.get("arch_params") or {}
        if ATTACKS.get(step["attack"]).needs_linear_head() and is_factory_arch(arch):
            key = _factory_key(arch, params)
            if key not in heads:
                heads[key] = new_model(arch, params, data, 0).has_linear_head
            if not heads[key]:
                raise ConfigError(f"positive {job.provenance}: {step['attack']} retrains or resets the last linear layer, "
                                  f"and {arch} builds a whole model without one. Make the factory return (features, "
                                  "feature_dim), or drop this attack (docs/byo.md, Factories).")
