"""A small typed registry: one instance per family (METHODS, ATTACKS, DEPLOYMENTS, ARCHS, DATAMODULES, BENCHMARKS).

A family wired to an entry-point group (`use_entry_points`) also holds what installed packages declare
there, loaded on the first read (`bench.plugins`); each entry records where it comes from (`origin`).
A family whose package holds one entry per module finds them with `import_submodules`, and a family whose
entries are classes naming themselves (`name_attr`) writes each name once: in the class or in the decorator.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

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
        name_attr: the class attribute that holds an entry's registry name ("name"; None: entries are not
            classes that name themselves). `register` then reads it, or sets it from the decorator's argument,
            so a name is written once.

    Attributes:
        group: the entry-point group loaded on the first read (None: built-ins only).
        base: the class every entry point and reference must subclass.
        broken: entry points that were skipped, name -> "distribution: why" (`fpbench list` shows them).
    """

    def __init__(self, kind: str, name_attr: str | None = None) -> None:
        self.kind = kind
        self.name_attr = name_attr
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

    @overload
    def register(self, name: type) -> Any: ...

    @overload
    def register(self, name: str | None = None, description: str | None = None) -> Callable[[T], T]: ...

    def register(self, name: str | type | None = None, description: str | None = None) -> Any:
        """Decorator: register `obj` under `name`; a duplicate name raises.

        With `name_attr`, the name is written once: `@REG.register` (or `register()`) reads the class's own
        `name_attr`; `@REG.register("x")` sets it on a class that does not set it itself.

        Raises:
            RegistryError: a duplicate name; with `name_attr`, a class without a name, or whose own name
                differs from the decorator's.
        """
        if isinstance(name, type):  # `@REG.register` without parentheses: the class itself
            return self.register()(name)  # type: ignore[arg-type]

        def decorator(obj: T) -> T:
            self.add(self._entry_name(obj, name), obj, description)
            return obj

        return decorator

    def _entry_name(self, obj: Any, name: str | None) -> str:
        """The name `obj` registers under: the decorator's, or its own `name_attr` (set from the decorator's)."""
        if self.name_attr is None or not isinstance(obj, type):
            if name is None:
                raise RegistryError(f"Register the {self.kind} {obj!r} with a name: @register(\"<name>\").")
            return name
        own = vars(obj).get(self.name_attr)  # inherited names do not count: a subclass is its own entry
        if name is None and own is None:
            raise RegistryError(f"{self.kind} class {obj.__module__}.{obj.__qualname__} has no name: set "
                                f"`{self.name_attr} = \"<name>\"` in its body (written once; the decorator reads it).")
        if name is not None and own is not None and own != name:
            raise RegistryError(f"{self.kind} class {obj.__module__}.{obj.__qualname__} says {self.name_attr} = "
                                f"{own!r} but is registered as {name!r}: write the name once, in the class only.")
        key = str(own if own is not None else name)
        setattr(obj, self.name_attr, key)
        return key

    def add(self, name: str, obj: T, description: str | None = None) -> None:
        """Register `obj` under `name` (non-decorator form)."""
        if name in self._items:
            raise RegistryError(f"Duplicate {self.kind} name '{name}': already registered by {self._items[name]!r}.")
        self._items[name] = obj
        doc = description if description is not None else (getattr(obj, "__doc__", None) or "")
        self._descriptions[name] = doc.strip().splitlines()[0] if doc.strip() else ""
        finish = getattr(obj, "on_register", None)  # a family's base class finishes an entry here (attacks: Config)
        if callable(finish):
            finish()

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


def import_submodules(package: str, path: Iterable[str], helpers: Collection[str] = ()) -> list[str]:
    """Import every module of a package, sorted by name, so what they register is complete.

    A family's `__init__.py` calls `import_submodules(__name__, __path__)`: a new entry is one new file and
    touches no other. Modules whose name starts with `_` and the `helpers` named are not imported here (they
    are imported by the modules that use them); every other module must be cheap and side-effect free
    besides registering.

    Args:
        package: the package's dotted name (its `__name__`).
        path: the package's `__path__`.
        helpers: module names (without the package) to leave out.

    Returns:
        The dotted names imported, in order.
    """
    names = sorted(info.name for info in pkgutil.iter_modules(list(path)))
    wanted = [f"{package}.{name}" for name in names if not name.startswith("_") and name not in helpers]
    for module in wanted:
        importlib.import_module(module)
    return wanted
