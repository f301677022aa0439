"""Baselines ipguard, cae, uap, sac on a tiny self-made world: sklearn digits, a convnet source,
two surrogates (extracted from the source's labels), two references (trained independently) and,
outside the pools, one independent model and one fine-tuned copy of the source as suspects.

Paper defaults that cannot work on 8x8 digits are overridden here (CAE eps, UAP xi): see
docs/methods/cae.md and docs/methods/uap.md for what the defaults give on this data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from bench.methods import METHODS
from bench.methods.base import Fingerprint, GenerationContext, Pools, PoolSpec
from bench.methods.cae import Cae, CaeConfig, conferrability
from bench.methods.ipguard import Ipguard, IpguardConfig
from bench.methods.sac import Sac, SacConfig, correlation_matrix
from bench.methods.uap import UapConfig, fooling_rate
from bench.nets import build_model
from bench.oracle import AccessError, Oracle
from bench.testing import TensorData  # noqa: F401  (re-exported: other method tests import it from here)
from tests.methods.conftest import fit

OWNER = 1000  # digits: 1,797 images; the rest is the owner's test split
EPOCHS = 8
BATCH = 128  # few large steps: tiny models on CPU are bound by per-step overhead


def train(arch: str, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = EPOCHS) -> nn.Module:
    model = build_model(arch, in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.5], seed=seed)
    return fit(model, x, y, seed=seed, epochs=epochs, batch_size=BATCH)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@dataclass
class World:
    ctx: GenerationContext
    source: nn.Module
    surrogates: list[nn.Module]
    references: list[nn.Module]
    independent: nn.Module  # a negative suspect: trained independently, not in the pools
    derived: nn.Module  # a positive suspect: the source fine-tuned for one epoch

    def context(self, pools: bool = True) -> GenerationContext:
        return copy.copy(self.ctx) if pools else GenerationContext(**{**self.ctx.__dict__, "pools": None})


@pytest.fixture(scope="module")
def world() -> World:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    (x_owner, y_owner), (x_test, y_test) = (x[:OWNER], y[:OWNER]), (x[OWNER:], y[OWNER:])
    source = train("convnet", x_owner, y_owner, seed=0)
    assert accuracy(source, x_test, y_test) >= 0.95
    with torch.no_grad():
        source_labels = source(x_owner).argmax(1)
    surrogates = [train("convnet", x_owner, source_labels, 11), train("lenet", x_owner, source_labels, 12)]
    references = [train("convnet", x_owner, y_owner, 21), train("lenet", x_owner, y_owner, 22)]
    independent = train("convnet", x_owner, y_owner, 31)
    derived = copy.deepcopy(source).train()
    optimiser = torch.optim.SGD(derived.parameters(), lr=1e-3, momentum=0.9)
    for idx in torch.randperm(OWNER, generator=torch.Generator().manual_seed(5)).split(64):
        optimiser.zero_grad()
        nn.functional.cross_entropy(derived(x_owner[idx]), y_owner[idx]).backward()
        optimiser.step()
    derived.zero_grad(set_to_none=True)
    ctx = GenerationContext(datamodule=TensorData({"owner": (x_owner, y_owner), "test": (x_test, y_test)}), seed=0,
                            device=torch.device("cpu"), num_classes=10, progress=False,
                            pools=Pools(surrogates=surrogates, references=references, model_ids=["s0", "s1", "r0", "r1"]))
    return World(ctx, source, surrogates, references, independent, derived.eval())


# Small but non-trivial configs. CAE eps and UAP xi are raised: see the module docstring.
CONFIGS = {
    "ipguard": IpguardConfig(n_fingerprints=30, max_steps=150),
    "cae": CaeConfig(n_fingerprints=30, candidates=80, eps=0.25, iterations=30),
    "uap": UapConfig(xi=0.3, uap_samples=300, max_passes=2, uap_batch_size=100, clusters=20, views=5,
                     cluster_samples=400, encoder_epochs=100, allow_below_target=True),  # fools ~0.3 < 0.8 here
    "sac": SacConfig(),
}


@pytest.fixture(scope="module")
def generated(world: World) -> dict[str, tuple]:
    """Every method's fingerprint, generated once from a source left in train mode (to check it is restored)."""
    out = {}
    world.source.train()
    before = {k: v.clone() for k, v in world.source.state_dict().items()}
    for name, config in CONFIGS.items():
        method = METHODS.get(name)(config)
        out[name] = (method, method.generate(world.source, world.context()))
        assert world.source.training, f"{name} left the source in eval mode"
        assert all(torch.equal(before[k], v) for k, v in world.source.state_dict().items()), f"{name} changed the source"
        assert all(p.grad is None for p in world.source.parameters()), f"{name} left gradients on the source"
    world.source.eval()
    return out


def test_registered_with_descriptions():
    for name in CONFIGS:
        cls = METHODS.get(name)
        access_words = "label-only" if cls.access == "label" else "probabilities"
        assert cls.name == name and access_words in METHODS.describe()[name]
    assert {n: METHODS.get(n).access for n in CONFIGS} == {"ipguard": "label", "cae": "label", "uap": "probs",
                                                           "sac": "probs"}


def test_ipguard_points_cross_to_the_target_with_margin_k(world, generated):
    _, fp = generated["ipguard"]
    x, targets, k = fp.tensors["inputs"], fp.tensors["targets"], CONFIGS["ipguard"].k
    with torch.no_grad():
        logits = world.source(x)
    assert fp.meta["n_fingerprints"] == len(x) >= 0.8 * CONFIGS["ipguard"].n_fingerprints
    assert torch.equal(logits.argmax(1), targets) and torch.equal(fp.tensors["labels"], targets)
    assert bool((targets != fp.tensors["seed_labels"]).all())
    others = logits.scatter(1, targets.unsqueeze(1), float("-inf")).max(1).values
    assert float((logits.gather(1, targets.unsqueeze(1)).squeeze(1) - others).min()) >= 0.99 * k
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_ipguard_least_likely_targets_and_determinism(world):
    config = IpguardConfig(n_fingerprints=8, max_steps=150, target="least_likely")
    fp = Ipguard(config).generate(world.source, world.context())
    with torch.no_grad():
        least = world.source(fp.tensors["seeds"]).argmin(1)
    assert torch.equal(fp.tensors["targets"], least)
    quick = {"n_fingerprints": 8, "max_steps": 5, "keep_failures": True}
    random_a, random_b, other = (Ipguard(IpguardConfig(**quick, seed=seed)).generate(world.source, world.ctx)
                                 for seed in (0, 0, 1))
    assert torch.equal(random_a.tensors["inputs"], random_b.tensors["inputs"])
    assert not torch.equal(random_a.tensors["targets"], other.tensors["targets"])


def test_ipguard_without_converged_seeds_says_what_to_change(world):
    with pytest.raises(RuntimeError, match="raise max_steps or lr, or lower k"):
        Ipguard(IpguardConfig(n_fingerprints=4, max_steps=1)).generate(world.source, world.context())


def test_cae_examples_are_in_the_ball_and_conferrable_on_the_pools(world, generated):
    _, fp = generated["cae"]
    config = CONFIGS["cae"]
    x, seeds = fp.tensors["inputs"], fp.tensors["seeds"]
    assert fp.meta["n_fingerprints"] == len(x) > 0 and fp.meta["accepted"] >= len(x)
    assert float((x - seeds).abs().max()) <= config.eps + 1e-6
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    with torch.no_grad():
        labels = world.source(x).argmax(1)
        conf = conferrability(labels, torch.stack([m(x).argmax(1) for m in world.surrogates]),
                              torch.stack([m(x).argmax(1) for m in world.references]))
        assert bool((labels != world.source(seeds).argmax(1)).all())
    assert torch.equal(labels, fp.tensors["labels"])
    assert float(conf.min()) >= config.threshold


def test_cae_with_paper_eps_on_digits_finds_nothing_and_says_what_to_change(world):
    # eps = 0.025 is 0.4 grey levels of 16: too small to flip this source's labels in a few steps.
    method = Cae(CaeConfig(n_fingerprints=5, candidates=10, iterations=3))
    with pytest.raises(RuntimeError, match="raise eps or iterations, lower threshold"):
        method.generate(world.source, world.context())


@pytest.mark.parametrize("name", ["cae", "uap"])
def test_pool_methods_declare_and_require_pools(world, name):
    method = METHODS.get(name)()
    assert method.pool_spec() == PoolSpec(surrogate_archs=["source", "lenet"], reference_archs=["source", "lenet"],
                                          seeds=2, epochs=None)
    custom = METHODS.get(name)(METHODS.get(name).Config(surrogate_archs=["mlp"], pool_seeds=3, pool_epochs=4))
    assert custom.pool_spec() == PoolSpec(["mlp"], ["source", "lenet"], 3, 4)
    with pytest.raises(RuntimeError, match="needs defender pools"):
        method.generate(world.source, world.context(pools=False))


def test_methods_without_pools_declare_none():
    for name in ("ipguard", "sac"):
        assert METHODS.get(name)().pool_spec() is None


def test_uap_perturbation_is_bounded_and_its_fooling_rate_recorded(world, generated):
    method, fp = generated["uap"]
    config = CONFIGS["uap"]
    v = fp.tensors["perturbation"]
    assert float(v.abs().max()) <= config.xi + 1e-6 and fp.meta["uap_linf"] <= config.xi + 1e-6
    x_owner, _ = world.ctx.owner_data(config.uap_samples)
    assert fp.meta["fooling_rate"] == pytest.approx(fooling_rate(world.source, x_owner, v), abs=1e-6)
    assert fp.meta["fooling_rate"] > 0.05  # xi = 0.3 fools some digits (the paper's 10/255 fools none)
    assert fp.tensors["inputs"].shape[:2] == (config.views, config.clusters)
    assert fp.tensors["source_vectors"].shape == (config.views, 2 * config.clusters * 10)
    assert fp.meta["queries_per_suspect"] == 2 * config.clusters * config.views
    assert fp.meta["encoder_loss_last"] < fp.meta["encoder_loss_first"]
    assert min(fp.meta["pool_surrogate_scores"]) > max(fp.meta["pool_reference_scores"])


@pytest.mark.parametrize("name", ["uap", "sac"])
def test_probability_methods_receive_probabilities(world, generated, name):
    method, fp = generated[name]
    calls = []

    class SpyOracle(Oracle):
        def probs(self, x):
            out = super().probs(x)
            calls.append(out)
            return out

    oracle = SpyOracle(world.independent, access=method.access)
    method.score(fp, oracle)
    assert method.access == "probs" and calls
    assert torch.allclose(calls[0].sum(1), torch.ones(len(calls[0])))  # rows are probabilities, not labels
    assert oracle.queries == fp.meta["queries_per_suspect"]
    with pytest.raises(AccessError):
        method.score(fp, Oracle(world.independent, access="label"))


@pytest.mark.parametrize("name", ["ipguard", "cae"])
def test_label_only_methods_score_with_a_label_oracle(world, generated, name):
    method, fp = generated[name]
    oracle = Oracle(world.independent, access="label")
    assert 0.0 <= method.score(fp, oracle) <= 1.0
    assert oracle.queries == fp.meta["queries_per_suspect"] == len(fp.tensors["inputs"])
    with pytest.raises(AccessError):
        oracle.probs(fp.tensors["inputs"])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_and_source_beats_independent(world, generated, tmp_path, name):
    method, fp = generated[name]
    reloaded = Fingerprint.load(fp.save(tmp_path / name))
    fresh = METHODS.get(name)(CONFIGS[name])  # a new instance, as the loop would build from the recipe
    suspects = {"source": world.source, "derived": world.derived, "independent": world.independent}
    scores = {k: method.score(fp, Oracle(m, access=method.access)) for k, m in suspects.items()}
    again = {k: fresh.score(reloaded, Oracle(m, access=method.access)) for k, m in suspects.items()}
    assert again == pytest.approx(scores, abs=1e-6)
    assert set(reloaded.meta) == set(fp.meta)
    assert scores["source"] > scores["independent"], scores
    assert scores["derived"] > scores["independent"], scores


def test_sac_samples_are_source_mistakes_with_their_correlation(world, generated):
    _, fp = generated["sac"]
    x = fp.tensors["inputs"]
    with torch.no_grad():
        probs = world.source(x).softmax(1)
    assert 2 <= len(x) == fp.meta["n_samples"] <= CONFIGS["sac"].n_samples
    assert bool((probs.argmax(1) != fp.tensors["true_labels"]).all())
    assert torch.allclose(fp.tensors["correlation"], correlation_matrix(probs), atol=1e-6)


def test_sac_correlation_matrices():
    outputs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    assert torch.allclose(correlation_matrix(outputs), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))
    pearson = correlation_matrix(torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.5], [3.0, 2.0, 1.0]]), "pearson")
    assert pearson[0, 2] == pytest.approx(-1.0) and pearson[0, 1] > 0.99


def test_sac_cutmix_samples(world):
    config = SacConfig(samples="cutmix", n_samples=12)
    a = Sac(config).generate(world.source, world.context())
    b = Sac(config).generate(world.source, world.context())
    assert a.tensors["inputs"].shape == (12, 1, 8, 8) and torch.equal(a.tensors["inputs"], b.tensors["inputs"])
    assert Sac(config).score(a, Oracle(world.source, access="probs")) == 0.0


@pytest.mark.parametrize("config_cls, field, value, allowed", [
    (IpguardConfig, "target", "most_likely", "random, least_likely"),
    (IpguardConfig, "k", -1.0, ">= 0"),
    (IpguardConfig, "max_steps", 0, ">= 1"),
    (CaeConfig, "dropout", 1.0, "in [0, 1)"),
    (CaeConfig, "eps", 0.0, "in (0, 1]"),
    (CaeConfig, "candidates", 10, ">= n_fingerprints"),
    (CaeConfig, "surrogate_archs", ["convnett"], "Did you mean 'convnet'"),
    (CaeConfig, "reference_archs", [], "non-empty list"),
    (UapConfig, "xi", 0.0, "in (0, 1]"),
    (UapConfig, "cluster_samples", 50, ">= clusters"),
    (UapConfig, "pool_seeds", 0, ">= 1"),
    (SacConfig, "samples", "mixup", "misclassified, cutmix"),
    (SacConfig, "correlation", "spearman", "cosine, pearson"),
    (SacConfig, "n_samples", 1, ">= 2"),
])
def test_config_validation_names_field_value_and_allowed(config_cls, field, value, allowed):
    with pytest.raises(ValueError) as err:
        config_cls(**{field: value})
    message = str(err.value)
    assert field in message and repr(value) in message and allowed in message


def test_configs_load_from_a_recipe():
    from bench.config import ConfigError, load_recipe
    from tests.conftest import SMOKE

    cfg = load_recipe(SMOKE, ["methods=[ipguard,cae,uap,sac]", "methods.cae.eps=0.1",
                              "methods.uap.surrogate_archs=[lenet,mlp]"])
    entries = {e["name"]: e for e in cfg.methods}
    assert entries["cae"]["eps"] == 0.1 and entries["uap"]["surrogate_archs"] == ["lenet", "mlp"]
    assert entries["ipguard"]["k"] == 10.0 and entries["sac"]["n_samples"] == 50
    with pytest.raises(ConfigError, match="threshold"):
        load_recipe(SMOKE, ["methods=[cae]", "methods.cae.threshold=1.5"])
