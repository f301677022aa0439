"""Methods, attacks and deployments from outside the repository: entry points and `package.module:Class` references.

A registry wired to an entry-point group (`fpbench.methods`, `fpbench.attacks`, `fpbench.deployments`;
`Registry.use_entry_points`) loads that group the first time it is read, so `fpbench list` and recipes
see an installed package's entries; a recipe may also name a method class directly as
`package.module:Class` (`Registry.resolve`). This module imports only the standard library, and no
plugin is imported before a registry is read, so `fpbench --help` stays light.

Importing a plugin runs its package's code: install and name only code you trust
(docs/extending.md, "From your own package").
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

BUILT_IN = "built-in"
FIRST_PARTY = ("bench", "datamodules")  # top-level packages whose registrations are built-in
# The rule of `bench.io.SAFE_NAME_RULE` (a registry key becomes a folder name: runs/<zoo>/<method>/), kept
# here because bench.io imports torch; tests/test_plugins.py checks that the two patterns agree.
SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._\-]{0,99}")
SAFE_KEY_RULE = "letters, digits and . _ -, starting with a letter, digit or _, at most 100 characters"
# A reference `pkg.mod:Class` is registered as `pkg.mod-Class`: ':' is not allowed in a folder name on every
# system, and '-' cannot occur in a module or class name, so the key reads back as the reference.
REFERENCE_SEPARATOR = "-"
_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class Candidate:
    """One installed entry point of a registry's group.

    Attributes:
        name: the entry point's name: the registry key it asks for.
        value: what it points at, `package.module:Class`.
        distribution: the installed distribution that declares it, "name version".
        load: imports the module and returns the object.
    """

    name: str
    value: str
    distribution: str
    load: Callable[[], Any]


def find_entry_points(group: str) -> list[Candidate]:
    """Every installed entry point of `group`, in a stable order (distribution, then name)."""
    found = []
    for point in metadata.entry_points(group=group):
        dist = getattr(point, "dist", None)
        where = f"{dist.name} {dist.version}" if dist is not None else "an unnamed distribution"
        found.append(Candidate(point.name, point.value, where, point.load))
    return sorted(found, key=lambda c: (c.distribution, c.name))


def class_problem(obj: Any, base: type) -> str | None:
    """Why `obj` cannot be registered in a family whose base class is `base` (None: it can)."""
    family = f"{base.__module__}.{base.__name__}"
    if not isinstance(obj, type):
        return f"it is a {type(obj).__name__}, not a class: point it at a subclass of {family}"
    if not issubclass(obj, base):
        return f"class {obj.__name__} is not a subclass of {family}: subclass it"
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        return f"class {obj.__name__} is abstract: implement {missing}"
    return None


def entry_problem(candidate: Candidate, obj: Any, base: type, taken: bool) -> str | None:
    """Why an entry point's object cannot be registered under its name (None: it can).

    Args:
        candidate: the entry point.
        obj: what it loaded.
        base: the family's base class.
        taken: whether the name is already registered (built-in or an earlier entry point).
    """
    if taken:
        return f"its name '{candidate.name}' is already registered: rename the entry point in its pyproject.toml"
    if not SAFE_KEY.fullmatch(candidate.name):
        return f"its name '{candidate.name}' must be {SAFE_KEY_RULE}: rename the entry point in its pyproject.toml"
    problem = class_problem(obj, base)
    if problem:
        return problem
    declared = getattr(obj, "name", candidate.name)
    if declared != candidate.name:
        return (f"class {obj.__name__} says name = {declared!r}: make the class's `name` and the entry point's "
                "name the same")
    return None


def origin_of(obj: Any) -> str:
    """Where an entry registered by import (not an entry point or a reference) comes from."""
    module = str(getattr(obj, "__module__", "") or "")
    return BUILT_IN if module.split(".")[0] in FIRST_PARTY else f"registered by module {module}"


def is_reference(name: str) -> bool:
    """Whether `name` reads `package.module:Class` (a class named in a recipe, not a registry key)."""
    return ":" in name


def reference_key(reference: str) -> str:
    """The registry key of a reference: `pkg.mod:Class` -> `pkg.mod-Class` (a safe folder name)."""
    return reference.replace(":", REFERENCE_SEPARATOR, 1)


def key_reference(key: str) -> str | None:
    """The reference a registry key reads back as (`pkg.mod-Class` -> `pkg.mod:Class`); None when `key` is not
    of that form (a built-in's or an entry point's name)."""
    module, separator, attr = key.partition(REFERENCE_SEPARATOR)
    reference = f"{module}:{attr}"
    return reference if separator and _REFERENCE.fullmatch(reference) else None


def unregistered_fix(name: str, kind: str = "method", flag: str = "--method") -> str:
    """What to do about a name read from a file (a result, a fingerprint) that this process has not registered.

    A name in a file is never imported (`Registry.resolve`): the user names the class on the command line.
    """
    reference = key_reference(name)
    if reference is None:
        return (f"install the package that registers the {kind} '{name}' (an entry point), or, for a class of your "
                f"own, pass {flag} package.module:Class")
    return (f"the {kind} '{name}' is the class '{reference}' a recipe named; a name read from a file is never "
            f"imported, so pass {flag} {reference} (it imports that module: name only code you trust), or install "
            "its package with an entry point")


def import_reference(reference: str, base: type, kind: str) -> tuple[str, type]:
    """Import the class a recipe names as `package.module:Class`; return its registry key and the class.

    Raises:
        ValueError: a malformed reference, a module that does not import, a missing attribute, an object
            that is not a concrete subclass of `base`, or a key too long for a folder name.
    """
    what = f"{kind} '{reference}'"
    if not _REFERENCE.fullmatch(reference):
        raise ValueError(f"{what} must read 'package.module:Class' (a registered {kind} name has no ':').")
    module_name, _, attr = reference.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # anything the module raises while importing
        raise ValueError(f"{what}: cannot import module '{module_name}': {type(err).__name__}: {err}. Install its "
                         "package or put its folder on PYTHONPATH.") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what}: module '{module_name}' has no attribute '{attr}'. Check the class name.")
        obj = getattr(obj, part)
    problem = class_problem(obj, base)
    if problem:
        raise ValueError(f"{what}: {problem}.")
    key = reference_key(reference)
    if not SAFE_KEY.fullmatch(key):
        raise ValueError(f"{what}: its key '{key}' (the result folder's name) must be {SAFE_KEY_RULE}; shorten the "
                         "module path or register the class as an entry point with a short name.")
    return key, obj
