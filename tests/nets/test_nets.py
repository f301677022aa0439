"""Architectures: the Classifier contract for every registered arch, build_model's checks, and learning."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from bench.nets import (
    ARCHS,
    ArchTestConfig,
    Classifier,
    Normalize,
    arch_descriptions,
    arch_names,
    arch_test_config,
    build_model,
    check_arch,
    count_parameters,
)
from bench.registry import RegistryError

# (in_channels, image_size, num_classes): digits, MNIST-sized and CIFAR-sized inputs.
SHAPES = [(1, 8, 10), (1, 28, 10), (3, 32, 100)]
# An arch too big for the fast suite at full size (WRN-40-10: 56M parameters) says so itself:
# `@tested_with(ArchTestConfig(fast_max_image_size=8))` beside its registration; larger shapes are slow tests.


def shape_cases() -> list:
    cases = []
    for arch in ARCHS.names():
        for channels, size, classes in SHAPES:
            limit = arch_test_config(arch).fast_max_image_size
            marks = [pytest.mark.slow] if limit is not None and size > limit else []
            case_id = f"{arch}-{channels}x{size}x{size}"
            cases.append(pytest.param(arch, channels, size, classes, marks=marks, id=case_id))
    return cases


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Small CPU work is dominated by thread sync; one thread is 5-20x faster when the CPU is shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(arch: str, channels: int = 1, size: int = 8, classes: int = 10, **kwargs) -> Classifier:
    return build_model(
        arch,
        in_channels=channels,
        num_classes=classes,
        image_size=size,
        mean=[0.5] * channels,
        std=[0.25] * channels,
        **kwargs,
    )


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("arch,channels,size,classes", shape_cases())
def test_output_shape_on_unit_pixels(arch: str, channels: int, size: int, classes: int) -> None:
    model = make(arch, channels, size, classes, seed=0, params=arch_test_config(arch).params)
    x = torch.rand(2, channels, size, size)  # [0,1] pixels, as every model receives them
    logits = model(x)
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, classes)


@pytest.mark.parametrize("arch", ARCHS.names())
def test_test_config_suits_the_arch(arch: str) -> None:
    """An arch's tiny test configuration names params it accepts, and a fast shape the tests build."""
    config = arch_test_config(arch)
    check_arch(arch, config.params)
    smallest = min(size for _, size, _ in SHAPES)
    assert config.fast_max_image_size is None or config.fast_max_image_size >= smallest, (
        f"{arch}: fast_max_image_size={config.fast_max_image_size} leaves it no fast shape (smallest: {smallest})")


def test_heavy_arch_declares_its_test_config_and_larger_shapes_are_slow() -> None:
    assert arch_test_config("wrn40_10").fast_max_image_size == 8
    assert arch_test_config("convnet") == ArchTestConfig()
    slow = {case.id for case in shape_cases() if case.marks}
    assert slow == {"wrn40_10-1x28x28", "wrn40_10-3x32x32"}


@pytest.mark.parametrize("arch", ARCHS.names())
def test_normalize_is_first_and_saved(arch: str) -> None:
    model = make(arch, 3, 32, seed=0)
    assert isinstance(model, Classifier)
    assert isinstance(next(iter(model.children())), Normalize)
    state = model.state_dict()
    assert torch.allclose(state["normalize.mean"].flatten(), torch.full((3,), 0.5))
    assert torch.allclose(state["normalize.std"].flatten(), torch.full((3,), 0.25))
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 10


@pytest.mark.parametrize("arch", ARCHS.names())
def test_seed_makes_init_deterministic(arch: str) -> None:
    first, again, other = make(arch, seed=3), make(arch, seed=3), make(arch, seed=4)
    assert same_state(first, again)
    assert not same_state(first, other)


@pytest.mark.parametrize("arch", [*ARCHS.names(), "timm:resnet10t"])
def test_seeded_build_leaves_global_rng_alone(arch: str) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    make(arch, seed=0)
    assert torch.equal(torch.get_rng_state(), before)


def test_every_arch_has_a_description() -> None:
    descriptions = arch_descriptions()
    assert set(ARCHS.names()) < set(descriptions)
    assert all(descriptions.values())
    assert arch_names() == [*ARCHS.names(), "timm:<name>", "factory:<package.module:function>"]


def test_timm_model_with_one_channel() -> None:
    model = make("timm:resnet10t", 1, 28, 7, seed=0)
    assert same_state(model, make("timm:resnet10t", 1, 28, 7, seed=0))
    assert isinstance(next(iter(model.children())), Normalize)
    assert model.head.in_features == 512
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 7)


def test_timm_feature_dim_follows_hidden_head() -> None:
    # MobileNetV3 pools, then applies a 1024-wide layer: the head must take that, not num_features.
    model = make("timm:mobilenetv3_small_050", 3, 32, 10, seed=0)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_timm_params_reach_create_model() -> None:
    model = make("timm:test_vit", 3, 32, 10, params={"img_size": 32}, seed=0)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_arch_suggests_a_name() -> None:
    with pytest.raises(RegistryError, match="Did you mean 'convnet'"):
        make("convnt")


def test_unknown_timm_model_suggests_a_name() -> None:
    with pytest.raises(RegistryError, match="Did you mean.*resnet18"):
        make("timm:resnet18x")


@pytest.mark.parametrize("bad", [{"pretrained": True}, {"num_classes": 5}, {"bogus_key": 1}])
def test_bad_timm_params_raise_value_error(bad: dict) -> None:
    with pytest.raises(ValueError, match="timm:resnet10t"):
        make("timm:resnet10t", params=bad)


def test_unknown_param_names_accepted_keys() -> None:
    with pytest.raises(ValueError) as error:
        make("convnet", params={"widht": 32})
    message = str(error.value)
    assert "convnet" in message and "widht" in message
    assert "width" in message.replace("widht", "") and "hidden" in message


def test_positional_args_are_not_params() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        make("mlp", params={"num_classes": 3})


def test_params_change_the_model() -> None:
    assert make("convnet", params={"width": 8}).head.in_features == 64
    assert make("convnet", params={"hidden": 32}).head.in_features == 32
    assert make("mlp", params={"depth": 0}).head.in_features == 64
    assert make("lenet", params={"activation": "tanh"})(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("depth", [15, 6, 0])
def test_wrn_depth_must_be_6n_plus_4(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        make("wrn", params={"depth": depth})


def test_bad_param_values_raise() -> None:
    with pytest.raises(ValueError, match="activation"):
        make("lenet", params={"activation": "gelu"})
    with pytest.raises(ValueError, match="width"):
        make("convnet", params={"width": 0})


def test_mean_std_must_match_channels() -> None:
    with pytest.raises(ValueError, match="in_channels=3"):
        build_model("convnet", in_channels=3, num_classes=10, image_size=32, mean=[0.5], std=[0.5])


def test_parameter_counts_match_the_papers() -> None:
    # ResNet-20 0.27M, ResNet-18 11.2M, WRN-16-4 2.7M (CIFAR, 10 classes).
    assert 260_000 < count_parameters(make("resnet20", 3, 32)) < 280_000
    assert 11_100_000 < count_parameters(make("resnet18", 3, 32)) < 11_250_000
    assert 2_700_000 < count_parameters(make("wrn", 3, 32)) < 2_800_000
    model = make("mlp")
    model.features.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 256 * 10 + 10


# --- learning: the small families really learn sklearn digits (8x8, 1,437 train / 360 test) ---


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


@pytest.mark.parametrize("arch,target", [("convnet", 0.95), ("lenet", 0.90), ("mlp", 0.90)])
def test_small_archs_learn_digits(arch: str, target: float, digits: tuple) -> None:
    x_train, y_train, x_test, y_test = digits
    mean, std = x_train.mean().item(), x_train.std().item()
    model = build_model(arch, in_channels=1, num_classes=10, image_size=8, mean=[mean], std=[std], seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= target, f"{arch}: test accuracy {accuracy:.3f} < {target}"
