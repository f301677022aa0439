"""What validation and listing know of a datamodule, without Lightning: `DataSpec` and `DATAMODULES`.

A `DataSpec` describes one dataset (name, shape, classes, fixed pool sizes) and says where its
`FingerprintDataModule` class lives ("package.module:Class"). Recipe checks and `fpbench list
datamodules` read only specs; the class, and with it Lightning, is imported the first time
`DATAMODULES.get(name)` (or `build_datamodule`) asks for it. The class takes these attributes from its
spec (`spec = <the DataSpec>` in its body), so each value is written once (docs/datamodules.md).

The built-in specs are listed at the end of this file rather than discovered from the package's modules:
discovering them would import every class, and with it Lightning, which listing and validation must not.
A new datamodule is its class module plus one `DATAMODULES.add_spec(DataSpec(...))` line here; its name
is written once, in that spec. The tests (`tests/datamodules/test_specs.py`) run over `DATAMODULES.names()`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from bench.registry import Registry, RegistryError

DEFAULT_IMAGE_SIZE = 224  # image side of a dataset sized by `data.image_size` (ImageNet) when that is null


@dataclass(frozen=True)
class DataSpec:
    """One datamodule as validation and listing see it; its class takes these values from it.

    Args:
        name: registry key, the recipe's `data.name`.
        description: one line for `fpbench list datamodules`.
        in_channels: channels of one image.
        num_classes: number of classes; None where it is read from the data (ImageNet: class folders).
        image_size: image side in pixels; None where `data.image_size` sets it (default `DEFAULT_IMAGE_SIZE`).
        known_pool_sizes: (train pool, test pool or None for a single pool) when the dataset's size is
            fixed: the recipe's split sizes are then checked at load. None: checked when the data is read.
        target: where the `FingerprintDataModule` subclass lives, "package.module:Class".
    """

    name: str
    description: str
    in_channels: int
    num_classes: int | None
    image_size: int | None
    known_pool_sizes: tuple[int, int | None] | None
    target: str

    def __post_init__(self) -> None:
        where = f"DataSpec '{self.name}'"
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"DataSpec name={self.name!r}: give the recipe's data.name, a non-empty string.")
        module, _, attribute = self.target.partition(":")
        if not module or not attribute:
            raise ValueError(f"{where}: target={self.target!r} must be 'package.module:Class', the class's "
                             "module and name (e.g. 'datamodules.digits:DigitsDataModule').")
        for key in ("in_channels", "num_classes", "image_size"):
            value = getattr(self, key)
            if (value is not None or key == "in_channels") and not (_is_int(value) and value >= 1):
                allowed = "an int >= 1" + ("" if key == "in_channels" else ", or None")
                raise ValueError(f"{where}: {key}={value!r} must be {allowed}.")
        pools = self.known_pool_sizes
        if pools is not None and not (
            isinstance(pools, tuple) and len(pools) == 2 and _is_int(pools[0]) and pools[0] >= 1
            and (pools[1] is None or (_is_int(pools[1]) and pools[1] >= 1))
        ):
            raise ValueError(f"{where}: known_pool_sizes={pools!r} must be (train pool >= 1, test pool >= 1 "
                             "or None for a single pool), or None when the size is only known from the data.")

    def shape(self, image_size: int | None = None) -> tuple[int, int, int]:
        """(C, H, W) of one image; `image_size` is the recipe's `data.image_size` (used where the spec has none)."""
        size = int(self.image_size or image_size or DEFAULT_IMAGE_SIZE)
        return self.in_channels, size, size


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_target(target: str) -> Any:
    """The object a "package.module:attribute" string names, importing its module."""
    module, _, attribute = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


class DataModuleRegistry(Registry[DataSpec]):
    """`DATAMODULES`: a `DataSpec` per name; `get` returns the spec's class, imported on first use.

    `add_spec(spec)` registers a spec (no import). The class decorator `register(name)` binds a class
    directly; a class with its own `spec` registers that spec, and a class written the older way (the
    attributes in its body, no spec) gets a spec derived from its attributes.
    """

    def __init__(self) -> None:
        super().__init__("datamodule")
        self._classes: dict[str, type] = {}  # name -> class, for the spec it was loaded for

    def add_spec(self, spec: DataSpec) -> DataSpec:
        """Register `spec` under its name (nothing is imported); a duplicate name raises. Returns `spec`."""
        super().add(spec.name, spec, spec.description)
        self._classes.pop(spec.name, None)  # a class loaded for an earlier spec of this name is stale
        return spec

    def spec(self, name: str) -> DataSpec:
        """The spec registered as `name`, or raise with a "did you mean" hint (no import)."""
        return super().get(name)

    def get(self, name: str) -> type:  # type: ignore[override]
        """The `FingerprintDataModule` subclass of `name`, importing its module the first time.

        Raises:
            RegistryError: unknown name ("did you mean"), or a target that cannot be imported or whose
                class does not carry this spec.
        """
        spec = self.spec(name)
        cls = self._classes.get(name)
        if cls is None or getattr(cls, "spec", None) != spec:
            cls = self._classes[name] = _load_class(spec)
        return cls

    def add(self, name: str, obj: Any, description: str | None = None) -> None:
        """Bind the class `obj` to `name` (the non-decorator form of `register`)."""
        if not isinstance(obj, type):
            raise RegistryError(f"DATAMODULES.add('{name}', {obj!r}): register a FingerprintDataModule subclass "
                                "here, or a DataSpec with DATAMODULES.add_spec(spec).")
        spec = obj.__dict__.get("spec") or derive_spec(obj, name, description)
        if spec.name != name:
            raise RegistryError(f"{obj.__qualname__} is registered as '{name}' but its spec is named "
                                f"'{spec.name}'. Fix: use the same name in both.")
        if self._items.get(name) != spec:
            self.add_spec(spec)  # a duplicate name raises here
        self._classes[name] = obj


def derive_spec(cls: type, name: str, description: str | None = None) -> DataSpec:
    """A spec from the attributes of a class written without one (the older way); it becomes `cls.spec`."""
    if getattr(cls, "name", "") not in ("", name):
        raise RegistryError(f"{cls.__qualname__} has name='{cls.name}' but is registered as '{name}'. "  # type: ignore[attr-defined]
                            "Fix: use the same name in both.")
    doc = description if description is not None else (cls.__doc__ or "")
    num_classes, image_size = getattr(cls, "num_classes", None), getattr(cls, "image_size", None)
    try:
        spec = DataSpec(
            name=name, description=doc.strip().splitlines()[0] if doc.strip() else "",
            in_channels=getattr(cls, "in_channels", 0),
            num_classes=num_classes if _is_int(num_classes) and num_classes else None,  # a property: read from data
            image_size=image_size if _is_int(image_size) and image_size else None,  # 0: set per instance
            known_pool_sizes=getattr(cls, "known_pool_sizes", None),
            target=f"{cls.__module__}:{cls.__qualname__}",
        )
    except ValueError as err:
        raise RegistryError(f"datamodule {cls.__qualname__} ('{name}'): {err} Fix: set it on the class, or "
                            "better give the class a DataSpec (docs/extending.md, 'A datamodule').") from None
    cls.name, cls.spec = name, spec  # type: ignore[attr-defined]
    return spec


def _load_class(spec: DataSpec) -> type:
    """Import the class `spec.target` names and check that it carries `spec`."""
    try:
        cls = load_target(spec.target)
    except (ImportError, AttributeError) as err:
        raise RegistryError(f"datamodule '{spec.name}': its class {spec.target} cannot be imported ({err}). "
                            "Fix: make DataSpec.target name the module and class of the datamodule, "
                            "or import that module first.") from None
    if getattr(cls, "spec", None) != spec:
        raise RegistryError(f"datamodule '{spec.name}': {spec.target} does not take its attributes from the "
                            f"registered spec. Fix: set `spec = <that DataSpec>` in the class body "
                            "(docs/extending.md, 'A datamodule').")
    return cls


DATAMODULES = DataModuleRegistry()

# -- the built-in datamodules (their classes import Lightning; these lines do not) -------------------------
DIGITS = DATAMODULES.add_spec(DataSpec(
    name="digits", description="8x8 handwritten digits from scikit-learn (1,797 images, 10 classes, 1 channel; offline).",
    in_channels=1, num_classes=10, image_size=8,
    known_pool_sizes=(1797, None),  # one pool: splits are checked at recipe load
    target="datamodules.digits:DigitsDataModule"))
FASHION_MNIST = DATAMODULES.add_spec(DataSpec(
    name="fashion_mnist", description="Fashion-MNIST (28x28 grayscale clothing, 60,000 train + 10,000 test, 10 classes).",
    in_channels=1, num_classes=10, image_size=28, known_pool_sizes=(60000, 10000),
    target="datamodules.fashion_mnist:FashionMNISTDataModule"))
CIFAR10 = DATAMODULES.add_spec(DataSpec(
    name="cifar10",
    description="CIFAR-10 (32x32 colour, 50,000 train + 10,000 test, 10 classes); augment = crop (pad 4) + flip.",
    in_channels=3, num_classes=10, image_size=32, known_pool_sizes=(50000, 10000),
    target="datamodules.cifar:CIFAR10DataModule"))
CIFAR100 = DATAMODULES.add_spec(DataSpec(
    name="cifar100",
    description="CIFAR-100 (32x32 colour, 50,000 train + 10,000 test, 100 fine classes); augment = crop (pad 4) + flip.",
    in_channels=3, num_classes=100, image_size=32, known_pool_sizes=(50000, 10000),
    target="datamodules.cifar:CIFAR100DataModule"))
IMAGENET = DATAMODULES.add_spec(DataSpec(
    name="imagenet",
    description="ImageNet as an ImageFolder tree <data_dir>/imagenet/{train,val}/<class>/*.JPEG, read from disk.",
    in_channels=3,
    num_classes=None,  # the class folders in train/, counted when the data is read
    image_size=None,  # data.image_size, default DEFAULT_IMAGE_SIZE
    known_pool_sizes=None,  # whatever the folders hold
    target="datamodules.imagenet:ImageNetDataModule"))
