"""A small typed registry: one instance per family (METHODS, ATTACKS, DEPLOYMENTS, ARCHS, DATAMODULES, BENCHMARKS).

A family wired to an entry-point group (`use_entry_points`) also holds what installed packages declare
there, loaded on the first read (`bench.plugins`); each entry records where it comes from (`origin`).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bench import plugins

T = TypeVar("T")

log = logging.getLogger(__name__)


class RegistryError(KeyError):
    """An unknown or duplicate name; the message says what is available."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps a name to an object (usually a class or a factory).

    Args:
        kind: what is registered, used in error messages ("method", "attack", ...).

    Attributes:
        group: the entry-point group loaded on the first read (None: built-ins only).
        base: the class every entry point and reference must subclass.
        broken: entry points that were skipped, name -> "distribution: why" (`fpbench list` shows them).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}
        self._origins: dict[str, str] = {}
        self.group: str | None = None
        self.base: type | None = None
        self.broken: dict[str, str] = {}
        self._pending = False  # entry points of `group` not loaded yet
        self.references = False  # `resolve` accepts package.module:Class

    def use_entry_points(self, group: str, base: type, references: bool = False) -> None:
        """Load the entry points of `group` on the first read; each must be a concrete subclass of `base`.

        Called by the family's package after it imported its built-ins, so a built-in name always wins.

        Args:
            group: the entry-point group, e.g. "fpbench.methods".
            base: the family's base class.
            references: whether `resolve` accepts `package.module:Class` (where the recipe's code path does).
        """
        self.group, self.base, self._pending, self.references = group, base, True, references

    def register(self, name: str, description: str | None = None) -> Callable[[T], T]:
        """Decorator: register `obj` under `name`; a duplicate name raises."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str | None = None) -> None:
        """Register `obj` under `name` (non-decorator form)."""
        if name in self._items:
            raise RegistryError(f"Duplicate {self.kind} name '{name}': already registered by {self._items[name]!r}.")
        self._items[name] = obj
        doc = description if description is not None else (getattr(obj, "__doc__", None) or "")
        self._descriptions[name] = doc.strip().splitlines()[0] if doc.strip() else ""

    def _load(self) -> None:
        """Register the entry points of `group` once; a broken one is skipped with one warning."""
        if not self._pending or self.group is None or self.base is None:
            return
        self._pending = False  # first: a plugin that reads the registry while it imports must not recurse
        for candidate in plugins.find_entry_points(self.group):
            taken = candidate.name in self._items
            try:
                obj = None if taken else candidate.load()
            except Exception as err:  # anything the plugin raises while importing
                problem: str | None = f"it cannot be imported ({type(err).__name__}: {err}): fix the package"
            else:
                problem = plugins.entry_problem(candidate, obj, self.base, taken)
            if problem:
                self.broken[candidate.name] = f"{candidate.distribution}: {problem}"
                log.warning("fpbench: skipped %s entry point '%s = %s' of %s: %s (or uninstall %s).", self.kind,
                            candidate.name, candidate.value, candidate.distribution, problem,
                            candidate.distribution.split(" ")[0])
                continue
            self.add(candidate.name, obj)  # type: ignore[arg-type]
            self._origins[candidate.name] = f"entry point {candidate.distribution}"

    def resolve(self, name: str) -> str:
        """The registry key for `name`: a registered name, or a `package.module:Class` reference, imported,
        checked and registered under `plugins.reference_key` (a safe folder name) the first time.

        Only recipes call this: importing runs the module's code, so a name read from a result file is looked
        up with `get`, which never imports.

        Raises:
            RegistryError: an unknown name ("did you mean"), or a reference that does not import or is not a
                concrete subclass of the family's base class.
        """
        self._load()
        if name in self._items:
            return name
        if self.base is None or not self.references or not plugins.is_reference(name):
            raise RegistryError(self.unknown_message(name))
        try:
            key, obj = plugins.import_reference(name, self.base, self.kind)
        except ValueError as err:
            raise RegistryError(str(err)) from None
        if key not in self._items:
            self.add(key, obj)  # type: ignore[arg-type]
            self._origins[key] = f"reference {name}"
        elif self._items[key] is not obj:
            raise RegistryError(f"{self.kind} '{name}' was registered as '{key}' from another class; restart.")
        return key

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise with a "did you mean" hint."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        if name in self.broken:
            return f"The {self.kind} '{name}' is an entry point that could not be loaded: {self.broken[name]}."
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        own = " (or a class of your own: 'package.module:Class')" if self.references else ""
        return f"Unknown {self.kind} '{name}'.{hint} Available: {', '.join(self.names())}{own}"

    def origin(self, name: str) -> str:
        """Where `name` comes from: "built-in", "entry point <dist> <version>", "reference <pkg.mod:Class>"
        or "registered by module <module>"."""
        self._load()
        return self._origins.get(name) or plugins.origin_of(self.get(name))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load()
        return sorted(self._items)

    def describe(self) -> dict[str, str]:
        """Name -> one-line description, sorted by name."""
        return {name: self._descriptions[name] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)
