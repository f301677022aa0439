"""AKH on 8x8 digits: misclassified test samples first, CutMix padding up to the query budget (QuRD)."""

from __future__ import annotations

import pytest
import torch

from bench.methods.akh import Akh, AkhConfig
from bench.methods.base import Fingerprint, GenerationContext
from bench.methods.sac import cutmix
from bench.nets import build_model
from bench.oracle import Oracle
from bench.seeding import seeded_generator
from tests.methods.conftest import fit
from tests.methods.test_baselines import TensorData

OWNER = 1000  # digits: 1,797 images; the rest is the owner's test split


def digits_model(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int) -> torch.nn.Module:
    model = build_model("convnet", in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.5], seed=seed)
    return fit(model, x, y, seed=seed, epochs=epochs, batch_size=128)


@pytest.fixture(scope="module")
def world():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    source = digits_model(x[:OWNER], y[:OWNER], seed=0, epochs=3)
    independent = digits_model(x[:OWNER], y[:OWNER], seed=1, epochs=3)
    ctx = GenerationContext(datamodule=TensorData({"owner": (x[:OWNER], y[:OWNER]), "test": (x[OWNER:], y[OWNER:])}),
                            seed=0, device=torch.device("cpu"), num_classes=10, progress=False)
    with torch.no_grad():
        mistakes = int((source(x[OWNER:]).argmax(1) != y[OWNER:]).sum())
    assert 0 < mistakes < 100, mistakes  # the default budget needs padding on this world
    return ctx, source, independent, mistakes


def test_pads_to_exactly_the_budget_with_cutmix_labelled_by_the_source(world):
    ctx, source, _, mistakes = world
    fp = Akh(AkhConfig()).generate(source, ctx)
    x, labels, padded = fp.tensors["inputs"], fp.tensors["labels"], fp.tensors["padded"]
    assert len(x) == len(labels) == fp.meta["n_samples"] == fp.meta["queries_per_suspect"] == 100
    assert fp.meta["misclassified"] == mistakes == int((~padded).sum()) and fp.meta["padded"] == 100 - mistakes
    assert bool((~padded[:mistakes]).all()) and bool(padded[mistakes:].all())  # mistakes first, then padding
    with torch.no_grad():
        assert torch.equal(source(x).argmax(1), labels)
    test_x, test_y = ctx.split_data("test")
    first = (source(test_x).argmax(1) != test_y).nonzero().flatten()
    assert torch.equal(x[:mistakes], test_x[first])
    # The padding is CutMix (sac.cutmix) of test images, seeded from ctx.seed and config.seed.
    assert torch.equal(x[mistakes:], cutmix(test_x, 100 - mistakes, seeded_generator(ctx.seed, 0)))
    plain = (x[mistakes:].flatten(1).unsqueeze(1) == test_x.flatten(1).unsqueeze(0)).all(2).any(1)
    assert int(plain.sum()) < len(plain) / 2  # mostly mixed images, not copies of one test image


def test_padding_is_deterministic_per_seed(world):
    ctx, source, _, mistakes = world
    a, b = (Akh(AkhConfig(seed=3)).generate(source, ctx) for _ in range(2))
    other = Akh(AkhConfig(seed=4)).generate(source, ctx)
    assert torch.equal(a.tensors["inputs"], b.tensors["inputs"]) and torch.equal(a.tensors["labels"], b.tensors["labels"])
    assert torch.equal(a.tensors["inputs"][:mistakes], other.tensors["inputs"][:mistakes])
    assert not torch.equal(a.tensors["inputs"][mistakes:], other.tensors["inputs"][mistakes:])


def test_source_scores_one_and_an_independent_model_less(world, tmp_path):
    ctx, source, independent, _ = world
    method = Akh(AkhConfig())
    fp = Fingerprint.load(method.generate(source, ctx).save(tmp_path / "akh"))
    oracle = Oracle(source, access="label")
    assert method.score(fp, oracle) == 1.0 and oracle.queries == 100
    assert method.score(fp, Oracle(independent, access="label")) < 1.0


def test_without_padding_keeps_only_the_mistakes(world):
    ctx, source, _, mistakes = world
    fp = Akh(AkhConfig(padding="none")).generate(source, ctx)
    assert fp.meta["n_samples"] == mistakes and fp.meta["padded"] == 0 and not bool(fp.tensors["padded"].any())
    few = Akh(AkhConfig(n_samples=3)).generate(source, ctx)  # a budget below the mistakes: no padding
    assert few.meta["n_samples"] == 3 and few.meta["padded"] == 0


def test_no_mistakes_and_no_padding_says_what_to_change(world):
    ctx, source, _, _ = world
    x, _ = ctx.split_data("test")
    with torch.no_grad():
        perfect = GenerationContext(**{**ctx.__dict__, "datamodule": TensorData({"test": (x, source(x).argmax(1))})})
    with pytest.raises(RuntimeError, match="Use padding=cutmix or a larger split"):
        Akh(AkhConfig(padding="none")).generate(source, perfect)
    assert Akh(AkhConfig(n_samples=10)).generate(source, perfect).meta["padded"] == 10


@pytest.mark.parametrize("field, value, allowed", [
    ("n_samples", 0, ">= 1"), ("split", "attacker", "owner, test"), ("padding", "mixup", "cutmix, none")])
def test_config_validation_names_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ValueError) as err:
        AkhConfig(**{field: value})
    assert field in str(err.value) and repr(value) in str(err.value) and allowed in str(err.value)
