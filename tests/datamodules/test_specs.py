"""Datamodule specs: one source of truth for each class, a registry that imports the classes on first use.

Validation and `fpbench list datamodules` read `DataSpec`s (no Lightning); `DATAMODULES.get` and
`build_datamodule` import the class, a `pytorch_lightning.LightningDataModule` (docs/datamodules.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from bench.registry import RegistryError
from datamodules import DATAMODULES, DataConfig, DataSpec, SplitSizes, build_datamodule
from datamodules.base import validate_data_config
from datamodules.in_memory import InMemoryDataModule
from datamodules.lightning_base import FingerprintDataModule
from datamodules.specs import DataModuleRegistry
from tests.conftest import REPO


def spec_of(name: str = "made_up", **changes) -> DataSpec:
    """A valid spec for a made-up dataset, with `changes` applied."""
    fields = {"name": name, "description": "A made-up dataset.", "in_channels": 1, "num_classes": 3,
              "image_size": 4, "known_pool_sizes": (20, 10), "target": f"made_up:{name}"}
    return DataSpec(**{**fields, **changes})


class _Tiny(InMemoryDataModule):
    """Twenty 1x4x4 train images and ten test images, all zero (no data files)."""

    mean, std = (0.5,), (0.25,)

    def _load_arrays(self):
        images = torch.zeros(30, 1, 4, 4, dtype=torch.uint8)
        labels = torch.arange(30) % 3
        return images[:20], labels[:20], images[20:], labels[20:]


@pytest.fixture
def global_entry() -> Iterator[str]:
    """A name free in the global `DATAMODULES`, removed again afterwards (the registry has no public remove)."""
    name = "tiny_old_style"
    yield name
    for store in (DATAMODULES._items, DATAMODULES._descriptions, DATAMODULES._classes):
        store.pop(name, None)


# -- every registered class agrees with its spec ---------------------------------------------------
@pytest.mark.parametrize("name", DATAMODULES.names())
def test_class_takes_its_attributes_from_its_spec(name: str) -> None:
    spec, cls = DATAMODULES.spec(name), DATAMODULES.get(name)
    assert cls.spec is spec and cls.__dict__["spec"] is spec  # its own spec, not one inherited
    assert spec.target == f"{cls.__module__}:{cls.__qualname__}"
    assert (cls.name, cls.in_channels, cls.known_pool_sizes) == (spec.name, spec.in_channels, spec.known_pool_sizes)
    if spec.num_classes is not None:
        assert cls.num_classes == spec.num_classes
    if spec.image_size is not None:
        assert cls.image_size == spec.image_size
    assert len(cls.mean) == len(cls.std) == spec.in_channels
    assert DATAMODULES.describe()[name] == spec.description != ""


@pytest.mark.parametrize("name", DATAMODULES.names())
def test_build_datamodule_gives_a_lightning_datamodule(name: str, tmp_path: Path) -> None:
    """`trainer.fit(model, datamodule=dm)` needs this (Lightning checks isinstance); no data is read here."""
    dm = build_datamodule(DataConfig(name=name, image_size=16), tmp_path, 0)
    assert isinstance(dm, pl.LightningDataModule) and isinstance(dm, FingerprintDataModule)
    assert dm.spec.shape(16) == (dm.in_channels, dm.image_size, dm.image_size)


def test_imagenet_sizes_come_from_the_recipe_where_its_spec_has_none(tmp_path: Path) -> None:
    spec = DATAMODULES.spec("imagenet")
    assert spec.num_classes is None and spec.image_size is None
    assert spec.shape(None) == (3, 224, 224) and spec.shape(64) == (3, 64, 64)
    assert build_datamodule(DataConfig(name="imagenet"), tmp_path, 0).image_size == 224


# -- importing the package imports no Lightning -----------------------------------------------------
PROBE = """
import json, sys
def lightning(): return "pytorch_lightning" in sys.modules
import datamodules
from datamodules import DATAMODULES
from datamodules.base import DataConfig, validate_data_config
steps = {"import": lightning()}
validate_data_config(DataConfig(name="digits"), DATAMODULES.spec("fashion_mnist"))
steps["spec, describe, validate"] = bool(DATAMODULES.describe()) and lightning()
DATAMODULES.get("digits")
steps["get"] = lightning()
print(json.dumps(steps))
"""


def test_the_package_and_its_specs_import_no_lightning_until_a_class_is_asked_for() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"import": False, "spec, describe, validate": False, "get": True}


# -- the lazy registry ---------------------------------------------------------------------------------
def test_get_imports_the_target_module_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spec lives in a light module, the class in another that only `get` imports."""
    (tmp_path / "lazy_tiny_spec.py").write_text(
        "from datamodules.specs import DataSpec\n"
        "SPEC = DataSpec(name='lazy_tiny', description='d', in_channels=1, num_classes=3, image_size=4,\n"
        "                known_pool_sizes=None, target='lazy_tiny:Lazy')\n")
    (tmp_path / "lazy_tiny.py").write_text(
        "from datamodules.in_memory import InMemoryDataModule\n"
        "from lazy_tiny_spec import SPEC\n"
        "class Lazy(InMemoryDataModule):\n"
        "    spec = SPEC\n"
        "    def _load_arrays(self):\n"
        "        raise NotImplementedError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = DataModuleRegistry()
        spec = registry.add_spec(__import__("lazy_tiny_spec").SPEC)
        assert registry.describe() == {"lazy_tiny": "d"} and "lazy_tiny" not in sys.modules
        cls = registry.get("lazy_tiny")
        assert "lazy_tiny" in sys.modules and cls.__name__ == "Lazy" and cls.spec is spec
        assert registry.get("lazy_tiny") is cls
    finally:
        for module in ("lazy_tiny", "lazy_tiny_spec"):
            sys.modules.pop(module, None)


def test_unknown_name_suggests_the_closest_for_spec_and_class() -> None:
    for lookup in (DATAMODULES.spec, DATAMODULES.get):
        with pytest.raises(RegistryError, match=r"Unknown datamodule 'digts'\. Did you mean 'digits'\? Available: "):
            lookup("digts")
    assert "digts" not in DATAMODULES and "digits" in DATAMODULES


def test_a_target_that_cannot_be_imported_names_the_fix() -> None:
    registry = DataModuleRegistry()
    registry.add_spec(spec_of("ghost", target="no_such_module_here:Ghost"))
    with pytest.raises(RegistryError, match=r"datamodule 'ghost': its class no_such_module_here:Ghost cannot be "
                                            r"imported .*Fix: make DataSpec.target name"):
        registry.get("ghost")


def test_a_class_that_does_not_carry_the_spec_is_refused() -> None:
    """The target names the digits class, which carries the digits spec, not this one."""
    registry = DataModuleRegistry()
    registry.add_spec(spec_of("impostor", target="datamodules.digits:DigitsDataModule"))
    with pytest.raises(RegistryError, match=r"does not take its attributes from the registered spec\. Fix: set "
                                            r"`spec = <that DataSpec>`"):
        registry.get("impostor")


def test_duplicate_spec_name_raises() -> None:
    registry = DataModuleRegistry()
    registry.add_spec(spec_of("twice"))
    with pytest.raises(RegistryError, match="Duplicate datamodule name 'twice'"):
        registry.add_spec(spec_of("twice", description="another"))


@pytest.mark.parametrize(("changes", "match"), [
    ({"target": "made_up.Class"}, r"target='made_up.Class' must be 'package.module:Class'"),
    ({"in_channels": 0}, r"in_channels=0 must be an int >= 1\."),
    ({"num_classes": 2.5}, r"num_classes=2.5 must be an int >= 1, or None"),
    ({"known_pool_sizes": (0, None)}, r"known_pool_sizes=\(0, None\) must be"),
    ({"name": ""}, r"give the recipe's data.name"),
])
def test_a_bad_spec_names_the_field(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spec_of(**changes)


# -- one source of truth on the class -----------------------------------------------------------------
def test_a_class_with_a_spec_takes_its_values_and_refuses_a_second_copy() -> None:
    class Tiny(_Tiny):
        pass

    class WithSpec(_Tiny):
        spec = spec_of("tiny_spec")

    assert (WithSpec.name, WithSpec.in_channels, WithSpec.num_classes, WithSpec.image_size,
            WithSpec.known_pool_sizes) == ("tiny_spec", 1, 3, 4, (20, 10))
    assert Tiny.name == "" and Tiny.spec is None  # no spec of its own: nothing set
    with pytest.raises(TypeError, match=r"Twice sets num_classes in its body and has spec 'tiny_spec' "
                                        r"\(num_classes=3\)\. Fix: set it in the DataSpec only\."):
        class Twice(_Tiny):
            spec = spec_of("tiny_spec")
            num_classes = 3


def test_registering_a_class_with_its_own_spec_registers_the_spec_too() -> None:
    registry = DataModuleRegistry()

    @registry.register("tiny_spec")
    class WithSpec(_Tiny):
        spec = spec_of("tiny_spec")

    assert registry.spec("tiny_spec") is WithSpec.spec and registry.get("tiny_spec") is WithSpec
    with pytest.raises(RegistryError, match="registered as 'other' but its spec is named 'tiny_spec'"):
        registry.add("other", WithSpec)


# -- a class registered the older way (attributes in its body, no spec) ----------------------------
def test_old_style_registration_still_validates_builds_and_lists(global_entry: str, tmp_path: Path) -> None:
    @DATAMODULES.register(global_entry)
    class OldStyle(_Tiny):
        """An old-style datamodule: attributes in the body."""

        name = global_entry
        num_classes = 3
        in_channels = 1
        image_size = 4
        known_pool_sizes = (20, 10)

    spec = DATAMODULES.spec(global_entry)
    assert OldStyle.spec is spec and spec.target.endswith(":" + OldStyle.__qualname__)
    assert (spec.in_channels, spec.num_classes, spec.image_size, spec.known_pool_sizes) == (1, 3, 4, (20, 10))
    assert DATAMODULES.describe()[global_entry] == "An old-style datamodule: attributes in the body."
    with pytest.raises(ValueError, match=rf"data.splits ask for .* {global_entry}'s train pool has 20"):
        validate_data_config(DataConfig(name=global_entry, splits=SplitSizes(owner=15, attacker=5, independent=5)),
                             spec)
    dm = build_datamodule(DataConfig(name=global_entry, splits=SplitSizes(owner=10, attacker=4, independent=6)),
                          tmp_path, 0)
    assert type(dm) is OldStyle and isinstance(dm, pl.LightningDataModule)
    dm.setup()
    assert dm.split_size("owner") == 10 and dm.split_size("test") == 10


def test_old_style_registration_with_a_missing_or_clashing_attribute_names_the_fix() -> None:
    registry = DataModuleRegistry()
    with pytest.raises(RegistryError, match=r"in_channels=0 must be an int >= 1\. Fix: set it on the class, or "
                                            r"better give the class a DataSpec"):
        @registry.register("no_channels")
        class NoChannels(_Tiny):
            num_classes = 3

    with pytest.raises(RegistryError, match="has name='one' but is registered as 'two'"):
        @registry.register("two")
        class Named(_Tiny):
            name = "one"
            in_channels = 1
