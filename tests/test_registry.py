import pytest

from bench.registry import Registry, RegistryError


def make() -> Registry:
    reg: Registry = Registry("method")
    for name in ("adv_tra", "akh", "cae", "ipguard", "uap"):
        reg.add(name, object(), description=f"{name} method\nmore")
    return reg


def test_get_and_names_sorted():
    reg = make()
    assert reg.names() == ["adv_tra", "akh", "cae", "ipguard", "uap"]
    assert "cae" in reg and "nope" not in reg
    assert reg.describe()["cae"] == "cae method"


def test_unknown_name_suggests_and_lists():
    with pytest.raises(RegistryError) as err:
        make().get("ipgaurd")
    assert str(err.value) == "Unknown method 'ipgaurd'. Did you mean 'ipguard'? Available: adv_tra, akh, cae, ipguard, uap"


def test_unknown_without_close_match_has_no_hint():
    with pytest.raises(RegistryError, match="Available") as err:
        make().get("zzzzzz")
    assert "Did you mean" not in str(err.value)


def test_duplicate_raises():
    reg = make()
    with pytest.raises(RegistryError, match="Duplicate method name 'akh'"):
        reg.register("akh")(object())


def test_real_registries_are_populated():
    from bench.methods import METHODS
    from bench.nets import ARCHS
    from bench.zoo.attacks import ATTACKS
    from datamodules import DATAMODULES

    assert {"akh", "random", "oracle_label"} <= set(METHODS.names())
    assert {"ftll", "ftal", "rtll", "rtal", "prune", "adv_train", "extract", "quantize"} <= set(ATTACKS.names())
    assert {"convnet", "lenet", "mlp", "resnet18", "resnet20", "wrn"} <= set(ARCHS.names())
    assert {"digits", "fashion_mnist", "cifar10", "cifar100", "imagenet"} <= set(DATAMODULES.names())


# -- a name written once (`name_attr`) -----------------------------------------------------------------


def named() -> Registry:
    return Registry("method", name_attr="name")


def test_bare_decorator_reads_the_class_name():
    reg = named()

    @reg.register
    class Probe:
        """Probe method."""

        name = "probe"

    assert reg.get("probe") is Probe and reg.describe() == {"probe": "Probe method."}


def test_decorator_name_is_set_on_a_class_without_one():
    reg = named()

    @reg.register("probe")
    class Probe:
        pass

    assert Probe.name == "probe" and reg.get("probe") is Probe


def test_a_subclass_does_not_register_under_its_parents_name():
    reg = named()

    class Parent:
        name = "parent"

    with pytest.raises(RegistryError, match=r"method class .*Child has no name: set `name = \"<name>\"` in its body"):
        @reg.register
        class Child(Parent):
            pass

    @reg.register("child")
    class Named(Parent):
        pass

    assert Named.name == "child" and Parent.name == "parent" and reg.names() == ["child"]


def test_two_different_names_for_one_class_are_refused():
    reg = named()
    with pytest.raises(RegistryError, match=r"says name = 'probe' but is registered as 'prob': write the name once"):
        @reg.register("prob")
        class Probe:
            name = "probe"

    assert "prob" not in reg and "probe" not in reg


def test_the_same_name_in_both_places_still_registers():
    reg = named()

    @reg.register("probe")
    class Probe:
        name = "probe"

    assert reg.get("probe") is Probe


def test_a_registry_without_name_attr_needs_a_name():
    reg: Registry = Registry("arch")
    with pytest.raises(RegistryError, match=r"Register the arch .* with a name"):
        reg.register()(object())
    thing = object()
    reg.register("thing")(thing)
    assert reg.get("thing") is thing


def test_on_register_runs_once_the_entry_is_registered():
    reg = named()
    seen = []

    class Probe:
        name = "probe"

        @classmethod
        def on_register(cls) -> None:
            seen.append((cls.name, "probe" in reg))

    reg.register(Probe)
    assert seen == [("probe", True)]


def test_registering_an_attack_names_its_own_config_only():
    from dataclasses import dataclass

    from bench.zoo.attacks import ATTACKS, AttackTrainingConfig, RemovalAttack, build_attack

    @dataclass
    class ProbeConfig(AttackTrainingConfig):
        pass

    class Probe(RemovalAttack):
        name = "probe_attack"
        Config = ProbeConfig
        test_config = None

        def _attack(self, model, source, ctx):
            raise NotImplementedError

    class Shared(RemovalAttack):
        name = "shared_attack"
        Config = AttackTrainingConfig
        test_config = None

        def _attack(self, model, source, ctx):
            raise NotImplementedError

    reg: Registry = Registry("attack", name_attr="name")
    reg.register(Probe)
    reg.register(Shared)
    assert ProbeConfig.attack_name == "probe_attack" and AttackTrainingConfig.attack_name == "attack"
    with pytest.raises(ValueError, match=r"^probe_attack\.batch_size=0 must be in \[1, inf\)"):
        ProbeConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"^attack 'ftll': ftll\.epochs=-1"):  # the built-ins' configs are named by registering
        build_attack("ftll", {"epochs": -1})
    assert all(ATTACKS.get(name).Config.attack_name == name for name in ATTACKS.names())


# -- discovery -------------------------------------------------------------------------------------------


def test_import_submodules_imports_every_module_but_helpers(tmp_path, monkeypatch):
    import sys

    from bench.registry import import_submodules

    package = tmp_path / "probe_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    record_import = "import probe_pkg\nprobe_pkg.SEEN = [*getattr(probe_pkg, 'SEEN', []), __name__]\n"
    for name in ("b_entry", "a_entry", "_private", "helper"):
        (package / f"{name}.py").write_text(record_import)
    (package / "sub" / "__init__.py").write_text(record_import)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import probe_pkg

        imported = import_submodules("probe_pkg", probe_pkg.__path__, helpers=("helper",))
        wanted = ["probe_pkg.a_entry", "probe_pkg.b_entry", "probe_pkg.sub"]
        assert imported == wanted and probe_pkg.SEEN == wanted  # sorted; `_private` and the helper left out
    finally:
        for name in [m for m in sys.modules if m == "probe_pkg" or m.startswith("probe_pkg.")]:
            del sys.modules[name]


def test_registration_order_and_modules_are_the_packages_own():
    """Discovery registers in the order the old import lines did (sorted modules; akh imports sac first)."""
    from bench.methods import METHODS
    from bench.zoo.attacks import ATTACKS

    builtin = [n for n in METHODS._items if METHODS.origin(n) == "built-in"]
    assert builtin == ["adv_tra", "sac", "akh", "cae", "cort", "ipguard", "metav", "modeldiff", "oracle_label",
                       "random", "uap"]
    assert [n for n in ATTACKS._items if ATTACKS.origin(n) == "built-in"] == \
        ["adv_train", "extract", "ftll", "ftal", "rtll", "rtal", "ftsmooth", "prune", "quantize"]
    assert METHODS.get("random").__module__ == "bench.methods.random_guard"  # no module named like the stdlib's
    assert METHODS.get("adv_tra").__module__ == "bench.methods.adv_tra"
