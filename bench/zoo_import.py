"""`fpbench zoo import DIR --name NAME`, end to end: check the folder (`bench.zoo.importer`), load the recipe it
gives, build the zoo from it and write the recipe beside the zoo. Above the zoo because it loads a recipe
(docs/architecture.md, "Import direction")."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.config import load_recipe
from bench.errors import ConfigError
from bench.io import atomic_write_text, inside
from bench.zoo.build import build_zoo, prepare
from bench.zoo.importer import check_declared, import_recipe

log = logging.getLogger(__name__)


def import_zoo(folder: str | os.PathLike, name: str, zoo_dir: str = "zoo", overrides: list[str] | None = None) -> Any:
    """Check every model of `folder`, then build the zoo `<zoo_dir>/<name>/` and write its recipe there.

    Args:
        folder: the published zoo in the documented layout.
        name: the zoo's name (its folder under `zoo_dir`).
        zoo_dir: where zoos live (`paths.zoo_dir`).
        overrides: key=value recipe overrides (e.g. `data.splits.test=500`).

    Returns:
        (path of the written recipe, the `BuildReport`).

    Raises:
        ConfigError: any bad folder, metadata or weights file; nothing is written then.
    """
    try:
        final_dir = inside(zoo_dir, name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    recipe = import_recipe(folder, name, final_dir, zoo_dir)
    checks = recipe.pop("imported")["checks"]
    header = "# Written by `fpbench zoo import`; weights paths are relative to this file.\n"
    text = header + yaml.safe_dump(recipe, sort_keys=False)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "recipe.yaml"
        staged.write_text(text)
        cfg = load_recipe(staged, [f"paths.recipe_dir={final_dir.resolve()}", *(overrides or [])])
        dm, _, _ = prepare(cfg)  # every file checked (format, keys, shapes, classes) before anything is written
        check_declared(checks, dm)
        report = build_zoo(cfg, progress=False)
    recipe_path = final_dir / "recipe.yaml"
    atomic_write_text(recipe_path, text)
    log.info("Imported %d models from %s into %s", len(report.plan.jobs), folder, report.store.root)
    return recipe_path, report
