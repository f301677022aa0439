"""UAP fingerprinting (Peng et al., "Fingerprinting Deep Neural Networks Globally via Universal
Adversarial Perturbations", CVPR 2022). The perturbation itself is in `uap_perturbation.py`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from bench.checks import check
from bench.methods._common import PooledMethod, PoolFields, require_pool_fields
from bench.methods.base import METHODS, Fingerprint, GenerationContext, target_record
from bench.methods.uap_perturbation import fooling_rate, universal_perturbation
from bench.modes import eval_mode

if TYPE_CHECKING:
    from bench.oracle import Oracle

ENCODER_PREFIX = "encoder."
HELDOUT_SAMPLES = 1000  # owner samples after the first uap_samples on which v's fooling rate is also reported

logger = logging.getLogger(__name__)


@dataclass
class UapConfig(PoolFields):
    """UAP-fingerprint hyperparameters; defaults and their sources are listed in docs/methods/uap.md; the defender-pool
    fields (inherited from `PoolFields`: surrogate_*, reference_*, pool_*) in docs/pools.md."""

    xi: float = 10 / 255  # L-inf radius of the universal perturbation v (pixels in [0,1])
    fooling_rate: float = 0.8  # target fooling rate of v on the owner samples; passes stop once reached
    allow_below_target: bool = False  # False: generation fails if v ends below fooling_rate; True: keep it, warn
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
    seed: int = 0  # UAP sample order, k-means init and encoder init: ctx.seed * 1_000_003 + seed

    def __post_init__(self) -> None:
        check("uap.xi", self.xi, 0 < self.xi <= 1, "in (0, 1]")
        check("uap.fooling_rate", self.fooling_rate, 0 < self.fooling_rate <= 1, "in (0, 1]")
        for name in ("uap_samples", "max_passes", "uap_batch_size", "deepfool_steps", "clusters", "views",
                     "kmeans_iterations", "hidden", "embedding", "encoder_epochs"):
            check(f"uap.{name}", getattr(self, name), getattr(self, name) >= 1, ">= 1")
        check("uap.deepfool_overshoot", self.deepfool_overshoot, self.deepfool_overshoot >= 0, ">= 0")
        check("uap.deepfool_candidates", self.deepfool_candidates, self.deepfool_candidates >= 2, ">= 2")
        check("uap.cluster_samples", self.cluster_samples, self.cluster_samples >= max(self.clusters, self.views),
              f">= clusters and >= views ({max(self.clusters, self.views)})")
        check("uap.temperature", self.temperature, self.temperature > 0, "> 0")
        check("uap.lr", self.lr, self.lr > 0, "> 0")
        require_pool_fields("uap", self)


@METHODS.register
class Uap(PooledMethod):
    """UAP fingerprinting (Peng et al., CVPR 2022): probabilities; outputs around a universal perturbation.

    A DeepFool-based universal adversarial perturbation v of the source (L-inf `xi`; generation fails
    when v fools fewer owner samples than `fooling_rate`, unless `allow_below_target`) and m points
    (k-means over source logits of owner data; view n takes each centroid's n-th nearest sample)
    give a model's fingerprint vector: its softmax outputs on the m points and on the m points + v
    (2mC values). An MLP encoder (2mC -> 50 -> 20), trained with a supervised contrastive loss on
    the vectors of the source and the pool surrogates (positive) against the pool references
    (negative), embeds them. Score = mean cosine similarity of the source's and the suspect's
    embeddings over the N views (higher = more likely derived). Queries per suspect: 2 m N (4,000).
    """

    name = "uap"
    Config = UapConfig
    test_config = UapConfig(xi=0.3, uap_samples=100, max_passes=1, uap_batch_size=50, clusters=5, views=3,
                            cluster_samples=100, encoder_epochs=10, allow_below_target=True)  # contract tests
    access = "probs"
    version = "2"  # 2: DeepFool checks every class, drops unconverged steps, best pass kept, shortfall fails
    # Query budgets: an item is one view (its m points and m points + v: 2m queries); the encoder's input is
    # all m clusters of a view, so clusters cannot be dropped (docs/metrics.md, "Scores against query budget").
    budget_tensors = ("inputs", "source_vectors")
    paper_results = {"cifar10": "0.91/0.76/0.78"}  # AUC/T1%F/T10%F in the ADV-TRA paper's Table 2 (Xu et al., 2024)

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        cfg: UapConfig = self.config
        pools = self.pools(ctx)
        generator = self.generator(ctx)
        x_owner, _ = ctx.owner_data(max(cfg.cluster_samples, cfg.uap_samples + HELDOUT_SAMPLES))  # one read, three prefixes
        x_uap, x_cluster = x_owner[: cfg.uap_samples], x_owner[: cfg.cluster_samples]
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
            self._check_fooling_rate(uap_info, len(x_uap))
            heldout_rate = fooling_rate(source, x_owner[cfg.uap_samples : cfg.uap_samples + HELDOUT_SAMPLES], perturbation)
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
            "fooling_rate_per_pass": uap_info["fooling_rates"],
            "fooling_rate_heldout": None if heldout_rate != heldout_rate else heldout_rate,  # NaN: no held-out samples
            "xi": cfg.xi,
            "uap_linf": float(perturbation.abs().max()),
            "uap_passes": uap_info["passes"],
            "clusters": cfg.clusters,
            "views": cfg.views,
            "surrogates": len(pools.surrogates),
            "references": len(pools.references),
            "encoder_loss_first": losses[0],
            "encoder_loss_last": losses[-1],
            "encoder_loss_floor": contrastive_loss_floor(labels),
            "pool_surrogate_scores": pool_scores[: len(pools.surrogates)],
            "pool_reference_scores": pool_scores[len(pools.surrogates) :],
            "queries_per_suspect": 2 * cfg.clusters * cfg.views,
            "gradient_evaluations": uap_info["gradient_evaluations"],
            "deepfool_failures": uap_info["deepfool_failures"],
        }
        return Fingerprint(method=self.name, tensors={k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                           meta=meta)

    def _check_fooling_rate(self, uap_info: dict, samples: int) -> None:
        """Fail (or, with allow_below_target, warn) when v fools fewer owner samples than the target."""
        cfg: UapConfig = self.config
        achieved = uap_info["fooling_rate"]
        if achieved >= cfg.fooling_rate:
            return
        message = (f"uap: the universal perturbation reached a fooling rate of {achieved:.3f} on {samples} owner "
                   f"samples, below the target fooling_rate={cfg.fooling_rate} (xi={cfg.xi:.4g}, {uap_info['passes']} "
                   f"passes; per pass: {', '.join(f'{r:.3f}' for r in uap_info['fooling_rates'])})")
        if not cfg.allow_below_target:
            raise RuntimeError(f"{message}. Raise xi (robust or low-resolution data need more than the paper's "
                               "10/255: see docs/methods/uap.md) or max_passes, lower fooling_rate, or set "
                               "allow_below_target: true to keep the weaker fingerprint.")
        logger.warning("%s; kept because allow_below_target is true.", message)

    def generation_target(self, fp: Fingerprint) -> dict[str, Any] | None:
        """v's fooling rate on the owner samples against the config's `fooling_rate` (docs/methods/uap.md).

        Missed only with `allow_below_target`: otherwise generation fails below the target.
        """
        target = fp.meta.get("target_fooling_rate", self.config.fooling_rate)
        return target_record("fooling_rate", fp.meta["fooling_rate"], target)

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

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
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


def contrastive_loss_floor(labels: torch.Tensor) -> float:
    """A lower bound of the supervised contrastive loss on these labels at any temperature: the mean over
    anchors of log(number of its positives) (Jensen); approached when positives coincide, negatives are far."""
    counts = torch.bincount(labels.long().cpu())[labels.long().cpu()] - 1
    return float(counts[counts > 0].float().log().mean())


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
