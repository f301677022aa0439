"""Adaptive attacks of issue #19 on digits: boundary-smoothing fine-tuning (`ftsmooth`) and
out-of-distribution extraction (`extract.query_data`). The generic attack contract runs on them in
tests/zoo/test_attacks.py (parametrised over the registry); here are their own acceptance checks."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from bench.config import load_recipe
from bench.training import ClassifierModule, accuracy
from bench.zoo.attacks import build_attack
from bench.zoo.attacks._ftsmooth_module import SmoothingModule
from bench.zoo.attacks.ftsmooth import sample_beta, smooth_targets
from bench.zoo.attacks.query_data import synthetic_queries, transformed_queries
from bench.zoo.plan import plan_zoo
from tests.conftest import SMOKE
from tests.zoo.test_attacks import run, setup, state_hash  # noqa: F401  (the digits source fixture)

log = logging.getLogger(__name__)
HASHES = {"owner": "o", "attacker": "a", "independent": "i", "test": "t"}  # planning needs names, not data
STRONG = {"epochs": 5, "optimizer": {"lr": 1e-2}}  # FTAL's 1e-3 barely moves a digits convnet in 5 epochs


def confidence(model: nn.Module, x: torch.Tensor) -> float:
    """Mean max-probability of `model` on `x`."""
    with torch.no_grad():
        return model.eval()(x).softmax(dim=1).max(dim=1).values.mean().item()


def agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a.eval()(x).argmax(dim=1) == b.eval()(x).argmax(dim=1)).float().mean().item()


# -- ftsmooth -------------------------------------------------------------------------------------------


def test_label_smoothing_lowers_confidence_vs_ftal(setup: dict) -> None:  # noqa: F811
    x_test, y_test = setup["test"]
    plain = run(setup, "ftal", STRONG)
    smoothed = run(setup, "ftsmooth", {**STRONG, "smoothing": 0.1, "mixup_alpha": 0.0})
    mixed = run(setup, "ftsmooth", {**STRONG, "smoothing": 0.0, "mixup_alpha": 0.4})
    conf_plain, conf_smooth, conf_mix = (confidence(m.model, x_test) for m in (plain, smoothed, mixed))
    log.info("confidence: ftal %.3f, smoothing 0.1 %.3f, mixup 0.4 %.3f", conf_plain, conf_smooth, conf_mix)
    assert conf_smooth < conf_plain - 0.1  # measured 0.98 -> 0.80
    assert conf_mix < conf_plain - 0.03  # measured 0.98 -> 0.90
    for out in (smoothed, mixed):  # the attacker keeps a usable model
        assert accuracy(out.model, x_test, y_test) > 0.9


def test_smooth_targets_match_szegedy() -> None:
    targets = smooth_targets(torch.tensor([2, 0]), 4, 0.1)
    assert torch.allclose(targets[0], torch.tensor([0.025, 0.025, 0.925, 0.025]))
    assert torch.allclose(targets.sum(dim=1), torch.ones(2))


def test_both_off_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ftsmooth.smoothing=0.0 must be > 0 when mixup_alpha is 0"):
        build_attack("ftsmooth", {"smoothing": 0.0, "mixup_alpha": 0.0})
    with pytest.raises(ValueError, match=r"ftsmooth.smoothing=1.0 must be in \[0, 1\)"):
        build_attack("ftsmooth", {"smoothing": 1.0})
    with pytest.raises(ValueError, match=r"ftsmooth.mixup_alpha=-0.2 must be"):
        build_attack("ftsmooth", {"mixup_alpha": -0.2})
    with pytest.raises(ValueError, match=r"Did you mean 'mixup_alpha'"):
        build_attack("ftsmooth", {"mixup_alfa": 0.2})
    build_attack("ftsmooth", {"smoothing": 0.0})  # mixup alone
    build_attack("ftsmooth", {"mixup_alpha": 0.0})  # smoothing alone


def test_beta_sampler_has_beta_moments() -> None:
    """Beta(a, a): mean 1/2, variance 1/(4(2a+1)); a wrong Gamma sampler misses the variance."""
    generator = torch.Generator().manual_seed(0)
    for alpha in (0.2, 1.0, 4.0):
        draws = torch.tensor([sample_beta(alpha, generator) for _ in range(4000)])
        assert ((draws >= 0) & (draws <= 1)).all()
        assert abs(draws.mean().item() - 0.5) < 0.02
        assert abs(draws.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.012, alpha


def test_mixup_is_deterministic_per_seed(setup: dict) -> None:  # noqa: F811
    params = {"epochs": 1, "smoothing": 0.0, "mixup_alpha": 0.4}
    first = build_attack("ftsmooth", params).apply(setup["source"], setup["ctx"])
    again = build_attack("ftsmooth", params).apply(setup["source"], setup["ctx"])
    other = build_attack("ftsmooth", {**params, "seed": 1}).apply(setup["source"], setup["ctx"])
    plain = build_attack("ftal", {"epochs": 1}).apply(setup["source"], setup["ctx"])
    assert state_hash(first.model) == state_hash(again.model)
    assert state_hash(first.model) != state_hash(other.model)
    assert state_hash(first.model) != state_hash(plain.model)  # mixup changed what was trained

    def draws(seed: int) -> list[float]:
        module = SmoothingModule(nn.Linear(2, 3), build_attack("ftsmooth", {**params, "seed": seed}).config, 3)
        return [sample_beta(0.4, module.mix_generator) for _ in range(4)]

    assert draws(0) == draws(0) and draws(0) != draws(1)


def test_mixup_step_mixes_images_and_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    monkeypatch.setattr(ClassifierModule, "training_step", lambda self, batch, i: seen.append(batch))
    cfg = build_attack("ftsmooth", {"smoothing": 0.1, "mixup_alpha": 1.0}).config
    module = SmoothingModule(nn.Linear(4, 3), cfg, 3)
    x, labels = torch.rand(16, 4), torch.randint(0, 3, (16,))
    replay = torch.Generator().set_state(module.mix_generator.get_state())
    module.training_step((x, labels), 0)
    mixed, target = seen[0]
    lam, order = sample_beta(1.0, replay), torch.randperm(16, generator=replay)  # the draws, in the module's order
    assert module.lambdas == [lam] and 0 < lam < 1 and not torch.equal(order, torch.arange(16))
    own = smooth_targets(labels, 3, 0.1)
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[order]) and mixed.min() >= 0 and mixed.max() <= 1
    assert torch.allclose(target, lam * own + (1 - lam) * own[order])
    assert torch.allclose(target.sum(dim=1), torch.ones(16))


def test_ftsmooth_provenance_names_its_parameters() -> None:
    attack = build_attack("ftsmooth", {"mixup_alpha": 0.0})
    assert attack.provenance() == "ftsmooth(epochs=5,lr=0.001,smoothing=0.1,mixup_alpha=0.0)"
    assert attack.uses_training_data()


# -- out-of-distribution extraction ---------------------------------------------------------------------


def test_query_sets_are_seeded_in_range_and_not_the_attacker_split(setup: dict) -> None:  # noqa: F811
    x, _ = setup["dm"].tensors("attacker")
    for make in (lambda g: transformed_queries(x, g), lambda g: synthetic_queries(len(x), tuple(x.shape[1:]), g)):
        a, b, c = (make(torch.Generator().manual_seed(s)) for s in (0, 0, 1))
        assert a.shape == x.shape and a.dtype == torch.float32
        assert a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, b) and not torch.equal(a, c)
        per_sample = (a - x).flatten(1).abs().amax(dim=1)
        assert (per_sample > 0).all()  # no query is an attacker image
    transformed = transformed_queries(x, torch.Generator().manual_seed(0))
    inverted = ((transformed - (1 - x)).abs().flatten(1).mean(dim=1) < 0.1).float().mean()
    assert 0.05 < inverted < 0.35  # an inverted, unrotated, unflipped image: probability 1/16, plus symmetric digits


@pytest.mark.parametrize("query_data", ["transformed", "synthetic"])
def test_ood_extraction_queries_exactly_the_budget(setup: dict, query_data: str) -> None:  # noqa: F811
    source = setup["source"]
    counted: list[int] = []
    hook = source.register_forward_hook(lambda module, args, out: counted.append(args[0].shape[0]))
    try:
        out = build_attack("extract", {"arch": "lenet", "query_data": query_data, "query_budget": 200,
                                       "epochs": 20}).apply(source, setup["ctx"])
    finally:
        hook.remove()
    assert sum(counted) == 200 == out.info["queries"]
    assert out.info["query_data"] == query_data and out.info["arch"] == "lenet"
    x_test, y_test = setup["test"]
    agree = agreement(out.model, source, x_test)
    log.info("extract(query_data=%s, lenet, 200 queries): agreement with the source %.3f, test acc %.3f",
             query_data, agree, accuracy(out.model, x_test, y_test))
    assert agree > 0.15  # above chance (0.1): the answers on out-of-distribution inputs carry the source's function


def test_default_extract_ids_are_unchanged() -> None:
    default = build_attack("extract", {}).config_dict()
    assert default == {  # the dict every extraction id hashed before `query_data` existed
        "epochs": 10, "batch_size": 64,
        "optimizer": {"name": "adam", "lr": 0.001, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
        "schedule": {"name": "none", "milestones": [], "gamma": 0.1}, "split": "attacker", "labels": "source",
        "seed": 0, "arch": None, "arch_params": {}, "labels_kind": "hard", "temperature": 4.0, "query_budget": None}
    plan = plan_zoo(load_recipe(SMOKE, []), HASHES)
    ids = {job.attack: job.model_id for job in plan.by_role("positive") if job.attack.startswith("extract")}
    assert ids == {"extract(hard)": "4c3c10a75131", "extract(soft,lenet)": "113e45031484"}  # ids before the field
    synthetic = build_attack("extract", {"query_data": "synthetic"})
    assert synthetic.config_dict()["query_data"] == "synthetic"
    assert "query_data=synthetic" in synthetic.provenance()
    assert not synthetic.uses_training_data()  # data.augment cannot change a fixed query set


def test_ood_positives_plan_with_their_own_ids() -> None:
    positives = "zoo.positives=[{attack: extract, arch: lenet, query_data: [attacker, transformed, synthetic]}]"
    plan = plan_zoo(load_recipe(SMOKE, [positives]), HASHES)
    jobs = plan.by_role("positive")
    assert len({job.model_id for job in jobs}) == 3 and all(job.arch == "lenet" for job in jobs)
    with pytest.raises(ValueError, match=r"extract.query_data='noise' is not one of attacker, transformed, synthetic"):
        build_attack("extract", {"query_data": "noise"})
