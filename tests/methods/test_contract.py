"""The method contract, checked for EVERY registered method (parametrised over `METHODS.names()`).

Each method runs on the tiny digits world of `test_baselines.py` (a convnet source with BatchNorm,
two surrogates and two references as pools, an independent model) with the small config it carries
itself (`test_config`): generate, save, load, score; the same seed gives the same fingerprint; the source
scores at least as high as an independent model; the oracle counts exactly what the suspect saw; models
come back in the modes they arrived in (a frozen BatchNorm inside a train-mode model included); the
caller's global RNG is untouched. A method without `test_config` fails `test_every_method_has_a_test_config`
(and every other test of it), naming the method (docs/extending.md). The checks themselves live in
`bench/testing.py`, where the author of a method in another package runs them too (`bench.testing.check_method`).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from bench import testing as contract
from bench.methods import METHODS, Fingerprint, FingerprintMethod
from bench.methods.random_guard import RandomGuard
from bench.modes import eval_mode
from bench.oracle import Oracle
from bench.testing import mixed_modes, modes
from tests.methods.test_baselines import World, world  # noqa: F401  (the shared digits world fixture)

NAMES = METHODS.names()


def small_config(cls: type[FingerprintMethod]) -> Any:
    """The small config a method class carries (None: its defaults); fails naming the method when it has none."""
    if not hasattr(cls, "test_config"):
        pytest.fail(f"method '{cls.name}' ({cls.__module__}.{cls.__qualname__}) has no `test_config`: set it in the "
                    f"class to a small {cls.Config.__name__}(...) that generates in about a second on 8x8 digits, or "
                    "to None for the defaults (docs/extending.md)")
    return cls.test_config


def make(name: str) -> FingerprintMethod:
    """A fresh instance with the method's own small config (a copy: an instance never shares it)."""
    cls = METHODS.get(name)
    return cls(copy.deepcopy(small_config(cls)))


@pytest.fixture(scope="module")
def generated(world: World) -> dict[str, dict[str, Any]]:  # noqa: F811
    """Each method's fingerprint, generated on first use from its own mixed-mode copies, with the modes, states
    and RNG around it (lazily, so `-k <name>` runs only that method)."""

    class Runs(dict):
        def __missing__(self, name: str) -> dict[str, Any]:
            self[name] = contract.generate_run(make(name), world)
            return self[name]

    return Runs()


@pytest.mark.parametrize("name", NAMES)
def test_every_method_has_a_test_config(name):
    cls = METHODS.get(name)
    config = small_config(cls)
    assert config is None or isinstance(config, cls.Config), \
        f"method '{name}': test_config is a {type(config).__name__}, not a {cls.Config.__name__} or None"


def test_a_method_without_a_test_config_fails_naming_it():
    class Bare(FingerprintMethod):
        """Bare (test): a method that forgot its test config."""

        name = "bare"
        Config = RandomGuard.Config

        def _generate(self, source, ctx):
            return Fingerprint(self.name, {})

        def _score(self, fp, suspect):
            return 0.0

    with pytest.raises(pytest.fail.Exception, match=r"method 'bare' \(.*Bare\) has no `test_config`: set it"):
        small_config(Bare)
    assert small_config(RandomGuard) is None  # None (the defaults) is a test config


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
