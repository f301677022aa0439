"""UAP on models whose answer is known: a linear classifier with a planted trigger direction (a universal
perturbation of L-inf size xi provably exists, and random ones of the same size do not work), DeepFool
corner cases, and generation's handling of a fooling rate below the target.

The method's end-to-end behaviour on a trained digits world is tested in test_baselines.py.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from bench.methods.base import GenerationContext, Pools
from bench.methods.uap import Uap, UapConfig, contrastive_loss_floor, supervised_contrastive_loss
from bench.methods.uap_perturbation import deepfool, fooling_rate, universal_perturbation
from bench.oracle import Oracle

XI = 0.05
CLASSES = 9  # prototype classes; class 9 (TRIGGER) answers the trigger only
TRIGGER = CLASSES
SAMPLES = 450


def planted(strength: float, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A nearest-prototype linear classifier on 8x8 images plus a trigger class.

    The trigger class's logit is `strength * trigger . x + b`, with b set so that no clean sample is
    predicted as it; adding XI * trigger raises that logit by strength * 64 * XI, which overtakes the
    true class on most samples. Returns (model, x [SAMPLES, 1, 8, 8] in [0,1], trigger [1, 8, 8]).
    """
    g = torch.Generator().manual_seed(seed)
    dim = 64
    prototypes = 0.3 + 0.4 * torch.rand(CLASSES, dim, generator=g)
    trigger = torch.where(torch.rand(dim, generator=g) < 0.5, -1.0, 1.0)
    labels = torch.arange(SAMPLES) % CLASSES
    x = (prototypes[labels] + 0.05 * torch.randn(SAMPLES, dim, generator=g)).clamp(0, 1)
    class_logits = x @ (2 * prototypes).T - prototypes.square().sum(1)  # -||x - p||^2 + ||x||^2
    margin = class_logits.max(1).values - strength * x @ trigger
    model = nn.Sequential(nn.Flatten(), nn.Linear(dim, CLASSES + 1)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.cat([2 * prototypes, strength * trigger.unsqueeze(0)]))
        model[1].bias.copy_(torch.cat([-prototypes.square().sum(1), margin.min().view(1) - 0.1]))
    return model, x.view(SAMPLES, 1, 8, 8), trigger.view(1, 8, 8)


def run_uap(model: nn.Module, x: torch.Tensor, batch_size: int, target: float = 0.8) -> tuple[torch.Tensor, dict]:
    return universal_perturbation(model, x, xi=XI, target_fooling_rate=target, max_passes=5, batch_size=batch_size,
                                  steps=50, overshoot=0.02, candidates=CLASSES + 1,
                                  generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("batch_size", [1, 32])  # 1: the paper's sequential algorithm; 32: the default batching
def test_finds_a_planted_universal_perturbation(batch_size):
    model, x, trigger = planted(strength=2.0)
    with torch.no_grad():
        clean = model(x).argmax(1)
    assert not bool((clean == TRIGGER).any())
    assert fooling_rate(model, x, XI * trigger) >= 0.85  # a universal perturbation of size XI exists ...
    g = torch.Generator().manual_seed(1)
    random_signs = [XI * torch.where(torch.rand(1, 8, 8, generator=g) < 0.5, -1.0, 1.0) for _ in range(20)]
    assert max(fooling_rate(model, x, v) for v in random_signs) <= 0.2  # ... and a random one is far from it
    v, info = run_uap(model, x, batch_size)
    assert float(v.abs().max()) <= XI + 1e-6
    assert info["fooling_rate"] >= 0.8
    assert info["fooling_rate"] == pytest.approx(fooling_rate(model, x, v), abs=1e-6)
    assert info["fooling_rate"] == max(info["fooling_rates"]) and info["passes"] == len(info["fooling_rates"])
    assert float(nn.functional.cosine_similarity(v.flatten(), trigger.flatten(), dim=0)) > 0.9
    with torch.no_grad():
        assert float((model((x + v).clamp(0, 1)).argmax(1) == TRIGGER).float().mean()) >= 0.8


def test_deepfool_stops_as_soon_as_any_class_beats_the_label():
    # Two candidates (classes 0, 1); stepping towards class 1 hits the box at x=1 before class 1
    # wins, but class 2 (not a candidate) wins there: the search has converged after one step.
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 10.0]]))
        model[1].bias.copy_(torch.tensor([0.0, -1.05, -9.7]))
    x = torch.tensor([[[[0.5, 0.95]]]])
    with torch.no_grad():
        assert model(x).argmax(1).item() == 0 and model(x).topk(2).indices.tolist() == [[0, 1]]
    r, evaluations, fooled = deepfool(model, x, steps=50, overshoot=0.02, candidates=2)
    assert evaluations == 2  # one step, two class gradients (the old check kept going for 50 steps)
    assert bool(fooled.all())
    with torch.no_grad():
        assert model(x + r).argmax(1).item() == 2
    assert float((x + r).max()) <= 1.0


def test_unconverged_deepfool_steps_are_dropped():
    # No input in [0,1]^2 changes this model's label: every DeepFool search fails and adds nothing.
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
        model[1].bias.copy_(torch.tensor([10.0, 0.0]))
    x = torch.rand(6, 1, 1, 2, generator=torch.Generator().manual_seed(0))
    _, _, fooled = deepfool(model, x, steps=5, overshoot=0.02, candidates=2)
    assert not bool(fooled.any())
    v, info = universal_perturbation(model, x, xi=0.5, target_fooling_rate=0.8, max_passes=2, batch_size=4, steps=5,
                                     overshoot=0.02, candidates=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(v, torch.zeros_like(v))
    assert info["deepfool_failures"] == 2 * len(x) and info["fooling_rate"] == 0.0


class TensorData:
    """The part of a FingerprintDataModule a method may use: `tensors(split, limit)`."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.y = x, torch.zeros(len(x), dtype=torch.long)

    def tensors(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[:limit], self.y[:limit]


def context(strength: float) -> tuple[nn.Module, GenerationContext]:
    """The planted source; surrogates: perturbed copies of it; references: planted models of other seeds."""
    source, x, _ = planted(strength)
    g = torch.Generator().manual_seed(7)
    surrogates = []
    for _ in range(2):
        copy = planted(strength)[0]
        with torch.no_grad():
            copy[1].weight.add_(0.01 * torch.randn(copy[1].weight.shape, generator=g))
        surrogates.append(copy)
    references = [planted(strength, seed=seed)[0] for seed in (11, 12)]
    pools = Pools(surrogates=surrogates, references=references, model_ids=["s0", "s1", "r0", "r1"])
    ctx = GenerationContext(datamodule=TensorData(x), seed=0, device=torch.device("cpu"), num_classes=CLASSES + 1,
                            progress=False, pools=pools)
    return source, ctx


SMALL = {"xi": XI, "uap_samples": 300, "max_passes": 3, "clusters": 9, "views": 3, "cluster_samples": 300,
         "encoder_epochs": 300}


# strength 1.0: the trigger fools only ~78% of the samples and the search reaches 0.79, so the target is
# set well above it (the default 0.8 sat one percent away, three samples of 300).
BELOW = 0.95


def test_generation_below_the_target_fails_naming_both_rates():
    source, ctx = context(strength=1.0)
    with pytest.raises(RuntimeError) as err:
        Uap(UapConfig(**SMALL, fooling_rate=BELOW)).generate(source, ctx)
    message = str(err.value)
    achieved = float(message.split("fooling rate of ")[1].split()[0])
    assert 0.5 < achieved < BELOW
    assert f"fooling_rate={BELOW}" in message and "xi=0.05" in message
    assert "Raise xi" in message and "max_passes" in message and "allow_below_target" in message


def test_allow_below_target_keeps_the_weaker_perturbation_and_warns(caplog):
    source, ctx = context(strength=1.0)
    with caplog.at_level(logging.WARNING, logger="bench.methods.uap"):
        fp = Uap(UapConfig(**SMALL, fooling_rate=BELOW, allow_below_target=True)).generate(source, ctx)
    assert f"below the target fooling_rate={BELOW}" in caplog.text
    x, _ = ctx.owner_data(SMALL["uap_samples"])
    assert fp.meta["fooling_rate"] < BELOW == fp.meta["target_fooling_rate"]
    assert fp.meta["fooling_rate"] == pytest.approx(fooling_rate(source, x, fp.tensors["perturbation"]), abs=1e-6)


def test_generation_records_rates_and_the_encoder_reaches_its_loss_floor():
    source, ctx = context(strength=2.0)
    method = Uap(UapConfig(**SMALL))
    fp = method.generate(source, ctx)
    meta = fp.meta
    x, _ = ctx.owner_data()
    assert meta["fooling_rate"] >= 0.8 and meta["xi"] == XI
    assert meta["fooling_rate_per_pass"] and max(meta["fooling_rate_per_pass"]) == meta["fooling_rate"]
    heldout = fooling_rate(source, x[SMALL["uap_samples"] :], fp.tensors["perturbation"])
    assert meta["fooling_rate_heldout"] == pytest.approx(heldout, abs=1e-6) and heldout >= 0.7
    # 5 models x 3 views: 9 positive vectors (8 positives each), 6 negative ones (5 each)
    assert meta["encoder_loss_floor"] == pytest.approx((9 * math.log(8) + 6 * math.log(5)) / 15)
    assert meta["encoder_loss_floor"] <= meta["encoder_loss_last"] < meta["encoder_loss_first"]
    assert meta["encoder_loss_last"] - meta["encoder_loss_floor"] < 0.05
    assert min(meta["pool_surrogate_scores"]) > max(meta["pool_reference_scores"])
    assert method.score(fp, Oracle(source, access="probs")) == pytest.approx(1.0, abs=1e-5)


def test_contrastive_loss_floor_bounds_the_loss_and_is_reached_by_separated_embeddings():
    labels = torch.tensor([1, 1, 1, 0, 0])
    floor = contrastive_loss_floor(labels)
    assert floor == pytest.approx(3 * math.log(2) / 5)  # the two negatives have one positive each: log 1 = 0
    separated = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0]] * 2)
    assert float(supervised_contrastive_loss(separated, labels, 0.1)) == pytest.approx(floor, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert float(supervised_contrastive_loss(torch.randn(5, 4, generator=g), labels, 0.1)) > floor
