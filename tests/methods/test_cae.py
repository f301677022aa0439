"""CAE's loss against the paper's formula, and its seed filter, on tiny fixed linear models.

The digits-world tests of CAE (examples in the ball, conferrable on the pools, scores) live in
tests/methods/test_baselines.py with the other baselines.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.methods.base import GenerationContext, Pools
from bench.methods.cae import Cae, CaeConfig, cae_loss, select_seeds

FEATURES, CLASSES = 4, 3


def linear(seed: int, scale: float = 3.0) -> nn.Module:
    """A fixed linear classifier on 4 features (large weights, so classes change inside the unit cube)."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(FEATURES, CLASSES)
    with torch.no_grad():
        model.weight.copy_(scale * torch.randn(CLASSES, FEATURES, generator=generator))
        model.bias.copy_(torch.randn(CLASSES, generator=generator))
    return model.eval()


def paper_loss(x: torch.Tensor, x0: torch.Tensor, source: nn.Module, surrogates: list[nn.Module],
               references: list[nn.Module], keep_s: torch.Tensor, keep_r: torch.Tensor, cfg: CaeConfig) -> torch.Tensor:
    """The paper's loss written out sample by sample, member by member, with nothing detached.

    L = alpha H(1, max_t ME_t(x')) - beta H(M(x0), M(x')) + gamma H(M(x'), S(x')), H(p, q) = -sum p log q,
    ME = softmax(S (1 - R)) (or the bare product), S / R = mean softmax of the kept surrogates / references.
    """
    total = torch.zeros(())
    for b in range(len(x)):
        kept_s = [m(x[b]).softmax(0) for m, keep in zip(surrogates, keep_s[:, b]) if keep]
        kept_r = [m(x[b]).softmax(0) for m, keep in zip(references, keep_r[:, b]) if keep]
        mean_s = sum(kept_s) / len(kept_s)
        mean_r = sum(kept_r) / len(kept_r)
        membership = mean_s * (1 - mean_r)
        if cfg.ensemble_softmax:
            membership = membership.softmax(0)
        source_x, source_x0 = source(x[b]).softmax(0), source(x0[b]).softmax(0)
        h_conferrable = -torch.log(membership.max())
        h_adversarial = -(source_x0 * source_x.log()).sum()
        h_agreement = -(source_x * mean_s.log()).sum()
        total = total + cfg.alpha * h_conferrable - cfg.beta * h_adversarial + cfg.gamma * h_agreement
    return total


@pytest.mark.parametrize("ensemble_softmax", [True, False])
def test_loss_and_its_gradient_equal_the_papers_formula(ensemble_softmax):
    torch.manual_seed(0)
    source, surrogates, references = linear(0), [linear(1), linear(2)], [linear(3), linear(4), linear(5)]
    cfg = CaeConfig(alpha=1.0, beta=0.7, gamma=1.3, ensemble_softmax=ensemble_softmax)
    x0 = torch.rand(5, FEATURES)
    x = (x0 + 0.2 * torch.randn(5, FEATURES)).clamp(0, 1).requires_grad_(True)
    keep_s = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 0, 1, 1]], dtype=torch.float32)
    keep_r = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 1, 0, 1], [1, 0, 1, 1, 1]], dtype=torch.float32)

    with torch.no_grad():
        seed_probs = source(x0).softmax(1)
    ours = cae_loss(source(x), seed_probs, torch.stack([m(x).softmax(1) for m in surrogates]),
                    torch.stack([m(x).softmax(1) for m in references]), keep_s, keep_r, cfg)
    (grad_ours,) = torch.autograd.grad(ours.sum(), x)
    theirs = paper_loss(x, x0, source, surrogates, references, keep_s, keep_r, cfg)
    (grad_theirs,) = torch.autograd.grad(theirs, x)

    assert ours.shape == (5,)
    assert float(ours.detach().sum()) == pytest.approx(float(theirs.detach()), rel=1e-5)
    assert torch.allclose(grad_ours, grad_theirs, rtol=1e-4, atol=1e-6)
    assert torch.equal(grad_ours.sign(), grad_theirs.sign())  # the signed step CAE takes is the paper's


def world(misclassified: list[int], n: int = 40) -> tuple[GenerationContext, nn.Module]:
    """Owner data on which the source errs exactly at `misclassified`; surrogates are the source itself,
    the one reference always says class 0, so any x' the source moves to class 1 or 2 is conferrable."""
    source = linear(7)
    x = torch.rand(n, FEATURES, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        y = source(x).argmax(1)
    y[misclassified] = (y[misclassified] + 1) % CLASSES
    always_zero = nn.Linear(FEATURES, CLASSES)
    with torch.no_grad():
        always_zero.weight.zero_()
        always_zero.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    pools = Pools(surrogates=[source, source], references=[always_zero.eval()], model_ids=["s", "s", "r"])

    class Data:
        def tensors(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            return (x, y) if limit is None else (x[:limit], y[:limit])

    ctx = GenerationContext(datamodule=Data(), seed=0, device=torch.device("cpu"), num_classes=CLASSES,
                            pools=pools, progress=False)
    return ctx, source


def test_select_seeds_skips_samples_the_source_gets_wrong():
    ctx, source = world([0, 2, 4, 6, 30])
    x, y = ctx.owner_data()
    seeds, searched = select_seeds(source, ctx, 10, "correct")
    assert torch.equal(seeds, x[[1, 3, 5, 7, 8, 9, 10, 11, 12, 13]]) and searched == 14
    seeds, searched = select_seeds(source, ctx, 10, "all")
    assert torch.equal(seeds, x[:10]) and searched == 10
    seeds, searched = select_seeds(source, ctx, 40, "correct")  # the split runs out: 35 correct of 40
    assert len(seeds) == 35 and searched == 40


@pytest.mark.parametrize("seeds", ["correct", "all"])
def test_generate_starts_only_from_seeds_the_decision_allows(seeds):
    misclassified = [0, 2, 4, 6]
    ctx, source = world(misclassified)
    x, y = ctx.owner_data()
    config = CaeConfig(n_fingerprints=10, candidates=10, eps=1.0, iterations=20, threshold=0.9, seeds=seeds,
                       surrogate_archs=["mlp"], reference_archs=["mlp"])
    fp = Cae(config).generate(source, ctx)
    stored = fp.tensors["seeds"]
    index = (stored.unsqueeze(1) == x.unsqueeze(0)).all(2).float().argmax(1)  # owner index of each stored seed
    assert torch.equal(x[index], stored) and fp.meta["candidates_tried"] == 10
    with torch.no_grad():
        assert torch.equal(source(stored).argmax(1), fp.tensors["seed_labels"])
    if seeds == "correct":
        assert torch.equal(fp.tensors["seed_labels"], y[index])  # every seed is classified correctly
        assert fp.meta["owner_samples_searched"] == 14 and int(index.max()) < 14
    else:
        assert fp.meta["owner_samples_searched"] == 10 and int(index.max()) < 10
        assert set(index.tolist()) & set(misclassified)  # the unfiltered run does use misclassified seeds
    assert fp.meta["seeds"] == seeds


def test_too_few_correct_seeds_for_candidates_says_what_to_change():
    ctx, source = world(list(range(0, 40, 2)))  # 20 correct of 40
    with pytest.raises(ValueError, match="candidates=30 exceeds .* 20 samples the source classifies correctly"):
        Cae(CaeConfig(n_fingerprints=10, candidates=30, surrogate_archs=["mlp"], reference_archs=["mlp"])).generate(
            source, ctx)
    with pytest.raises(ValueError, match="cae.seeds='every' is not one of correct, all"):
        CaeConfig(seeds="every")
