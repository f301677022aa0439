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
