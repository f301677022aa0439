"""The recipes shipped with fpbench: ``fpbench run quickstart`` finds ``recipes/quickstart.yaml`` by name, and
``fpbench sweep smoke`` finds ``recipes/sweeps/smoke.yaml``.

The wheel ships the checkout's ``recipes/`` folder as the package ``fpbench_recipes`` (pyproject.toml,
``package-dir``), ``sweeps/`` included, so an installed fpbench runs its own recipes from any folder;
``include:`` paths stay relative to each file, as in the checkout. A bare name (no ``/``, no ``.yaml``)
that is not an existing file is looked up here; anything else is a path, as it always was.
"""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

PACKAGE = "fpbench_recipes"
SUFFIXES = (".yaml", ".yml")


def recipes_folder() -> Path | None:
    """The folder of the packaged recipes; from a checkout whose install predates the package, its ``recipes/``.

    Read from the package's import spec, not ``importlib.resources.files``: the package has no
    ``__init__.py`` (recipes/ holds only YAML), and Python 3.11's resources refuse the namespace path of
    an editable install. The recipes are installed as files (``include:`` needs folders), never zipped.
    """
    spec = find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if Path(location).is_dir():
            return Path(location)
    folder = Path(__file__).resolve().parent.parent / "recipes"
    return folder if folder.is_dir() else None


def is_builtin_name(recipe: str | os.PathLike) -> bool:
    """Whether ``recipe`` names a built-in recipe: no folder separator, no YAML suffix, and no such file here."""
    text = os.fspath(recipe)
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    return (not any(s in text for s in separators) and not text.lower().endswith(SUFFIXES)
            and not Path(text).is_file())


def builtin_names() -> list[str]:
    """The names of the built-in recipes (``quickstart``, ``smoke``, ...), sorted; empty if none are installed."""
    folder = recipes_folder()
    return sorted(path.stem for path in folder.glob("*.yaml") if path.is_file()) if folder is not None else []


def builtin_recipe(name: str) -> Path | None:
    """The file of the built-in recipe ``name`` (``quickstart`` -> ``<recipes folder>/quickstart.yaml``), or ``None``."""
    folder = recipes_folder()
    path = folder / f"{name}.yaml" if folder is not None else None
    return path if path is not None and path.is_file() else None


SWEEPS = "sweeps"  # the built-in sweeps' folder inside the recipes folder


def builtin_sweep_names() -> list[str]:
    """The names of the built-in sweeps (``smoke``, ``adv_tra_classes``, ...), sorted; empty if none are installed."""
    folder = recipes_folder()
    found = folder / SWEEPS if folder is not None else None
    return sorted(p.stem for p in found.glob("*.yaml") if p.is_file()) if found is not None and found.is_dir() else []


def builtin_sweep(name: str) -> Path | None:
    """The file of the built-in sweep ``name`` (``smoke`` -> ``<recipes folder>/sweeps/smoke.yaml``), or ``None``."""
    folder = recipes_folder()
    path = folder / SWEEPS / f"{name}.yaml" if folder is not None else None
    return path if path is not None and path.is_file() else None
