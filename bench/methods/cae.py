"""CAE: conferrable adversarial examples (Lukas et al., "Deep Neural Network Fingerprinting by
Conferrable Adversarial Examples", ICLR 2021)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.checks import check, check_choice
from bench.methods._common import (
    PooledMethod,
    PoolFields,
    input_gradient,
    label_agreement,
    require_pool_fields,
)
from bench.methods.base import METHODS, Fingerprint, GenerationContext, kept_fraction_target
from bench.modes import eval_mode

if TYPE_CHECKING:
    from bench.oracle import Oracle

log = logging.getLogger(__name__)

TINY = 1e-12  # keeps log() finite
SEED_CHOICES = ("correct", "all")


@dataclass
class CaeConfig(PoolFields):
    """CAE hyperparameters; defaults and their sources are listed in docs/methods/cae.md; the defender-pool
    fields (inherited from `PoolFields`: surrogate_*, reference_*, pool_*) in docs/pools.md."""

    n_fingerprints: int = 100  # kept: the most conferrable accepted examples; queries per suspect <= this
    candidates: int | None = None  # seeds tried, the first of the owner split; None: 5 x n_fingerprints (or the split)
    eps: float = 0.025  # L-inf radius around each seed (pixels in [0,1])
    step_size: float | None = None  # signed-gradient step; None: eps / 10
    iterations: int = 100  # optimisation steps per seed (the best accepted iterate is kept)
    dropout: float = 0.3  # ensemble member dropout: each pool model is left out of an iterate with this probability
    alpha: float = 1.0  # weight of the conferrability term CE(1, max_t ME_t)
    beta: float = 0.1  # weight of the adversarial term -CE(f(x0), f(x')); 1.0 finds none (docs/methods/cae.md)
    gamma: float = 0.1  # weight of the agreement term CE(f(x'), S(x')); 1.0 pulls f back to its seed label
    ensemble_softmax: bool = True  # ME = softmax(S * (1 - R)) as in the paper's Eq. 5; false: the bare product
    seeds: str = "correct"  # correct: only owner samples the source classifies correctly (paper) | all
    threshold: float = 0.85  # accept x' if Transfer(S) * (1 - Transfer(R)) >= threshold (and the label changed)
    batch_size: int | None = None  # seeds optimised together; None: all candidates at once
    seed: int = 0  # dropout masks: generator seeded with ctx.seed * 1_000_003 + seed

    def __post_init__(self) -> None:
        check("cae.n_fingerprints", self.n_fingerprints, self.n_fingerprints >= 1, ">= 1")
        check("cae.candidates", self.candidates, self.candidates is None or self.candidates >= self.n_fingerprints,
              ">= n_fingerprints, or null")
        check("cae.eps", self.eps, 0 < self.eps <= 1, "in (0, 1]")
        check("cae.step_size", self.step_size, self.step_size is None or self.step_size > 0,
              "> 0, or null (eps / 10)")
        check("cae.iterations", self.iterations, self.iterations >= 1, ">= 1")
        check("cae.dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)")
        for name in ("alpha", "beta", "gamma"):
            check(f"cae.{name}", getattr(self, name), getattr(self, name) >= 0, ">= 0")
        check("cae.threshold", self.threshold, 0 < self.threshold <= 1, "in (0, 1]")
        check("cae.batch_size", self.batch_size, self.batch_size is None or self.batch_size >= 1, ">= 1, or null")
        check_choice("cae.seeds", self.seeds, SEED_CHOICES)
        require_pool_fields("cae", self)

    def resolved_step_size(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / 10


def conferrability(source_labels: torch.Tensor, surrogate_labels: torch.Tensor,
                   reference_labels: torch.Tensor) -> torch.Tensor:
    """Transfer(S) * (1 - Transfer(R)): share of surrogates / references agreeing with the source, per sample.

    Args:
        source_labels: [B] the source's labels at x'.
        surrogate_labels: [S, B]; reference_labels: [R, B].
    """
    transfer_s = (surrogate_labels == source_labels).float().mean(0)
    transfer_r = (reference_labels == source_labels).float().mean(0)
    return transfer_s * (1 - transfer_r)


def cae_loss(source_logits: torch.Tensor, seed_probs: torch.Tensor, surrogate_probs: torch.Tensor,
             reference_probs: torch.Tensor, keep_s: torch.Tensor, keep_r: torch.Tensor, cfg: CaeConfig) -> torch.Tensor:
    """Per-sample CEM loss `alpha H(1, max_t ME_t) - beta H(M(x0), M(x')) + gamma H(M(x'), S(x'))` at x'.

    Gradients flow through every model output at x' (both sides of the third term), as the paper writes it.

    Args:
        source_logits: [B, C] the source's logits at x'.
        seed_probs: [B, C] the source's softmax at the seeds x0 (a constant target).
        surrogate_probs: [S, B, C], reference_probs: [R, B, C] the pools' softmax at x'.
        keep_s: [S, B], keep_r: [R, B] member-dropout keep masks (1 keeps a model for that sample).
        cfg: supplies alpha, beta, gamma and ensemble_softmax.

    Returns:
        [B] the loss of each sample (the caller sums: samples do not interact).
    """
    keep_s, keep_r = keep_s.unsqueeze(2), keep_r.unsqueeze(2)
    mean_s = (surrogate_probs * keep_s).sum(0) / keep_s.sum(0)
    mean_r = (reference_probs * keep_r).sum(0) / keep_r.sum(0)
    ensemble = mean_s * (1 - mean_r)  # high where the surrogates say t and the references do not
    if cfg.ensemble_softmax:
        ensemble = ensemble.softmax(1)
    log_p = source_logits.log_softmax(1)
    conferrable_term = -(ensemble.max(1).values + TINY).log()  # H(1, p) = -log p
    adversarial_term = -(seed_probs * log_p).sum(1)
    agreement_term = -(log_p.exp() * (mean_s + TINY).log()).sum(1)
    return cfg.alpha * conferrable_term - cfg.beta * adversarial_term + cfg.gamma * agreement_term


def member_masks(members: int, batch: int, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """[members, batch] keep-masks with member dropout; every column keeps at least one member."""
    draws = torch.rand(members, batch, generator=generator)
    keep = draws >= dropout
    empty = ~keep.any(0)
    keep[draws.argmax(0)[empty], empty.nonzero().flatten()] = True
    return keep.float()


def select_seeds(source: nn.Module, ctx: GenerationContext, count: int, mode: str,
                 chunk: int = 1024) -> tuple[torch.Tensor, int]:
    """The first `count` owner samples, or with mode "correct" the first `count` the source classifies correctly.

    Reads the owner split in growing prefixes, so a large split is never loaded for a few seeds.

    Returns:
        (seeds, searched): up to `count` seeds (fewer only if the split runs out) and how many owner
        samples were read to find them.
    """
    limit = count
    while True:
        x, y = ctx.owner_data(limit)
        if mode == "all":
            return x, len(x)
        with torch.no_grad():
            correct = torch.cat([source(part).argmax(1) for part in x.split(chunk)]) == y
        chosen = correct.nonzero().flatten()[:count]
        if len(chosen) == count or len(x) < limit:  # enough, or the split is exhausted
            return x[chosen], int(chosen[-1]) + 1 if len(chosen) == count else len(x)
        limit *= 2


@METHODS.register
class Cae(PooledMethod):
    """CAE (Lukas et al., ICLR 2021): label-only; adversarial examples that transfer to surrogates, not references.

    Needs defender pools: surrogates (extracted from the source) and references (trained
    independently). From owner seeds the source classifies correctly, signed-gradient steps in an
    L-inf ball of `eps` minimise `alpha CE(1, max_t ME_t) - beta CE(f(x0), f(x')) + gamma CE(f(x'), S(x'))`
    with `ME = softmax(S * (1 - R))` (S, R: mean softmax of the surrogates / references, with member
    dropout); see docs/methods/cae.md for how this follows the paper.
    An example is kept if the source's label changed and its conferrability
    Transfer(S) * (1 - Transfer(R)) >= `threshold`. Score = agreement of the suspect's labels with
    the source's (higher = more likely derived; the literature decides at 0.75). Queries per
    suspect: the number of examples kept (<= n_fingerprints, 100).
    """

    name = "cae"
    Config = CaeConfig
    # contract tests: 20 candidates x 10 iterations flipped 2 labels, or none with oneDNN's AVX2 kernels; these find 4-6
    test_config = CaeConfig(n_fingerprints=5, candidates=40, eps=0.25, iterations=20)
    access = "label"
    version = "2"  # 2: gradient through both sides of the third term, softmax ME, correctly classified seeds
    budget_tensors = ("inputs", "labels", "seeds", "seed_labels", "conferrability")  # budgets: an item is one example
    paper_results = {"cifar10": "0.80/0.48/0.64"}  # AUC/T1%F/T10%F in the ADV-TRA paper's Table 2 (Xu et al., 2024)

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        cfg: CaeConfig = self.config
        pools = self.pools(ctx)
        wanted = cfg.candidates if cfg.candidates is not None else 5 * cfg.n_fingerprints
        generator = self.generator(ctx)
        models = [source, *pools.surrogates, *pools.references]
        chunks = []
        with eval_mode(*models):
            x0, searched = select_seeds(source, ctx, wanted, cfg.seeds)
            if len(x0) == 0:
                raise RuntimeError("cae: the source classifies none of the owner samples correctly, so there is no "
                                   "seed to start from; check the source, or set seeds=all.")
            if cfg.candidates is not None and len(x0) < cfg.candidates:
                which = "samples" if cfg.seeds == "all" else "samples the source classifies correctly"
                raise ValueError(f"cae: candidates={cfg.candidates} exceeds the owner split's {len(x0)} {which}; "
                                 "lower candidates (or set it to null).")
            batch_size = cfg.batch_size or len(x0)
            bar = tqdm(total=cfg.iterations * len(x0.split(batch_size)), desc="cae", unit="step",
                       disable=not ctx.progress, leave=False)
            for seeds in x0.split(batch_size):
                chunks.append(self._optimise(source, pools.surrogates, pools.references, seeds, generator, bar))
            bar.close()
        found = {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
        accepted = found["accepted"]
        if not bool(accepted.any()):
            raise RuntimeError(f"cae: none of the {len(x0)} seeds gave a conferrable example: the source's label "
                               f"changed for {int(found['changed'].sum())} of them and the best conferrability was "
                               f"{float(found['conferrability'].max()):.2f} (needed >= {cfg.threshold}); "
                               "raise eps or iterations, lower threshold, or use more diverse pools.")
        # Accepted examples first, most conferrable first; ties keep candidate order.
        order = torch.argsort(2.0 * (~accepted).float() - found["conferrability"], stable=True)
        keep = order[: min(cfg.n_fingerprints, int(accepted.sum()))]
        if len(keep) < cfg.n_fingerprints:
            log.warning("cae: only %d of %d requested examples were conferrable (%d seeds tried).", len(keep),
                        cfg.n_fingerprints, len(x0))
        tensors = {"inputs": found["inputs"][keep], "labels": found["labels"][keep], "seeds": x0[keep],
                   "seed_labels": found["seed_labels"][keep], "conferrability": found["conferrability"][keep]}
        meta = {
            "n_fingerprints": len(keep),
            "n_requested": cfg.n_fingerprints,
            "candidates_tried": len(x0),
            "seeds": cfg.seeds,
            "owner_samples_searched": searched,
            "accepted": int(accepted.sum()),
            "acceptance_rate": float(accepted.float().mean()),
            "label_changed": int(found["changed"].sum()),
            "mean_conferrability": float(found["conferrability"][keep].mean()),
            "surrogates": len(pools.surrogates),
            "references": len(pools.references),
            "step_size": cfg.resolved_step_size(),
            "queries_per_suspect": len(keep),
            "gradient_evaluations": cfg.iterations * len(x0) * len(models),
        }
        return Fingerprint(method=self.name, tensors={k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                           meta=meta)

    def generation_target(self, fp: Fingerprint) -> dict[str, Any] | None:
        """Conferrable examples kept / n_fingerprints requested, floor 0.5 (docs/methods/cae.md)."""
        return kept_fraction_target("conferrable_kept_fraction", fp.meta["n_fingerprints"], fp.meta["n_requested"])

    def _optimise(self, source: nn.Module, surrogates: list[nn.Module], references: list[nn.Module],
                  x0: torch.Tensor, generator: torch.Generator, bar: tqdm) -> dict[str, torch.Tensor]:
        """Signed-gradient descent in the eps-ball; keeps, per seed, the last iterate of best conferrability."""
        cfg: CaeConfig = self.config
        step = cfg.resolved_step_size()
        with torch.no_grad():
            p0 = source(x0).softmax(1)
        seed_labels = p0.argmax(1)
        x = x0.clone()
        best_x, best_labels = x0.clone(), seed_labels.clone()
        best_score = torch.full((len(x0),), -1.0, device=x0.device)  # -1: label unchanged so far
        for iteration in range(cfg.iterations + 1):
            x.requires_grad_(True)
            logits = source(x)
            probs_s = torch.stack([m(x).softmax(1) for m in surrogates])  # [S, B, C]
            probs_r = torch.stack([m(x).softmax(1) for m in references])  # [R, B, C]
            with torch.no_grad():  # acceptance of the current iterate, on the full pools (no dropout)
                labels = logits.argmax(1)
                conf = conferrability(labels, probs_s.argmax(2), probs_r.argmax(2))
                score = torch.where(labels != seed_labels, conf, torch.full_like(conf, -1.0))
                better = score >= best_score
                best_score = torch.where(better, score, best_score)
                best_x[better], best_labels[better] = x.detach()[better], labels[better]
            if iteration == cfg.iterations:
                break
            keep_s = member_masks(len(surrogates), len(x), cfg.dropout, generator).to(x.device)
            keep_r = member_masks(len(references), len(x), cfg.dropout, generator).to(x.device)
            loss = cae_loss(logits, p0, probs_s, probs_r, keep_s, keep_r, cfg)
            grad = input_gradient(loss.sum(), x)
            with torch.no_grad():
                x = x - step * grad.sign()
                x = torch.minimum(torch.maximum(x, x0 - cfg.eps), x0 + cfg.eps).clamp(0.0, 1.0)
            bar.update(1)
        accepted = best_score >= cfg.threshold
        return {"inputs": best_x, "labels": best_labels, "seed_labels": seed_labels, "accepted": accepted,
                "changed": best_score >= 0, "conferrability": best_score.clamp(min=0.0)}

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return label_agreement(fp, suspect)
