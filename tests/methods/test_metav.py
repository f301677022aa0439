"""MetaV: the meta-verifier's pieces on hand-made inputs, and the method on the digits world of
tests/methods/test_baselines.py (a convnet source, two surrogates and two references as pools)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cli import main
from bench.methods import METHODS
from bench.methods.base import Fingerprint
from bench.methods.metav import (
    Metav,
    MetavConfig,
    balanced_bce,
    build_verifier,
    magnitude_pruned,
    model_outputs,
    probability,
    verifier_from_tensors,
)
from bench.nets import build_model
from bench.oracle import AccessError, Oracle
from tests.conftest import SMOKE, smoke_overrides
from tests.methods.conftest import fit
from tests.methods.test_baselines import World, world  # noqa: F401  (the shared digits world fixture)

# Small enough for a few seconds on one CPU thread; the defaults otherwise (weight decay, reference variants).
QUICK = {"n_fingerprints": 20, "steps": 100, "finetune_variants": 1, "finetune_steps": 10}


# -- the algorithm's pieces on constructed inputs -----------------------------------------------------
def test_balanced_bce_weights_both_classes_equally():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    labels = torch.tensor([1, 1, 1, 0])
    # positives: mean of -log sigmoid(2), -log sigmoid(-1), -log sigmoid(0.5); negative: -log(1 - sigmoid(3))
    pos = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0)) + math.log1p(math.exp(-0.5))) / 3
    neg = math.log1p(math.exp(3.0))
    assert float(balanced_bce(logits, labels)) == pytest.approx(0.5 * (pos + neg), rel=1e-6)
    # plain mean BCE would weigh the three positives 3:1; the balanced loss must not
    assert float(balanced_bce(logits, labels)) != pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, labels.float())), rel=1e-3)


def test_probability_is_an_overflow_free_sigmoid():
    for logit in (-800.0, -3.0, 0.0, 2.5, 800.0):
        assert probability(logit) == pytest.approx(1 / (1 + math.exp(-max(min(logit, 700), -700))), abs=1e-12)
    assert probability(0.0) == 0.5 and probability(800.0) == 1.0 and probability(-800.0) == 0.0


def test_label_outputs_are_one_hot_with_the_softmax_gradient():
    model = nn.Linear(3, 4)
    x = torch.rand(5, 3, requires_grad=True)
    hard = model_outputs(model, x, "labels")
    assert torch.equal(hard.detach(), F.one_hot(model(x).argmax(1), 4).float())
    (grad_hard,) = torch.autograd.grad((hard * torch.arange(4.0)).sum(), x)
    (grad_soft,) = torch.autograd.grad((model_outputs(model, x, "probs") * torch.arange(4.0)).sum(), x)
    assert torch.allclose(grad_hard, grad_soft) and grad_hard.abs().sum() > 0  # straight-through


def test_magnitude_pruning_zeroes_exactly_the_smallest_weights():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -0.5], [0.9, -0.2]]))
        model[1].weight.copy_(torch.tensor([[0.3, -0.05]]))
    pruned = magnitude_pruned(model, 0.5)  # 6 weights: the 3 smallest |w| are 0.05, 0.1, 0.2
    assert torch.equal(pruned[0].weight, torch.tensor([[0.0, -0.5], [0.9, 0.0]]))
    assert torch.equal(pruned[1].weight, torch.tensor([[0.3, 0.0]]))
    assert torch.equal(pruned[0].bias, model[0].bias) and model[0].weight[0, 0] == 0.1  # original untouched


def test_verifier_rebuilds_from_flat_tensors_alone():
    verifier = build_verifier(12, [5, 3], torch.Generator().manual_seed(0))
    assert [m.out_features for m in verifier if isinstance(m, nn.Linear)] == [5, 3, 1]
    tensors = {"inputs": torch.zeros(1), **{f"verifier.{k}": v for k, v in verifier.state_dict().items()}}
    rebuilt = verifier_from_tensors(tensors)
    x = torch.rand(4, 12)
    assert torch.equal(rebuilt(x), verifier(x))
    linear = verifier_from_tensors({f"verifier.{k}": v for k, v in build_verifier(12, []).state_dict().items()})
    assert len(linear) == 1


# -- the method on the digits world ------------------------------------------------------------------
@pytest.fixture(scope="module")
def shuffled(world: World) -> nn.Module:  # noqa: F811
    """A convnet trained on the owner's digits with shuffled labels: never derived from the source."""
    x, y = world.ctx.owner_data()
    labels = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    model = build_model("convnet", in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.5], seed=41)
    return fit(model, x, labels, seed=41, epochs=8, batch_size=128)


@pytest.fixture(scope="module")
def generated(world: World) -> tuple[Metav, Fingerprint]:  # noqa: F811
    method = Metav(MetavConfig(**QUICK))
    return method, method.generate(world.source, world.context())


def test_source_is_a_confident_positive_and_shuffled_labels_a_negative(world, generated, shuffled):  # noqa: F811
    method, fp = generated
    scores = {name: method.score(fp, Oracle(model, access="probs")) for name, model in
              (("source", world.source), ("derived", world.derived), ("independent", world.independent),
               ("shuffled", shuffled))}
    assert scores["source"] >= 0.99 and scores["source"] >= max(scores.values()) - 1e-3, scores  # the plateau
    assert scores["derived"] >= 0.9, scores  # a fine-tuned copy of the source, never seen in generation
    assert scores["shuffled"] < 0.75 and scores["shuffled"] < scores["derived"] - 0.2, scores
    assert scores["independent"] < scores["source"], scores


def test_fingerprint_inputs_and_pool_training(world, generated):  # noqa: F811
    _, fp = generated
    inputs = fp.tensors["inputs"]
    assert inputs.shape == (20, 1, 8, 8) and float(inputs.min()) >= 0 and float(inputs.max()) <= 1
    x_owner, _ = world.ctx.owner_data()
    moved = (inputs.unsqueeze(1) - x_owner[:300].unsqueeze(0)).abs().flatten(2).amax(2).min(1).values
    assert float(moved.max()) > 0.05  # the inputs were optimised away from the owner samples they started at
    groups = fp.meta["pool_models"]
    assert groups == {"source": 1, "surrogates": 2, "variants": 3, "references": 2, "reference_variants": 6}
    positives = 1 + groups["surrogates"] + groups["variants"]
    assert fp.meta["pool_accuracy"] == 1.0 and fp.meta["loss_last"] < fp.meta["loss_first"]
    assert min(fp.meta["pool_scores"][:positives]) > max(fp.meta["pool_scores"][positives:])


def test_generation_is_deterministic_per_seed(world):  # noqa: F811
    config = {"n_fingerprints": 8, "steps": 5, "finetune_steps": 2}
    first, again, other = (Metav(MetavConfig(**config, seed=seed)).generate(world.source, world.context())
                           for seed in (0, 0, 1))
    assert set(first.tensors) == set(again.tensors)
    assert all(torch.equal(first.tensors[k], again.tensors[k]) for k in first.tensors)
    assert not torch.equal(first.tensors["inputs"], other.tensors["inputs"])
    assert not torch.equal(first.tensors["verifier.0.weight"], other.tensors["verifier.0.weight"])


def test_queries_are_counted_and_the_fingerprint_cannot_be_subsampled(world, generated):  # noqa: F811
    method, fp = generated
    oracle = Oracle(world.independent, access="probs")
    method.score(fp, oracle)
    assert oracle.queries == fp.meta["queries_per_suspect"] == 20
    assert method.budget_items(fp) is None
    assert method.at_budget(fp, 19, seed=0) is None  # the verifier reads all 20 outputs
    assert method.at_budget(fp, 20, seed=0) is fp


def test_label_only_variant_never_asks_for_probabilities(world):  # noqa: F811
    method = Metav(MetavConfig(**QUICK, outputs="labels"))
    assert method.access == "label" and Metav().access == "probs" == Metav.access
    fp = method.generate(world.source, world.context())
    oracle = Oracle(world.source, access=method.access)
    with pytest.raises(AccessError):
        oracle.probs(fp.tensors["inputs"][:1])  # what the label-only oracle does if asked
    calls = []
    oracle.probs = lambda x: calls.append(x)  # a spy: any call is a failure
    score = method.score(fp, oracle)
    assert calls == [] and oracle.queries == 20 and score >= 0.9


def test_a_fingerprint_is_scored_only_with_the_outputs_it_was_trained_on(world, generated):  # noqa: F811
    _, fp = generated
    with pytest.raises(ValueError, match="trained on outputs='probs'"):
        Metav(MetavConfig(outputs="labels")).score(fp, Oracle(world.source, access="label"))


def test_shares_the_default_pool_with_cae_and_uap():
    assert Metav().pool_spec() == METHODS.get("cae")().pool_spec() == METHODS.get("uap")().pool_spec()


@pytest.mark.parametrize("field, bad, fragment", [
    ("outputs", "logits", "metav.outputs='logits' is not one of probs, labels"),
    ("n_fingerprints", 0, "metav.n_fingerprints=0 must be >= 1"),
    ("prune_rates", [0.5, 1.0], "metav.prune_rates=[0.5, 1.0] must be a list of rates in (0, 1)"),
])
def test_bad_config_is_refused_before_any_work(tmp_path, capsys, field, bad, fragment):
    root = tmp_path / "out"
    code = main(["run", str(SMOKE), *smoke_overrides(root), "methods=[metav]", f"methods.metav.{field}={bad}"])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err, err
    assert not any(p.is_file() for p in root.rglob("*"))
