"""Removal attacks on digits: every registered attack (generic contract) plus each one's acceptance checks."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.quantization import (
    FakeQuantize,
    MinMaxObserver,
    PerChannelMinMaxObserver,
    default_per_channel_weight_observer,
)
from torch.utils.data import DataLoader, TensorDataset

from bench.nets import build_model
from bench.training import (
    ClassifierModule,
    OptimizerConfig,
    PGDConfig,
    ScheduleConfig,
    TrainerConfig,
    accuracy,
    fit,
    pgd_attack,
)
from bench.zoo.attacks import ATTACKS, AttackContext, AttackOutput, RemovalAttack, build_attack
from bench.zoo.attacks.prune import prunable_weights
from datamodules import DataConfig, SplitSizes, build_datamodule

ADV_EPS = 0.1


def state_hash(model: nn.Module) -> str:
    """sha256 over the names and bytes of every state_dict entry."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def small_config(cls: type[RemovalAttack]) -> Any:
    """The small config an attack class carries (None: its defaults); fails naming the attack when it has none."""
    if not hasattr(cls, "test_config"):
        pytest.fail(f"attack '{cls.name}' ({cls.__module__}.{cls.__qualname__}) has no `test_config`: set it in the "
                    f"class to a small {cls.Config.__name__}(...) that runs in seconds on 8x8 digits (one or two "
                    "epochs), or to None for the defaults (docs/extending.md)")
    return cls.test_config


def fast_params(name: str) -> dict:
    """The params of the attack's own small config (`test_config`), as a recipe would write them."""
    config = small_config(ATTACKS.get(name))
    return {} if config is None else asdict(config)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Digits, a trained convnet source (>= 95% test accuracy), the attack context, the source's hash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8x8 models: intra-op threads only add overhead (10x on a busy machine)
    tmp = tmp_path_factory.mktemp("attacks")
    splits = SplitSizes(owner=0.4, attacker=0.2, independent=0.1, test=None)  # test: the remaining 0.3
    dm = build_datamodule(DataConfig(name="digits", splits=splits), data_dir=str(tmp), seed=0)
    dm.setup()
    source = build_model("convnet", in_channels=dm.in_channels, num_classes=dm.num_classes, image_size=dm.image_size,
                         mean=dm.mean, std=dm.std, seed=0)
    x, y = dm.tensors("owner")
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    module = ClassifierModule(source, OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0), ScheduleConfig(name="cosine"), 8)
    trainer = TrainerConfig(enable_progress_bar=False)
    fit(module, loader, trainer, root_dir=str(tmp), seed=0, progress=False)
    x_test, y_test = dm.tensors("test")
    source_acc = accuracy(source, x_test, y_test)
    assert source_acc >= 0.95, f"source test accuracy {source_acc:.3f} < 0.95"
    ctx = AttackContext(datamodule=dm, trainer=trainer, root_dir=str(tmp), progress=False, source_arch="convnet")
    yield {"dm": dm, "source": source, "ctx": ctx, "hash": state_hash(source), "test": (x_test, y_test),
           "source_acc": source_acc, "tmp": tmp, "runs": {}}
    torch.set_num_threads(threads)


def run(setup: dict, name: str, params: dict | None = None) -> AttackOutput:
    """Apply `name` (its `test_config` unless params are given) once per module; assert the source is untouched."""
    params = fast_params(name) if params is None else params
    key = (name, json.dumps(build_attack(name, params).config_dict(), sort_keys=True))  # one run per config
    if key not in setup["runs"]:
        setup["runs"][key] = build_attack(name, params).apply(setup["source"], setup["ctx"])
    assert state_hash(setup["source"]) == setup["hash"], f"{name} mutated the source"
    return setup["runs"][key]


def changed(a: nn.Module, b: nn.Module) -> set[str]:
    """state_dict keys whose tensors differ between two models of one architecture."""
    sa, sb = a.state_dict(), b.state_dict()
    return {k for k in sa if not torch.equal(sa[k], sb[k])}


def measured_sparsity(model: nn.Module) -> float:
    weights = [m.weight.detach() for _, m in prunable_weights(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    model.eval()
    x_adv = pgd_attack(model, x, y, PGDConfig(eps=eps, steps=10, random_start=False))
    return accuracy(model, x_adv, y)


# -- every registered attack --------------------------------------------------------------------------


def test_registry_is_complete() -> None:
    assert {"ftll", "ftal", "rtll", "rtal", "prune", "adv_train", "extract", "quantize"} <= set(ATTACKS.names())


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_has_a_test_config(name: str) -> None:
    cls = ATTACKS.get(name)
    config = small_config(cls)
    assert config is None or isinstance(config, cls.Config), \
        f"attack '{name}': test_config is a {type(config).__name__}, not a {cls.Config.__name__} or None"


def test_an_attack_without_a_test_config_fails_naming_it() -> None:
    class Bare(RemovalAttack):
        """Bare (test): an attack that forgot its test config."""

        name = "bare"
        Config = ATTACKS.get("quantize").Config

        def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
            return AttackOutput(model)

    with pytest.raises(pytest.fail.Exception, match=r"attack 'bare' \(.*Bare\) has no `test_config`: set it"):
        small_config(Bare)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_contract(setup: dict, name: str) -> None:
    out = run(setup, name)
    x_test, y_test = setup["test"]
    assert out.model is not setup["source"]
    with torch.no_grad():
        assert out.model.eval()(x_test[:7]).shape == setup["source"].eval()(x_test[:7]).shape
    assert out.train_seconds >= 0
    json.dumps(out.info)  # the manifest records it
    attack = build_attack(name, fast_params(name))
    assert attack.provenance().startswith(f"{name}(")
    json.dumps(attack.config_dict())
    assert accuracy(out.model, x_test, y_test) > 0.5, f"{name} destroyed the model"
    assert all(p.requires_grad for p in out.model.parameters()), "a chained attack would find frozen layers"


@pytest.mark.parametrize("name", ATTACKS.names())
def test_defaults_validate_and_seed_exists(name: str) -> None:
    attack = build_attack(name, {})
    assert isinstance(attack, RemovalAttack)
    assert "seed" in attack.config_dict()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_unknown_key_names_valid_keys(name: str) -> None:
    with pytest.raises(ValueError, match=r"Unknown key 'bogus'.*Valid keys: .*seed"):
        build_attack(name, {"bogus": 1})


def test_attacks_chain_prune_then_quantize(setup: dict) -> None:
    pruned = run(setup, "prune")
    chained = build_attack("quantize", {}).apply(pruned.model, setup["ctx"])
    assert measured_sparsity(chained.model) == pytest.approx(measured_sparsity(pruned.model))  # 0 stays on the grid


def test_same_config_same_weights(setup: dict) -> None:
    again = build_attack("ftal", fast_params("ftal")).apply(setup["source"], setup["ctx"])
    assert not changed(run(setup, "ftal").model, again.model)


# -- fine-tuning ----------------------------------------------------------------------------------------


def test_ftll_changes_only_the_head(setup: dict) -> None:
    diff = changed(setup["source"], run(setup, "ftll").model)
    assert diff and all(k.startswith("head.") for k in diff), diff  # BN running stats included


def test_ftal_changes_features_and_batchnorm_statistics(setup: dict) -> None:
    diff = changed(setup["source"], run(setup, "ftal").model)
    assert any(k.startswith("features.") and k.endswith(".weight") for k in diff)
    assert any(k.endswith("running_mean") for k in diff), "BatchNorm stayed in eval mode during FTAL"


def test_rtll_reinitialises_the_head(setup: dict) -> None:
    out = run(setup, "rtll", {"epochs": 0})
    expected = build_model("convnet", in_channels=1, num_classes=10, image_size=8, mean=(0.0,), std=(1.0,))
    expected.reset_head(torch.Generator().manual_seed(0))
    assert torch.equal(out.model.head.weight, expected.head.weight)
    assert not torch.equal(out.model.head.weight, setup["source"].head.weight)


def test_rtll_trains_the_head_and_only_the_head(setup: dict) -> None:
    untrained = run(setup, "rtll", {"epochs": 0}).model
    trained = run(setup, "rtll").model
    assert {"head.weight", "head.bias"} <= changed(untrained, trained)
    diff = changed(setup["source"], trained)
    assert diff and all(k.startswith("head.") for k in diff), diff
    assert accuracy(trained, *setup["test"]) > 0.8


def test_rtal_reinitialises_and_changes_the_features(setup: dict) -> None:
    diff = changed(setup["source"], run(setup, "rtal").model)
    assert {"head.weight", "head.bias"} <= diff
    assert any(k.startswith("features.") for k in diff)


# -- pruning --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope, rate, epochs", [("global", 0.5, 1), ("layer", 0.3, 0)])
def test_prune_sparsity_survives_finetuning_and_safetensors(setup: dict, scope: str, rate: float, epochs: int) -> None:
    params = {"rate": rate, "scope": scope, "epochs": epochs} if scope != "global" else fast_params("prune")
    out = run(setup, "prune", params)
    assert abs(out.info["sparsity"] - rate) <= 0.01
    assert abs(measured_sparsity(out.model) - rate) <= 0.01
    if scope == "layer":
        for _, module in prunable_weights(out.model):
            assert abs(float((module.weight == 0).float().mean()) - rate) <= 0.01
    assert set(out.model.state_dict()) == set(setup["source"].state_dict())  # masks removed, nothing extra
    path = Path(setup["tmp"]) / f"pruned_{scope}.safetensors"
    save_file({k: v.contiguous() for k, v in out.model.state_dict().items()}, str(path))
    dm = setup["dm"]
    reloaded = build_model("convnet", in_channels=dm.in_channels, num_classes=dm.num_classes, image_size=dm.image_size,
                           mean=dm.mean, std=dm.std)
    reloaded.load_state_dict(load_file(str(path)))
    assert measured_sparsity(reloaded) == pytest.approx(measured_sparsity(out.model))


# -- quantisation ---------------------------------------------------------------------------------------


def test_quantize_int8_per_channel_error_within_half_a_step(setup: dict) -> None:
    out = run(setup, "quantize")
    source_layers = dict(prunable_weights(setup["source"]))
    for name, module in prunable_weights(out.model):
        w, q = source_layers[name].weight.detach(), module.weight.detach()
        scale = w.flatten(1).abs().max(dim=1).values / 127.5  # PyTorch's symmetric scale on [-128, 127]
        shape = (-1,) + (1,) * (w.dim() - 1)
        assert ((q - w).abs() <= scale.view(shape) / 2 + 1e-7).all(), name
        for row in q.flatten(1):
            assert row.unique().numel() <= 256
        if module.bias is not None:  # biases stay float32 as they were
            assert torch.equal(module.bias, source_layers[name].bias)
    assert out.info["max_abs_error"] > 0
    assert abs(accuracy(out.model, *setup["test"]) - setup["source_acc"]) < 0.02


def _pytorch_fake_quant(scope: str, symmetric: bool) -> FakeQuantize:
    """PyTorch's own QAT module, configured as `quantize` claims to be (qint8 on [-128, 127])."""
    if scope == "per_channel":
        qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        return FakeQuantize(observer=PerChannelMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
                            qscheme=qscheme, ch_axis=0)
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    return FakeQuantize(observer=MinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8, qscheme=qscheme)


@pytest.mark.parametrize("scope", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_quantize_int8_equals_pytorch_fake_quantize_bit_for_bit(setup: dict, scope: str, symmetric: bool) -> None:
    out = run(setup, "quantize", {"dtype": "int8", "scope": scope, "symmetric": symmetric})
    source_layers = dict(prunable_weights(setup["source"]))
    for name, module in prunable_weights(out.model):
        expected = _pytorch_fake_quant(scope, symmetric)(source_layers[name].weight.detach())
        assert torch.equal(module.weight, expected), f"{name}: {(module.weight != expected).float().mean():.1%} differ"


def test_quantize_default_is_pytorchs_default_weight_observer_as_deployed(setup: dict) -> None:
    """The default grid is what `torch.ao.quantization` converts a conv/linear weight to (x86/fbgemm)."""
    out = run(setup, "quantize")
    source_layers = dict(prunable_weights(setup["source"]))
    for name, module in prunable_weights(out.model):
        weight = source_layers[name].weight.detach()
        observer = default_per_channel_weight_observer()
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        with warnings.catch_warnings():  # quantized tensors are deprecated in torch 2.14, still the convert path
            warnings.simplefilter("ignore", UserWarning)
            deployed = torch.quantize_per_channel(weight, scale, zero_point, 0, torch.qint8).dequantize()
        assert torch.equal(module.weight, deployed), name
        assert int(zero_point.abs().max()) == 0  # symmetric


def test_quantize_int8_ids_change_and_fp16_ids_do_not() -> None:
    """int8's grid changed (revision 1), so its models must get new ids; fp16's output did not."""
    assert build_attack("quantize", {"dtype": "int8"}).output_revision() == 1
    assert build_attack("quantize", {"dtype": "int8", "symmetric": False}).output_revision() == 1
    assert build_attack("quantize", {"dtype": "fp16"}).output_revision() == 0
    assert all(build_attack(name, {}).output_revision() == 0 for name in ATTACKS.names() if name != "quantize")


def test_quantize_fp16(setup: dict) -> None:
    out = run(setup, "quantize", {"dtype": "fp16"})
    source_layers = dict(prunable_weights(setup["source"]))
    for name, module in prunable_weights(out.model):
        assert module.weight.dtype == torch.float32
        assert torch.equal(module.weight, source_layers[name].weight.half().float())
    assert 0 < out.info["max_abs_error"] < 1e-2
    assert build_attack("quantize", {"dtype": "fp16"}).provenance() == "quantize(dtype=fp16)"


# -- extraction -----------------------------------------------------------------------------------------


def test_extract_agrees_with_source_and_shares_no_weights(setup: dict) -> None:
    out = run(setup, "extract")
    x_test, _ = setup["test"]
    with torch.no_grad():
        agreement = (out.model.eval()(x_test).argmax(1) == setup["source"].eval()(x_test).argmax(1)).float().mean()
    assert agreement >= 0.8, f"agreement {agreement:.3f}"
    for substitute_param in out.model.parameters():
        for source_param in setup["source"].parameters():
            assert not (substitute_param.shape == source_param.shape and torch.equal(substitute_param, source_param))
    assert out.info["queries"] == setup["dm"].split_size("attacker")
    assert out.info["arch"] == "convnet"


def test_extract_query_budget_and_soft_labels(setup: dict) -> None:
    out = run(setup, "extract", {"query_budget": 100, "labels_kind": "soft", "epochs": 1, "arch": "mlp"})
    assert out.info["queries"] == 100
    assert out.info["arch"] == "mlp"


def test_extract_without_an_architecture_fails_before_training(setup: dict) -> None:
    ctx = AttackContext(datamodule=setup["dm"], trainer=setup["ctx"].trainer, root_dir=setup["ctx"].root_dir, progress=False)
    with pytest.raises(ValueError, match="source_arch"):
        build_attack("extract", {}).apply(setup["source"], ctx)


# -- adversarial training -------------------------------------------------------------------------------


def test_adv_train_is_more_robust_than_the_source(setup: dict) -> None:
    out = run(setup, "adv_train")
    x_test, y_test = setup["test"]
    before = pgd_accuracy(setup["source"], x_test, y_test, ADV_EPS)
    after = pgd_accuracy(out.model, x_test, y_test, ADV_EPS)
    assert after > before, f"PGD accuracy at eps {ADV_EPS}: source {before:.3f}, adv_train {after:.3f}"


# -- training data follows the recipe (data.augment) --------------------------------------------------


class BatchSpy(AttackContext):
    """An AttackContext whose `fit` records two epochs of the batches the attack would train on, and trains nothing."""

    def fit(self, module: ClassifierModule, loader: DataLoader, seed: int) -> float:
        torch.manual_seed(seed)  # what Lightning's seed_everything does before the epochs
        self.epochs = [[(x.clone(), y.clone()) for x, y in loader] for _ in range(2)]
        return 0.0


def spy_batches(setup: dict, augment: bool, name: str, params: dict) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    splits = SplitSizes(owner=0.4, attacker=0.2, independent=0.1, test=None)  # the `setup` fixture's splits
    dm = build_datamodule(DataConfig(name="digits", splits=splits, augment=augment), data_dir=str(setup["tmp"]), seed=0)
    spy = BatchSpy(datamodule=dm, trainer=setup["ctx"].trainer, root_dir=setup["ctx"].root_dir, progress=False,
                   source_arch="convnet")
    build_attack(name, params).apply(setup["source"], spy)
    return spy.epochs


def _raw_lookup(setup: dict) -> dict[bytes, int]:
    x, y = setup["dm"].tensors("attacker")
    return {image.numpy().tobytes(): int(label) for image, label in zip(x, y)}


def test_attack_trains_on_the_raw_split_when_augment_is_off(setup: dict) -> None:
    raw = _raw_lookup(setup)
    epochs = spy_batches(setup, False, "ftal", {"epochs": 1})
    for batches in epochs:
        seen = [(image.numpy().tobytes(), int(label)) for x, y in batches for image, label in zip(x, y)]
        assert len(seen) == setup["dm"].split_size("attacker")
        assert all(raw.get(image) == label for image, label in seen)  # every sample is a raw one, with its label
    assert torch.equal(torch.cat([x for x, _ in epochs[0]]).sum(0), torch.cat([x for x, _ in epochs[1]]).sum(0))


@pytest.mark.parametrize("name, params", [("ftal", {"epochs": 1, "labels": "source"}),
                                          ("extract", {"epochs": 1, "labels_kind": "soft", "query_budget": 200})])
def test_attack_trains_on_augmented_batches_when_the_recipe_says_augment(setup: dict, name: str, params: dict) -> None:
    raw = _raw_lookup(setup)
    x_raw, _ = setup["dm"].tensors("attacker", params.get("query_budget"))
    epochs = spy_batches(setup, True, name, params)
    first, second = (torch.cat([x for x, _ in batches]) for batches in epochs)
    assert len(first) == len(x_raw)
    untouched = sum(image.numpy().tobytes() in raw for image in first)
    assert untouched < 0.5 * len(first), f"{untouched}/{len(first)} training images are raw split images"
    assert not torch.equal(first.sum(0), second.sum(0)), "the same crops in every epoch"
    assert first.min() >= 0 and first.max() <= 1  # augmentation keeps [0,1] pixels
    # labels: the source's answers on the clean samples, one per sample, whatever the crop
    with torch.no_grad():
        logits = setup["source"].eval()(x_raw)
    targets = torch.cat([y for _, y in epochs[0]])
    if name == "extract":
        expected = (logits / 4.0).softmax(dim=1)  # extract's default temperature
        assert torch.allclose(targets.sum(0), expected.sum(0), atol=1e-4)
    else:
        assert torch.equal(targets.bincount(minlength=10), logits.argmax(1).bincount(minlength=10))


# -- configuration --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, params, message", [
    ("prune", {"rate": 1.0}, r"prune\.rate=1\.0 must be in \[0, 1\)"),
    ("prune", {"rate": -0.1}, r"prune\.rate=-0\.1 must be in \[0, 1\)"),
    ("prune", {"scope": "row"}, r"prune\.scope='row' is not one of global, layer"),
    ("adv_train", {"eps": -0.1}, r"adv_train\.eps=-0\.1 must be in \(0, 1\]"),
    ("adv_train", {"adv_ratio": 0.0}, r"adv_train\.adv_ratio=0\.0 must be in \(0, 1\]"),
    ("ftll", {"labels": "foo"}, r"ftll\.labels='foo' is not one of ground_truth, source"),
    ("ftal", {"epochs": -1}, r"ftal\.epochs=-1 must be >= 0"),
    ("rtal", {"split": "test"}, r"rtal\.split='test' is not one of attacker, owner, independent"),
    ("rtll", {"optimizer": {"lr": 0}}, r"rtll\.optimizer\.lr=0\.0 must be > 0"),
    ("ftll", {"epochs": "five"}, r"ftll\.epochs='five' has the wrong type: expected int"),
    ("ftll", {"optimizer": {"lrr": 0.1}}, r"Unknown key 'optimizer\.lrr'.*Did you mean 'lr'\?.*Valid keys: name, lr"),
    ("ftll", {"optimizer": 0.1}, r"ftll\.optimizer=0\.1 has the wrong type"),
    ("extract", {"labels_kind": "logits"}, r"extract\.labels_kind='logits' is not one of hard, soft"),
    ("extract", {"labels": "ground_truth"}, r"extract\.labels='ground_truth' is not allowed"),
    ("extract", {"temperature": 0}, r"extract\.temperature=0\.0 must be in \(0, inf\)"),
    ("extract", {"query_budget": 0}, r"extract\.query_budget=0 must be in \[1, inf\)"),
    ("extract", {"arch": "lenett"}, r"extract\.arch='lenett'.*Did you mean 'lenet'"),
    ("quantize", {"dtype": "int4"}, r"quantize\.dtype='int4' is not one of int8, fp16"),
])
def test_bad_config_fails_naming_the_field(name: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_attack(name, params)


def test_provenance_shows_key_and_non_default_params() -> None:
    assert build_attack("ftll", {}).provenance() == "ftll(epochs=5,lr=0.001)"
    assert build_attack("rtal", {}).provenance() == "rtal(epochs=5,lr=0.01)"
    chained = build_attack("prune", {"rate": 0.8, "scope": "layer", "optimizer": {"lr": 0.01}}).provenance()
    assert chained == "prune(rate=0.8,scope=layer)->finetune(epochs=2,lr=0.01)"
    assert build_attack("prune", {"epochs": 0}).provenance() == "prune(rate=0.4,scope=global)"
    assert "labels=source" in build_attack("ftal", {"labels": "source"}).provenance()
    assert "seed=3" in build_attack("extract", {"seed": 3}).provenance()
