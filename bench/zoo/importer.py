"""`fpbench zoo import DIR --name NAME`: a published zoo's folder of weights files into an ordinary zoo.

Layout (docs/byo.md, "Importing a zoo")::

    DIR/source/model.safetensors (or model.pt / model.pth)  + meta.yaml (or meta.json)
    DIR/positives/<label>/model.* + meta.yaml
    DIR/negatives/<label>/model.* + meta.yaml

The import writes a recipe whose zoo entries are `weights:` entries (paths relative to it) to
`<zoo_dir>/<NAME>/recipe.yaml`, and builds that zoo: every file is checked before anything is
written, then copied as safetensors with its sha256 in the manifest. `fpbench run` on the written
recipe evaluates the imported zoo like any other.

This module reads and checks the folder; `bench.zoo_import.import_zoo` loads the written recipe and
builds the zoo (loading a recipe is the layer above the zoo: docs/architecture.md, "Import direction").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from bench.errors import ConfigError
from bench.zoo.external import WEIGHT_SUFFIXES

WEIGHT_NAMES = tuple(f"model{suffix}" for suffix in WEIGHT_SUFFIXES)
META_NAMES = ("meta.yaml", "meta.yml", "meta.json")
# meta keys copied into the zoo entry as they are; `label`, `attack`, `kind` are read separately.
ENTRY_KEYS = ("arch", "factory", "arch_params", "mean", "std", "test_acc")
META_KEYS = (*ENTRY_KEYS, "dataset", "data", "num_classes", "input_shape", "role", "kind", "attack", "label")


def _member(folder: Path, where: str) -> tuple[Path, dict[str, Any]]:
    """The weights file and the metadata of one model folder."""
    weights = [folder / n for n in WEIGHT_NAMES if (folder / n).is_file()]
    metas = [folder / n for n in META_NAMES if (folder / n).is_file()]
    if len(weights) != 1 or len(metas) != 1:
        raise ConfigError(f"{where} ({folder}) needs exactly one weights file ({' | '.join(WEIGHT_NAMES)}) and one "
                          f"metadata file ({' | '.join(META_NAMES)}); found {[p.name for p in folder.iterdir()]}.")
    try:
        meta = yaml.safe_load(metas[0].read_text()) or {}  # YAML is a superset of JSON
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: cannot parse {metas[0]}: {err}") from None
    if not isinstance(meta, dict) or not ("arch" in meta or "factory" in meta):
        raise ConfigError(f"{where}: {metas[0]} must be a mapping with at least 'arch:' (e.g. convnet or timm:resnet18) "
                          "or 'factory:' (package.module:function).")
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} in {metas[0]}. Valid keys: {', '.join(META_KEYS)}.")
    return weights[0], meta


def _members(root: Path, role: str) -> list[tuple[str, Path, dict[str, Any]]]:
    folder = root / role
    if not folder.is_dir():
        return []
    return [(sub.name, *_member(sub, f"{role}/{sub.name}")) for sub in sorted(folder.iterdir()) if sub.is_dir()]


def import_recipe(folder: str | os.PathLike, name: str, recipe_dir: Path, zoo_dir: str) -> dict[str, Any]:
    """The recipe (as a dict) whose zoo imports `folder`; weights paths relative to `recipe_dir`.

    Raises:
        ConfigError: a missing folder, file or key, or a metadata key fpbench does not know.
    """
    root = Path(folder).resolve()
    if not (root / "source").is_dir():
        raise ConfigError(f"{root} has no source/ folder. Layout: source/, positives/<label>/, negatives/<label>/, "
                          "each with model.safetensors|model.pt and meta.yaml (docs/byo.md).")
    weights, meta = _member(root / "source", "source")
    if not meta.get("dataset"):
        raise ConfigError("source meta needs 'dataset:' (a registered datamodule: `fpbench list datamodules`); "
                          "fpbench measures accuracy and draws fingerprint seeds from it.")

    def entry(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return {"weights": os.path.relpath(path, recipe_dir), **{k: meta[k] for k in ENTRY_KEYS if k in meta}}

    positives = [{**entry(p, m), "label": m.get("label", label), "attack": str(m.get("attack", "unknown"))}
                 for label, p, m in _members(root, "positives")]
    negatives = [{**entry(p, m), "kind": m.get("kind", "external"), "label": str(m.get("label", label))}
                 for label, p, m in _members(root, "negatives")]
    return {"paths": {"zoo_dir": zoo_dir}, "data": {"name": meta["dataset"], **(meta.get("data") or {})},
            "zoo": {"name": name, "source": entry(weights, meta), "positives": positives, "negatives": negatives},
            "imported": {"from": root.name, "checks": _shape_checks(root)}}


def _shape_checks(root: Path) -> dict[str, Any]:
    """num_classes / input_shape each metadata file declares, by member (checked against the datamodule)."""
    out = {}
    for role in ("source", "positives", "negatives"):
        members = [("source", *_member(root / "source", "source"))] if role == "source" else _members(root, role)
        for label, _, meta in members:
            declared = {k: meta[k] for k in ("num_classes", "input_shape") if k in meta}
            if declared:
                out[f"{role}/{label}" if role != "source" else "source"] = declared
    return out


def check_declared(checks: dict[str, Any], dm: Any) -> None:
    shape = [dm.in_channels, dm.image_size, dm.image_size]
    for member, declared in checks.items():
        if "num_classes" in declared and int(declared["num_classes"]) != dm.num_classes:
            raise ConfigError(f"{member}: meta num_classes={declared['num_classes']}, dataset '{dm.name}' has "
                              f"{dm.num_classes} classes.")
        if "input_shape" in declared and [int(v) for v in declared["input_shape"]] != shape:
            raise ConfigError(f"{member}: meta input_shape={list(declared['input_shape'])}, dataset '{dm.name}' "
                              f"gives {shape} (C, H, W).")
