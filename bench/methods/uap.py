"""UAP fingerprinting (Peng et al., "Fingerprinting Deep Neural Networks Globally via Universal
Adversarial Perturbations", CVPR 2022)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.methods._common import (
    DEFAULT_POOL_ARCHS,
    PooledMethod,
    eval_mode,
    input_gradient,
    make_generator,
    require,
    require_pool_fields,
)
from bench.methods.base import METHODS, Fingerprint, GenerationContext

if TYPE_CHECKING:
    from bench.oracle import Oracle

ENCODER_PREFIX = "encoder."


@dataclass
class UapConfig:
    """UAP-fingerprint hyperparameters; defaults and their sources are listed in docs/methods/uap.md."""

    xi: float = 10 / 255  # L-inf radius of the universal perturbation v (pixels in [0,1])
    fooling_rate: float = 0.8  # target fooling rate of v on the owner samples; passes stop once reached
    uap_samples: int = 1000  # owner samples v is computed and measured on (the first of the split)
    max_passes: int = 10  # passes over uap_samples at most
    uap_batch_size: int = 32  # unfooled samples whose DeepFool steps are summed before one projection
    deepfool_steps: int = 50  # DeepFool iterations per sample (the DeepFool paper's cap)
    deepfool_overshoot: float = 0.02  # DeepFool's overshoot
    deepfool_candidates: int = 10  # classes DeepFool considers (the top ones of the source)
    clusters: int = 100  # m: k-means clusters over source logits; one point per cluster per view
    views: int = 20  # N: views (the n-th nearest owner sample to each centroid); score = mean over views
    cluster_samples: int = 2000  # owner samples clustered (the first of the split; capped by its size)
    kmeans_iterations: int = 100  # Lloyd iterations after k-means++ initialisation
    hidden: int = 50  # encoder 2mC -> hidden -> embedding
    embedding: int = 20
    temperature: float = 0.1  # tau of the supervised contrastive loss
    lr: float = 5e-4  # Adam learning rate of the encoder
    encoder_epochs: int = 200  # full-batch Adam steps on all (model, view) fingerprints
    surrogate_archs: list[str] = field(default_factory=lambda: list(DEFAULT_POOL_ARCHS))  # positives: extracted
    reference_archs: list[str] = field(default_factory=lambda: list(DEFAULT_POOL_ARCHS))  # negatives: independent
    pool_seeds: int = 2  # models per architecture in each pool
    pool_epochs: int | None = None  # training epochs of pool models; None: the source's
    seed: int = 0  # UAP sample order, k-means init and encoder init: ctx.seed * 1_000_003 + seed

    def __post_init__(self) -> None:
        require("uap", "xi", self.xi, 0 < self.xi <= 1, "in (0, 1]")
        require("uap", "fooling_rate", self.fooling_rate, 0 < self.fooling_rate <= 1, "in (0, 1]")
        for name in ("uap_samples", "max_passes", "uap_batch_size", "deepfool_steps", "clusters", "views",
                     "kmeans_iterations", "hidden", "embedding", "encoder_epochs"):
            require("uap", name, getattr(self, name), getattr(self, name) >= 1, ">= 1")
        require("uap", "deepfool_overshoot", self.deepfool_overshoot, self.deepfool_overshoot >= 0, ">= 0")
        require("uap", "deepfool_candidates", self.deepfool_candidates, self.deepfool_candidates >= 2, ">= 2")
        require("uap", "cluster_samples", self.cluster_samples, self.cluster_samples >= max(self.clusters, self.views),
                f">= clusters and >= views ({max(self.clusters, self.views)})")
        require("uap", "temperature", self.temperature, self.temperature > 0, "> 0")
        require("uap", "lr", self.lr, self.lr > 0, "> 0")
        require_pool_fields("uap", self)


@METHODS.register("uap")
class Uap(PooledMethod):
    """UAP fingerprinting (Peng et al., CVPR 2022): probabilities; outputs around a universal perturbation.

    A DeepFool-based universal adversarial perturbation v of the source (L-inf `xi`) and m points
    (k-means over source logits of owner data; view n takes each centroid's n-th nearest sample)
    give a model's fingerprint vector: its softmax outputs on the m points and on the m points + v
    (2mC values). An MLP encoder (2mC -> 50 -> 20), trained with a supervised contrastive loss on
    the vectors of the source and the pool surrogates (positive) against the pool references
    (negative), embeds them. Score = mean cosine similarity of the source's and the suspect's
    embeddings over the N views (higher = more likely derived). Queries per suspect: 2 m N (4,000).
    """

    name = "uap"
    Config = UapConfig
    access = "probs"
    version = "1"

    def generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        cfg: UapConfig = self.config
        pools = self.pools(ctx)
        started = time.monotonic()
        generator = make_generator(ctx.seed, cfg.seed)
        x_uap, _ = ctx.owner_data(cfg.uap_samples)
        x_cluster, _ = ctx.owner_data(cfg.cluster_samples)
        if len(x_cluster) < max(cfg.clusters, cfg.views):
            raise ValueError(f"uap: the owner split has {len(x_cluster)} samples, fewer than clusters={cfg.clusters} "
                             f"or views={cfg.views}; lower them.")
        models = [source, *pools.surrogates, *pools.references]
        with eval_mode(*models):
            bar = tqdm(total=cfg.max_passes, desc="uap: perturbation", unit="pass", disable=not ctx.progress, leave=False)
            perturbation, uap_info = universal_perturbation(
                source, x_uap, xi=cfg.xi, target_fooling_rate=cfg.fooling_rate, max_passes=cfg.max_passes,
                batch_size=cfg.uap_batch_size, steps=cfg.deepfool_steps, overshoot=cfg.deepfool_overshoot,
                candidates=min(cfg.deepfool_candidates, ctx.num_classes), generator=generator,
                on_pass=lambda rate: bar.update(1))
            bar.close()
            with torch.no_grad():
                logits = source(x_cluster)
            centroids = kmeans(logits, cfg.clusters, cfg.kmeans_iterations, generator)
            nearest = torch.cdist(centroids, logits).argsort(1)[:, : cfg.views]  # [m, N]
            inputs = x_cluster[nearest.T]  # [N, m, C, H, W]: view n = each centroid's n-th neighbour
            vectors = [fingerprint_vectors(lambda x, m=m: _probs(m, x), inputs, perturbation) for m in models]
        positives = 1 + len(pools.surrogates)
        labels = torch.tensor([1] * positives + [0] * len(pools.references)).repeat_interleave(cfg.views)
        encoder, losses = self._train_encoder(torch.cat(vectors), labels.to(ctx.device), generator, ctx.progress)
        tensors = {"inputs": inputs, "perturbation": perturbation, "source_vectors": vectors[0]}
        tensors.update({ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()})
        with torch.no_grad():
            pool_scores = [cosine_score(encoder, vectors[0], v) for v in vectors[1:]]
        meta = {
            "fooling_rate": uap_info["fooling_rate"],
            "target_fooling_rate": cfg.fooling_rate,
            "uap_linf": float(perturbation.abs().max()),
            "uap_passes": uap_info["passes"],
            "clusters": cfg.clusters,
            "views": cfg.views,
            "surrogates": len(pools.surrogates),
            "references": len(pools.references),
            "encoder_loss_first": losses[0],
            "encoder_loss_last": losses[-1],
            "pool_surrogate_scores": pool_scores[: len(pools.surrogates)],
            "pool_reference_scores": pool_scores[len(pools.surrogates) :],
            "queries_per_suspect": 2 * cfg.clusters * cfg.views,
            "gradient_evaluations": uap_info["gradient_evaluations"],
            "generation_seconds": time.monotonic() - started,
        }
        return Fingerprint(method=self.name, tensors={k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                           meta=meta)

    def _train_encoder(self, vectors: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                       progress: bool) -> tuple[Encoder, list[float]]:
        """Full-batch Adam on the supervised contrastive loss; every (model, view) vector is one sample."""
        cfg: UapConfig = self.config
        encoder = Encoder(vectors.shape[1], cfg.hidden, cfg.embedding, generator).to(vectors.device)
        optimiser = torch.optim.Adam(encoder.parameters(), lr=cfg.lr)
        losses = []
        for _ in tqdm(range(cfg.encoder_epochs), desc="uap: encoder", unit="epoch", disable=not progress, leave=False):
            optimiser.zero_grad()
            loss = supervised_contrastive_loss(encoder(vectors), labels, cfg.temperature)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        return encoder.eval(), losses

    def score(self, fp: Fingerprint, suspect: Oracle) -> float:
        encoder = Encoder.from_state({k[len(ENCODER_PREFIX) :]: v for k, v in fp.tensors.items()
                                      if k.startswith(ENCODER_PREFIX)})
        vectors = fingerprint_vectors(suspect.probs, fp.tensors["inputs"], fp.tensors["perturbation"])
        with torch.no_grad():
            return cosine_score(encoder, fp.tensors["source_vectors"], vectors.cpu())


def _probs(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(chunk).softmax(1) for chunk in x.split(batch)])


def fingerprint_vectors(probs, inputs: torch.Tensor, perturbation: torch.Tensor) -> torch.Tensor:
    """[N, 2mC]: per view, softmax outputs on its m points then on the m points + v, flattened.

    Args:
        probs: a callable mapping a batch [B, C, H, W] to probabilities [B, classes] (one query batch).
        inputs: [N, m, C, H, W] fingerprint points; perturbation: [C, H, W].
    """
    views, points = inputs.shape[:2]
    flat = inputs.flatten(0, 1)
    perturbed = (flat + perturbation.to(flat.device)).clamp(0.0, 1.0)
    out = probs(torch.cat([flat, perturbed]))  # one batched query: N m clean, then N m perturbed
    clean, shifted = out[: views * points].view(views, -1), out[views * points :].view(views, -1)
    return torch.cat([clean, shifted], dim=1)


def cosine_score(encoder: Encoder, source_vectors: torch.Tensor, suspect_vectors: torch.Tensor) -> float:
    """Mean over views of the cosine similarity of the source's and the suspect's embeddings."""
    device = next(encoder.parameters()).device
    a, b = encoder(source_vectors.to(device)), encoder(suspect_vectors.to(device))
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())


# -- the universal perturbation (Moosavi-Dezfooli et al., CVPR 2017) with batched DeepFool ---------------
def deepfool(model: nn.Module, x: torch.Tensor, steps: int, overshoot: float, candidates: int) -> tuple[torch.Tensor, int]:
    """Batched L2 DeepFool (Moosavi-Dezfooli et al., CVPR 2016): a small r with f(x + r) != f(x), x + r in [0,1].

    Returns r ([B, C, H, W], overshoot included) and the number of input-gradient evaluations.
    """
    with torch.no_grad():
        classes = model(x).topk(candidates, dim=1).indices  # [B, K]; column 0: the label
    k = classes.shape[1]
    r = torch.zeros_like(x)
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    evaluations = 0
    for _ in range(steps):
        # Clamped iterates: a step that leaves [0,1] is wasted on images (the plain DeepFool ignores the box).
        x_adv = (x + (1 + overshoot) * r).clamp(0.0, 1.0)
        with torch.no_grad():
            active &= model(x_adv).gather(1, classes).argmax(1) == 0
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        # All K class gradients in one backward: K copies of the batch, copy j differentiates class j
        # (rows are independent in eval mode).
        copies = x_adv[idx].unsqueeze(0).repeat(k, *[1] * x.dim()).requires_grad_(True)  # [K, A, C, H, W]
        logits = model(copies.flatten(0, 1)).view(k, len(idx), -1)
        out = logits.gather(2, classes[idx].T.unsqueeze(2)).squeeze(2)  # [K, A]
        grads = input_gradient(out.sum(), copies).transpose(0, 1).flatten(2)  # [A, K, D]
        evaluations += len(idx) * k
        w = grads[:, 1:] - grads[:, :1]  # [A, K-1, D]
        f = (out[1:] - out[:1]).T.detach()  # [A, K-1], negative while unfooled
        norms = w.norm(dim=2) + 1e-8
        closest = (f.abs() / norms).argmin(1)
        rows = torch.arange(len(idx), device=x.device)
        w_l, f_l, n_l = w[rows, closest], f[rows, closest], norms[rows, closest]
        r[idx] += (((f_l.abs() + 1e-4) / n_l.square()).unsqueeze(1) * w_l).view(-1, *x.shape[1:])
    return (x + (1 + overshoot) * r).clamp(0.0, 1.0) - x, evaluations


def fooling_rate(model: nn.Module, x: torch.Tensor, perturbation: torch.Tensor, batch: int = 1024) -> float:
    """Fraction of x whose label changes when the perturbation is added (and clamped to [0,1])."""
    with torch.no_grad():
        changed = [model(c).argmax(1) != model((c + perturbation).clamp(0, 1)).argmax(1) for c in x.split(batch)]
    return float(torch.cat(changed).float().mean())


def universal_perturbation(model: nn.Module, x: torch.Tensor, xi: float, target_fooling_rate: float,
                           max_passes: int, batch_size: int, steps: int, overshoot: float, candidates: int,
                           generator: torch.Generator, on_pass=None) -> tuple[torch.Tensor, dict]:
    """DeepFool-based UAP in an L-inf ball of radius xi.

    Batched variant of Algorithm 1: per mini-batch, the DeepFool perturbations of the samples
    v does not fool yet are summed, then projected once (the original adds them one at a time).
    """
    v = torch.zeros_like(x[0])
    info = {"passes": 0, "fooling_rate": 0.0, "gradient_evaluations": 0}
    with torch.no_grad():
        clean = torch.cat([model(c).argmax(1) for c in x.split(1024)])
    for _ in range(max_passes):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for idx in order.split(batch_size):
            with torch.no_grad():
                unfooled = model((x[idx] + v).clamp(0, 1)).argmax(1) == clean[idx]
            if not bool(unfooled.any()):
                continue
            shifted = (x[idx][unfooled] + v).clamp(0, 1)
            r, evaluations = deepfool(model, shifted, steps, overshoot, candidates)
            info["gradient_evaluations"] += evaluations
            v = (v + r.sum(0)).clamp(-xi, xi)
        info["passes"] += 1
        info["fooling_rate"] = fooling_rate(model, x, v)
        if on_pass is not None:
            on_pass(info["fooling_rate"])
        if info["fooling_rate"] >= target_fooling_rate:
            break
    return v, info


# -- fingerprint points and the contrastive encoder -----------------------------------------------------
def kmeans(points: torch.Tensor, clusters: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ initialisation then Lloyd iterations; returns [clusters, D] centroids."""
    first = int(torch.randint(len(points), (1,), generator=generator))
    centroids = points[first : first + 1]
    for _ in range(clusters - 1):
        d2 = torch.cdist(points, centroids).min(1).values.square().cpu()
        weights = d2 if float(d2.sum()) > 0 else torch.ones_like(d2)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        centroids = torch.cat([centroids, points[pick : pick + 1]])
    for _ in range(iterations):
        assign = torch.cdist(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=clusters).unsqueeze(1)
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)  # empty clusters stay put
        if torch.allclose(updated, centroids):
            break
        centroids = updated
    return centroids


class Encoder(nn.Module):
    """MLP 2mC -> hidden -> embedding, initialised from a generator (never the global RNG)."""

    def __init__(self, in_dim: int, hidden: int, embedding: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, embedding))
        if generator is not None:
            with torch.no_grad():
                for layer in (self.net[0], self.net[2]):
                    bound = 1.0 / layer.in_features**0.5  # nn.Linear's default range
                    layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator))
                    layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Encoder:
        """Rebuild from a state dict (shapes give the sizes)."""
        hidden, in_dim = state["net.0.weight"].shape
        encoder = cls(in_dim, hidden, state["net.2.weight"].shape[0])
        encoder.load_state_dict(state)
        return encoder.eval()


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al., NeurIPS 2020): pull same-label embeddings together, push others apart."""
    z = nn.functional.normalize(embeddings, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(1, keepdim=True)
    positives = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_mask
    per_anchor = log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1).clamp(min=1)
    return -per_anchor[positives.any(1)].mean()
