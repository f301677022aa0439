"""The method contract, checked for EVERY registered method (parametrised over `METHODS.names()`).

Each method runs on the tiny digits world of `test_baselines.py` (a convnet source with BatchNorm,
two surrogates and two references as pools, an independent model) with a small config from `SMALL`:
generate, save, load, score; the same seed gives the same fingerprint; the source scores at least as
high as an independent model; the oracle counts exactly what the suspect saw; models come back in
the modes they arrived in (a frozen BatchNorm inside a train-mode model included); the caller's
global RNG is untouched. A newly registered method fails `test_every_method_has_a_small_config`
until it adds its entry to `SMALL` (docs/extending.md). The checks themselves live in `bench/testing.py`,
where the author of a method in another package runs them too (`bench.testing.check_method`).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bench import testing as contract
from bench.methods import METHODS, Fingerprint, FingerprintMethod
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
from bench.testing import mixed_modes, modes
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
NAMES = METHODS.names()


def make(name: str) -> FingerprintMethod:
    """A fresh instance with the method's small config (a new method must add one to SMALL)."""
    return METHODS.get(name)(SMALL.get(name))


@pytest.fixture(scope="module")
def generated(world: World) -> dict[str, dict[str, Any]]:  # noqa: F811
    """Every method's fingerprint, each from its own mixed-mode copies, with the modes, states and RNG around it."""
    return {name: contract.generate_run(make(name), world) for name in NAMES}


def test_every_method_has_a_small_config():
    missing = sorted(set(NAMES) - set(SMALL))
    assert not missing, f"add a small config for {missing} to SMALL in tests/methods/test_contract.py"


@pytest.mark.parametrize("name", NAMES)
def test_generate_restores_every_submodule_mode_and_the_callers_rng(generated, name):
    assert generated[name]["method"].name == name
    contract.check_generate_restores(generated[name])


@pytest.mark.parametrize("name", NAMES)
def test_score_restores_every_submodule_mode(world, generated, name):  # noqa: F811
    contract.check_score_restores(generated[name], world)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_scores_the_same(world, generated, tmp_path, name):  # noqa: F811
    contract.check_round_trip(generated[name], lambda: make(name), world, tmp_path / name)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_fingerprint(world, generated, name):  # noqa: F811
    contract.check_same_seed(generated[name], lambda: make(name), world)


@pytest.mark.parametrize("name", NAMES)
def test_source_scores_as_a_positive(world, generated, name):  # noqa: F811
    contract.check_source_scores_as_positive(generated[name], world)


@pytest.mark.parametrize("name", NAMES)
def test_queries_are_counted_by_the_oracle(world, generated, name):  # noqa: F811
    contract.check_queries_counted(generated[name], world)


def test_the_checks_catch_a_method_that_breaks_the_contract(world):  # noqa: F811
    """The shared checks can fail: a method that queries the suspect around the oracle is caught."""
    from bench.methods.random import RandomGuard

    class Leaky(RandomGuard):
        def _score(self, fp, suspect):
            suspect._model(torch.zeros(2, 1, 8, 8))  # behind the oracle's back
            return 0.5

    run = contract.generate_run(Leaky(), world)
    contract.check_generate_restores(run)
    with pytest.raises(AssertionError, match="queried the suspect outside the oracle"):
        contract.check_queries_counted(run, world)


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
