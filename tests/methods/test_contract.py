"""The method contract, checked for EVERY registered method (parametrised over `METHODS.names()`).

Each method runs on the tiny digits world of `test_baselines.py` (a convnet source with BatchNorm,
two surrogates and two references as pools, an independent model) with a small config from `SMALL`:
generate, save, load, score; the same seed gives the same fingerprint; the source scores at least as
high as an independent model; the oracle counts exactly what the suspect saw; models come back in
the modes they arrived in (a frozen BatchNorm inside a train-mode model included); the caller's
global RNG is untouched. A newly registered method fails `test_every_method_has_a_small_config`
until it adds its entry to `SMALL` (docs/extending.md).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from bench.methods import METHODS, Fingerprint, FingerprintMethod, GenerationContext, Pools
from bench.methods.adv_tra import AdvTraConfig
from bench.methods.akh import AkhConfig
from bench.methods.cae import CaeConfig
from bench.methods.cort import CortConfig
from bench.methods.ipguard import IpguardConfig
from bench.methods.metav import MetavConfig
from bench.methods.modeldiff import ModeldiffConfig
from bench.methods.sac import SacConfig
from bench.methods.uap import UapConfig
from bench.modes import eval_mode
from bench.oracle import Oracle
from tests.methods.test_baselines import World, world  # noqa: F401  (the shared digits world fixture)

# Small configs: every method generates in about a second on the digits world (None: the defaults).
SMALL: dict[str, Any] = {
    "adv_tra": AdvTraConfig(n_fingerprints=3, candidates=10, max_iterations=60),
    "akh": AkhConfig(n_samples=20),
    # 20 candidates x 10 iterations flipped 2 labels, or none with oneDNN's AVX2 kernels; these find 4-6
    "cae": CaeConfig(n_fingerprints=5, candidates=40, eps=0.25, iterations=20),
    "cort": CortConfig(n_seeds=20, eps=0.25),
    "ipguard": IpguardConfig(n_fingerprints=8, max_steps=60, keep_failures=True),
    "metav": MetavConfig(n_fingerprints=8, steps=20, prune_rates=[0.3], finetune_variants=1, finetune_steps=3),
    "modeldiff": ModeldiffConfig(n_pairs=10, iterations=100),
    "oracle_label": None,
    "random": None,
    "sac": SacConfig(n_samples=10),
    "uap": UapConfig(xi=0.3, uap_samples=100, max_passes=1, uap_batch_size=50, clusters=5, views=3,
                     cluster_samples=100, encoder_epochs=10, allow_below_target=True),
}
# Guards whose score does not depend on what the suspect answers (they test the loop, not models).
SUSPECT_BLIND = {"random"}
TIMING = {"generation_seconds"}  # meta that may differ between two identical generations
NAMES = METHODS.names()


def make(name: str) -> FingerprintMethod:
    """A fresh instance with the method's small config (a new method must add one to SMALL)."""
    return METHODS.get(name)(SMALL.get(name))


def oracle_for(method: FingerprintMethod, model: nn.Module, role: str = "negative") -> Oracle:
    """The oracle the loop would hand `method` for a suspect of manifest `role` (the guard reads it)."""
    return Oracle(model, access=method.access, manifest_role=role if method.name == "oracle_label" else None)


def mixed_modes(model: nn.Module) -> nn.Module:
    """A copy in train mode except its first BatchNorm (frozen, in eval): the case a top-level restore breaks."""
    model = copy.deepcopy(model).train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            break
    return model


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: module.training for name, module in model.named_modules()}


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class CountingModel(nn.Module):
    """Counts the rows a suspect is asked about, whichever way they reach it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += int(x.shape[0])
        return self.inner(x)


def mixed_world(world: World) -> tuple[nn.Module, GenerationContext]:  # noqa: F811
    """Fresh copies of the world's source and pools in mixed modes (train, one BatchNorm frozen in eval)."""
    pools = Pools(surrogates=[mixed_modes(m) for m in world.surrogates],
                  references=[mixed_modes(m) for m in world.references], model_ids=["s0", "s1", "r0", "r1"])
    return mixed_modes(world.source), GenerationContext(**{**world.ctx.__dict__, "pools": pools})


@pytest.fixture(scope="module")
def generated(world: World) -> dict[str, dict[str, Any]]:  # noqa: F811
    """Every method's fingerprint, each from its own mixed-mode copies, with the modes, states and RNG around it."""
    out = {}
    for name in NAMES:
        source, ctx = mixed_world(world)
        models = [source, *ctx.pools.surrogates, *ctx.pools.references]
        before = {"modes": [modes(m) for m in models], "states": [state(m) for m in models],
                  "rng": torch.get_rng_state()}
        method = make(name)
        fp = method.generate(source, ctx)
        out[name] = {"method": method, "fp": fp, "before": before,
                     "modes_after": [modes(m) for m in models], "rng_after": torch.get_rng_state(),
                     "same_states": all(same_state(m, s) for m, s in zip(models, before["states"]))}
    return out


def test_every_method_has_a_small_config():
    missing = sorted(set(NAMES) - set(SMALL))
    assert not missing, f"add a small config for {missing} to SMALL in tests/methods/test_contract.py"


@pytest.mark.parametrize("name", NAMES)
def test_generate_restores_every_submodule_mode_and_the_callers_rng(generated, name):
    run = generated[name]
    assert run["modes_after"] == run["before"]["modes"], f"{name} changed a model's train/eval modes"
    assert run["same_states"], f"{name} changed the source or a pool model (weights or BatchNorm statistics)"
    assert torch.equal(run["rng_after"], run["before"]["rng"]), f"{name} moved the caller's global RNG"
    assert run["fp"].method == name
    assert run["fp"].meta["generation_seconds"] >= 0.0  # timed the same way for every method


@pytest.mark.parametrize("name", NAMES)
def test_score_restores_every_submodule_mode(world, generated, name):  # noqa: F811
    method, fp = generated[name]["method"], generated[name]["fp"]
    suspect = mixed_modes(world.independent)
    before_modes, before_state = modes(suspect), state(suspect)
    method.score(fp, oracle_for(method, suspect))
    assert modes(suspect) == before_modes and same_state(suspect, before_state)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_scores_the_same(world, generated, tmp_path, name):  # noqa: F811
    method, fp = generated[name]["method"], generated[name]["fp"]
    reloaded = Fingerprint.load(fp.save(tmp_path / name))
    assert reloaded.method == name and set(reloaded.tensors) == set(fp.tensors)
    assert all(torch.equal(reloaded.tensors[k], v) for k, v in fp.tensors.items())
    for model, role in ((world.source, "positive"), (world.independent, "negative")):
        # fresh instances, as the loop builds them from the recipe (the random guard restarts its sequence)
        first = make(name).score(fp, oracle_for(method, model, role))
        again = make(name).score(reloaded, oracle_for(method, model, role))
        assert again == pytest.approx(first, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_fingerprint(world, generated, name):  # noqa: F811
    source, ctx = mixed_world(world)
    first, second = generated[name]["fp"], make(name).generate(source, ctx)
    assert set(first.tensors) == set(second.tensors)
    assert all(torch.equal(first.tensors[k], second.tensors[k]) for k in first.tensors)
    assert {k: v for k, v in first.meta.items() if k not in TIMING} == \
        {k: v for k, v in second.meta.items() if k not in TIMING}


@pytest.mark.parametrize("name", NAMES)
def test_source_scores_as_a_positive(world, generated, name):  # noqa: F811
    method, fp = generated[name]["method"], generated[name]["fp"]
    source = method.score(fp, oracle_for(method, world.source, "positive"))
    independent = method.score(fp, oracle_for(method, world.independent, "negative"))
    if name in SUSPECT_BLIND:
        assert 0.0 <= source <= 1.0 and 0.0 <= independent <= 1.0
    else:
        assert source >= independent, (source, independent)


@pytest.mark.parametrize("name", NAMES)
def test_queries_are_counted_by_the_oracle(world, generated, name):  # noqa: F811
    method, fp = generated[name]["method"], generated[name]["fp"]
    suspect = CountingModel(world.independent)
    oracle = oracle_for(method, suspect)
    figures = method.measure(fp, oracle)
    assert "score" in figures
    assert oracle.queries == suspect.seen  # every row the suspect saw went through the oracle, and was counted
    if "queries_per_suspect" in fp.meta:
        assert oracle.queries == fp.meta["queries_per_suspect"] > 0
    elif name not in SUSPECT_BLIND | {"oracle_label"}:
        pytest.fail(f"{name} should record meta['queries_per_suspect']")


def test_a_method_cannot_override_the_template_methods():
    with pytest.raises(TypeError, match="implement _generate"):
        class Bad(FingerprintMethod):  # noqa: F841
            def generate(self, source, ctx):
                return Fingerprint("bad", {})


@pytest.mark.parametrize("kind", ["oracle", "accuracy", "source_outputs", "predicted_labels", "eval_mode"])
def test_shared_helpers_restore_a_frozen_batchnorm(world, kind):  # noqa: F811
    """Every place that switches a model to eval mode gives each submodule its own mode back."""
    from bench.training import accuracy, predicted_labels
    from bench.zoo.attacks.base import source_outputs

    model = mixed_modes(world.source)
    before = modes(model)
    x, y = world.ctx.owner_data(16)
    calls = {"oracle": lambda: Oracle(model).labels(x), "accuracy": lambda: accuracy(model, x, y),
             "source_outputs": lambda: source_outputs(model, x), "predicted_labels": lambda: predicted_labels(model, x)}
    if kind == "eval_mode":
        with eval_mode(model):
            assert not any(modes(model).values())
    else:
        calls[kind]()
    assert modes(model) == before and any(before.values()) and not all(before.values())


@pytest.mark.parametrize("name", NAMES)
def test_paper_results_are_well_formed_and_reach_the_leaderboard(name):
    from bench.report.variants import paper_value

    for dataset, figures in METHODS.get(name).paper_results.items():
        assert dataset == "".join(c for c in dataset.lower() if c.isalnum()), dataset
        assert [len(part) for part in figures.split("/")] == [4, 4, 4] and 0 <= float(figures[:4]) <= 1, figures
        assert paper_value(name, dataset.upper()) == figures
