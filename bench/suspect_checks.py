"""What a file-given suspect is checked against before `fpbench verify` trusts its score.

Two ways a user's own weights give a wrong verdict without any error: the wrong input normalisation
(the dataset's `Normalize` put in front of a model that already normalises inside `forward`, so its
inputs are normalised twice), and a file that is not the model its owner meant. Both show in the
model's accuracy on the benchmark's test split, so `verify` measures it before scoring:

- the normalisation is explicit: `--mean/--std`, else the one the file carries (`normalize.*`), else
  the source's when the suspect has the source's architecture (a suspect inherits it with the
  architecture, as in a recipe), else the dataset's; the one used is printed;
- the measured accuracy is compared with the one its owner recorded (`--test-acc`) and refused on a
  gap, and a model far below the source's accuracy is flagged (docs/byo.md, "Verify one suspect").
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from torch import nn

from bench.io import inside
from bench.training import accuracy
from bench.zoo.external import ACC_TOLERANCE
from bench.zoo.store import ZooError, ZooStore
from datamodules import DataConfig, build_datamodule

# A suspect this far below the source's accuracy is worth a second look at its normalisation.
ACC_WARN_GAP = 0.15


def parse_stats(text: str | None, flag: str) -> list[float] | None:
    """`--mean 0.5` or `--mean 0.485,0.456,0.406` as a list of finite floats (None when not given).

    Raises:
        ValueError: a value that is not a number, or not finite, naming the flag.
    """
    if text is None:
        return None
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give comma-separated numbers, e.g. {flag} 0.5 or {flag} 0.0,0.0,0.0.") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{flag} {text!r}: give one finite number per channel, e.g. {flag} 0.5.")
    if flag == "--std" and any(v <= 0 for v in values):
        raise ValueError(f"--std {text!r}: a standard deviation must be > 0.")
    return values


def source_normalization(result: dict[str, Any] | None, zoo_dir: str | os.PathLike) -> dict[str, Any] | None:
    """`{arch, arch_params, mean, std}` of the benchmark's source: from the result (`zoo.source_normalization`,
    written since fpbench records it), else from the source checkpoint of its zoo under `zoo_dir`; None if neither."""
    if result is None:
        return None
    zoo = result.get("zoo") or {}
    recorded = zoo.get("source_normalization")
    if isinstance(recorded, dict) and {"arch", "mean", "std"} <= set(recorded):
        return recorded
    try:
        store = ZooStore(inside(zoo_dir, str(zoo.get("name"))))
        record = store.records().get(str(zoo.get("source_id")))
    except (ValueError, ZooError):
        return None
    if record is None or not store.checkpoint_path(record["model_id"]).is_file():
        return None
    with safe_open(str(store.checkpoint_path(record["model_id"])), framework="pt") as handle:  # two buffers only
        if "normalize.mean" not in handle.keys():
            return None
        mean, std = handle.get_tensor("normalize.mean"), handle.get_tensor("normalize.std")
    return {"arch": record["arch"], "arch_params": record.get("arch_params") or {},
            "mean": mean.flatten().tolist(), "std": std.flatten().tolist()}


def model_normalization(model: nn.Module) -> dict[str, list[float]] | None:
    """The `mean`/`std` of a Classifier's `Normalize` first layer (None for another module)."""
    normalize = getattr(model, "normalize", None)
    if normalize is None or not hasattr(normalize, "mean"):
        return None
    return {"mean": normalize.mean.flatten().tolist(), "std": normalize.std.flatten().tolist()}


def choose_normalization(arch: str, mean: list[float] | None, std: list[float] | None,
                         source: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The `mean`/`std` a weights-file suspect is built with, and where they came from (printed).

    A file carrying `normalize.*` buffers overrides what is chosen here (`load_external` checks they agree
    with explicit flags).
    """
    if (mean is None) != (std is None):
        raise ValueError("Give --mean and --std together (the model's input normalisation), or neither.")
    if mean is not None:
        return {"mean": mean, "std": std}, "--mean/--std"
    if source is not None and source.get("arch") == arch:
        return ({"mean": list(source["mean"]), "std": list(source["std"])},
                "the source's (same architecture; --mean/--std to override)")
    return {}, "the dataset's (--mean/--std to override; a model that normalises inside forward needs --mean 0 --std 1)"


def test_split(result: dict[str, Any], data_dir: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The result's test split (same data config, split seed and content hash), or None when its data
    cannot be read here (the check is then skipped, and `verify` says so)."""
    config = result.get("config") or {}
    try:
        data_cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), config.get("data") or {})
        dm = build_datamodule(data_cfg, data_dir=data_dir, seed=int((config.get("zoo") or {}).get("split_seed", 0)))
        dm.setup()
        if dm.split_hashes().get("test") != (result.get("zoo") or {}).get("split_hashes", {}).get("test"):
            return None
        return dm.tensors("test")
    except Exception:  # noqa: BLE001 - data missing here, or a datamodule that needs a download: no check
        return None


def accuracy_check(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor] | None, recorded: float | None,
                   source_acc: float | None) -> tuple[float | None, list[str]]:
    """The suspect's measured test accuracy and the warnings it raises.

    Raises:
        ValueError: `recorded` (the owner's figure) differs from the measured one by more than `ACC_TOLERANCE`.
    """
    if data is None:
        if recorded is not None:
            raise ValueError("--test-acc was given, but the benchmark's test split cannot be read here; pass "
                             "--data-dir (the run's paths.data_dir).")
        return None, ["test accuracy: not measured (the benchmark's test split is not readable here; --data-dir)"]
    measured = accuracy(model, *data)
    if recorded is not None and abs(measured - recorded) > ACC_TOLERANCE:
        raise ValueError(f"The suspect's accuracy on the benchmark's test split is {measured:.4f}, its owner recorded "
                         f"{recorded:.4f} (--test-acc): not the model described, or built with the wrong input "
                         "normalisation. Check --arch and --mean/--std (a model that normalises inside forward needs "
                         "--mean 0 --std 1).")
    warnings = []
    if source_acc is not None and measured < source_acc - ACC_WARN_GAP:
        warnings.append(f"WARNING: the suspect's test accuracy {measured:.4f} is far below the source's "
                        f"{source_acc:.4f}: if it is a working model, its input normalisation is probably wrong "
                        "(--mean/--std); its score and decision are then meaningless.")
    return measured, warnings


def carries_normalization(path: str | os.PathLike) -> bool:
    """True when a safetensors file carries its own `normalize.*` buffers (an fpbench checkpoint); only
    the header is read."""
    file = Path(path)
    if file.suffix != ".safetensors" or not file.is_file():
        return False
    try:
        with safe_open(str(file), framework="pt") as handle:
            return "normalize.mean" in handle.keys()
    except Exception:  # noqa: BLE001 - unreadable files are reported by the loader itself
        return False
