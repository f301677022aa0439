"""ModelDiff: decision distance vectors on input pairs (Li, Zhang, Liu, Yang and Liu, "ModelDiff: Testing-Based
DNN Similarity Comparison for Model Reuse Detection", ISSTA 2021)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.checks import check, check_choice, check_range
from bench.methods.base import (
    METHODS,
    Fingerprint,
    FingerprintMethod,
    GenerationContext,
    kept_fraction_target,
)

if TYPE_CHECKING:
    from bench.oracle import Oracle

log = logging.getLogger(__name__)

DISTANCES = ("cosine", "euclidean")


@dataclass
class ModeldiffConfig:
    """ModelDiff hyperparameters; defaults and their sources are listed in docs/methods/modeldiff.md."""

    n_pairs: int = 100  # n: input pairs (x_i, x'_i); queries per suspect = 2n (authors' code: N_INPUT_PAIRS = 100)
    iterations: int = 1000  # mutations tried by the hill-climbing search (authors' code: max_iterations = 1000)
    epsilon: float = 0.2  # one mutation adds or subtracts epsilon at one input value (authors' code: 0.2)
    distance: str = "cosine"  # DDV element = distance between a pair's output vectors: cosine (paper) | euclidean
    split: str = "owner"  # the owner's data the seeds x_i come from: owner (the source's training data) | test
    seed: int = 0  # seed draw and mutations: generator seeded with ctx.seed * 1_000_003 + seed

    def __post_init__(self) -> None:
        check("modeldiff.n_pairs", self.n_pairs, self.n_pairs >= 2, ">= 2 (a cosine over one pair is always 1)")
        check("modeldiff.iterations", self.iterations, self.iterations >= 1, ">= 1")
        check_range("modeldiff.epsilon", self.epsilon, 0.0, 1.0, low_open=True)
        check_choice("modeldiff.distance", self.distance, DISTANCES)
        check_choice("modeldiff.split", self.split, ("owner", "test"))


def decision_distance_vector(probs_a: torch.Tensor, probs_b: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """DDV: per pair, the distance between a model's outputs on x_i (`probs_a`, [n, C]) and x'_i (`probs_b`).

    Cosine distance `1 - cos(a, b)` is computed as `||a/|a| - b/|b|||^2 / 2` (the same value, without the
    cancellation of `1 - cos` near 1), in float64: a small perturbation moves the outputs only slightly.
    """
    a, b = probs_a.double(), probs_b.double()
    if distance == "euclidean":
        return (a - b).norm(dim=1)
    unit_a, unit_b = nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1)
    return (unit_a - unit_b).square().sum(1) / 2


def ddv_similarity(ddv_a: torch.Tensor, ddv_b: torch.Tensor) -> float:
    """Cosine similarity between two DDVs (the paper's model similarity); 0 when either is all zeros."""
    a, b = ddv_a.double().flatten(), ddv_b.double().flatten()
    norms = float(a.norm() * b.norm())
    if norms == 0.0:
        return 0.0
    return max(-1.0, min(1.0, float(a @ b) / norms))  # clamp: rounding may leave |cos| a hair above 1


def search_objective(probs_a: torch.Tensor, probs_b: torch.Tensor) -> float:
    """The search's score on the source: divergence x diversity (the authors' code, restricted to the source).

    divergence = mean over pairs of ||f(x'_i) - f(x_i)||_2 (how far the mutations moved the outputs);
    diversity = mean over all (2n)^2 ordered pairs of the 2n inputs of the L2 distance between outputs.
    """
    a, b = probs_a.double(), probs_b.double()
    divergence = (b - a).norm(dim=1).mean()
    outputs = torch.cat([a, b])
    diversity = torch.cdist(outputs, outputs).mean()
    return float(divergence * diversity)


@METHODS.register
class Modeldiff(FingerprintMethod):
    """ModelDiff (Li et al., ISSTA 2021): probabilities; cosine similarity of decision distance vectors.

    Fingerprint: n pairs (x_i, x'_i): x_i owner samples, x'_i = x_i mutated by a hill-climbing search
    on the source (one input value +-epsilon at a time, kept when it raises divergence x diversity of
    the source's outputs), and the source's DDV: per pair, the cosine distance between its softmax
    outputs on x_i and x'_i. Score = cosine similarity between the source's and the suspect's DDV
    (1 = the source's own pattern; higher = more likely derived). Queries per suspect: 2n (200).
    """

    name = "modeldiff"
    Config = ModeldiffConfig
    test_config = ModeldiffConfig(n_pairs=10, iterations=100)  # contract tests (tests/methods/test_contract.py)
    access = "probs"
    version = "1"
    budget_tensors = ("inputs_a", "inputs_b", "source_ddv", "seed_labels")  # one row per pair, 2 queries each
    min_budget_items = 2  # a cosine over one DDV entry is 1 (or 0): it ranks nothing

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        cfg: ModeldiffConfig = self.config
        x, y = ctx.split_data(cfg.split)
        if len(x) < cfg.n_pairs:
            raise ValueError(f"modeldiff: n_pairs={cfg.n_pairs} exceeds the '{cfg.split}' split ({len(x)} samples); "
                             "lower n_pairs.")
        generator = self.generator(ctx)
        chosen = torch.randperm(len(x), generator=generator)[: cfg.n_pairs].sort().values.to(x.device)
        inputs_a, seed_labels = x[chosen], y[chosen]
        inputs_b, search = self._search(source, inputs_a, generator, ctx.progress)
        with torch.no_grad():
            probs = source(torch.cat([inputs_a, inputs_b])).softmax(1)  # one batch, as the oracle asks a suspect
        probs_a, probs_b = probs[: cfg.n_pairs], probs[cfg.n_pairs:]
        source_ddv = decision_distance_vector(probs_a, probs_b, cfg.distance)
        if float(source_ddv.abs().max()) == 0.0:
            raise RuntimeError(f"modeldiff: no mutation changed the source's outputs in {cfg.iterations} iterations "
                               f"(epsilon={cfg.epsilon}); the DDV is all zeros. Raise iterations or epsilon.")
        mutated = int((inputs_a != inputs_b).flatten(1).any(1).sum())
        if mutated < cfg.n_pairs:
            log.warning("modeldiff: %d of %d pairs were never mutated (x' = x, DDV entry 0).", cfg.n_pairs - mutated,
                        cfg.n_pairs)
        meta = {"n_pairs": cfg.n_pairs, "distance": cfg.distance, "split": cfg.split, "mutated_pairs": mutated,
                "queries_per_suspect": 2 * cfg.n_pairs, "gradient_evaluations": 0,
                "source_ddv_mean": float(source_ddv.mean()), **search}
        tensors = {"inputs_a": inputs_a, "inputs_b": inputs_b, "source_ddv": source_ddv, "seed_labels": seed_labels}
        return Fingerprint(method=self.name, meta=meta,
                           tensors={k: v.detach().cpu().contiguous() for k, v in tensors.items()})

    def _search(self, source: nn.Module, inputs_a: torch.Tensor, generator: torch.Generator,
                progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        """Hill climbing from x' = x: try +-epsilon at one random value of one random x'_j, keep the better
        direction when it raises `search_objective` on the source. Returns x' and the search's figures."""
        cfg: ModeldiffConfig = self.config
        inputs_b = inputs_a.clone()
        pairs = torch.randint(cfg.n_pairs, (cfg.iterations,), generator=generator).tolist()
        positions = torch.randint(inputs_a[0].numel(), (cfg.iterations,), generator=generator).tolist()
        with torch.no_grad():
            probs_a = source(inputs_a).softmax(1)
        probs_b = probs_a.clone()  # x' = x at the start: divergence 0
        start = best = search_objective(probs_a, probs_b)
        accepted = 0
        for pair, position in tqdm(zip(pairs, positions), total=cfg.iterations, desc="modeldiff", unit="mutation",
                                   disable=not progress, leave=False):
            candidates = inputs_b[pair].unsqueeze(0).repeat(2, *([1] * (inputs_b.dim() - 1)))
            flat = candidates.view(2, -1)
            flat[0, position] += cfg.epsilon
            flat[1, position] -= cfg.epsilon
            candidates.clamp_(0.0, 1.0)  # inputs stay pixels in [0,1]
            with torch.no_grad():
                candidate_probs = source(candidates).softmax(1)
            scores = []
            for row in range(2):
                trial = probs_b.clone()
                trial[pair] = candidate_probs[row]
                scores.append(search_objective(probs_a, trial))
            row = 0 if scores[0] > scores[1] else 1
            if scores[row] > best:
                inputs_b[pair], probs_b[pair], best = candidates[row], candidate_probs[row], scores[row]
                accepted += 1
        figures = {"iterations": cfg.iterations, "accepted_mutations": accepted, "objective_start": start,
                   "objective_final": best, "forward_samples": cfg.n_pairs * 3 + 2 * cfg.iterations}
        return inputs_b, figures

    def generation_target(self, fp: Fingerprint) -> dict[str, Any] | None:
        """Pairs whose x' differs from x / n_pairs, floor 0.5: an unmutated pair costs 2 queries and says nothing."""
        return kept_fraction_target("mutated_fraction", fp.meta["mutated_pairs"], fp.meta["n_pairs"])

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        inputs_a, inputs_b = fp.tensors["inputs_a"], fp.tensors["inputs_b"]
        probs = suspect.probs(torch.cat([inputs_a, inputs_b])).cpu()
        suspect_ddv = decision_distance_vector(probs[: len(inputs_a)], probs[len(inputs_a):], fp.meta["distance"])
        return ddv_similarity(fp.tensors["source_ddv"], suspect_ddv)
