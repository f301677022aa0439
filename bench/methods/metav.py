"""MetaV: adaptive fingerprint + meta-verifier (Pan, Yan, Zhang, Yang, "MetaV: A Meta-Verifier Approach
to Task-Agnostic Model Fingerprinting", KDD 2022)."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.checks import check, check_choice
from bench.methods._common import PooledMethod, PoolFields, require_pool_fields
from bench.methods.base import METHODS, Fingerprint, GenerationContext
from bench.modes import eval_mode

if TYPE_CHECKING:
    from bench.oracle import Oracle

log = logging.getLogger(__name__)

VERIFIER_PREFIX = "verifier."
INITS = ("owner", "noise")
OUTPUTS = ("probs", "labels")
INIT_POOL_FACTOR = 10  # owner init: the n inputs are drawn from the first 10 n owner samples
FINETUNE_BATCH = 64  # batch size of the in-generation fine-tuned variants
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class MetavConfig(PoolFields):
    """MetaV hyperparameters; defaults and their sources are listed in docs/methods/metav.md; the defender-pool
    fields (inherited from `PoolFields`: surrogate_*, reference_*, pool_*) in docs/pools.md."""

    n_fingerprints: int = 100  # n: learnable inputs; queries per suspect = n (fpbench decision, docs page)
    init: str = "owner"  # owner: n owner samples drawn at random | noise: uniform [0,1] pixels (both in the paper)
    outputs: str = "probs"  # probs: softmax vectors (paper default) | labels: one-hot top-1 (paper's label-only variant)
    hidden: list[int] = field(default_factory=lambda: [64, 32])  # meta-verifier MLP n*C -> 64 -> 32 -> 1 (fpbench)
    steps: int = 300  # joint Adam steps on inputs and verifier, full batch over the pool (fpbench decision)
    lr_inputs: float = 0.01  # Adam lr of the fingerprint pixels, clamped to [0,1] after each step (fpbench)
    lr_verifier: float = 1e-3  # Adam lr of the meta-verifier (Adam's usual default; fpbench decision)
    prune_rates: list[float] = field(default_factory=lambda: [0.2, 0.4])  # positive variants: source pruned (free)
    finetune_variants: int = 2  # positive variants: source fine-tuned on owner data, each its own batch order
    finetune_steps: int = 50  # SGD steps per fine-tuned variant (batch 64, momentum 0.9)
    finetune_lr: float = 0.01  # SGD lr of the fine-tuned variants (fpbench decision)
    reference_variants: bool = True  # the same variants of every reference, labelled 0 (fpbench decision)
    verifier_weight_decay: float = 0.01  # Adam (L2) weight decay of the meta-verifier: few pool models (fpbench)
    seed: int = 0  # init draw, verifier init, fine-tune order: ctx.seed * 1_000_003 + seed

    def __post_init__(self) -> None:
        check("metav.n_fingerprints", self.n_fingerprints, self.n_fingerprints >= 1, ">= 1")
        check_choice("metav.init", self.init, INITS)
        check_choice("metav.outputs", self.outputs, OUTPUTS)
        check("metav.hidden", list(self.hidden), all(int(h) >= 1 for h in self.hidden),
              "a list of layer widths >= 1 (empty: a linear verifier)")
        check("metav.steps", self.steps, self.steps >= 1, ">= 1")
        for name in ("lr_inputs", "lr_verifier", "finetune_lr"):
            check(f"metav.{name}", getattr(self, name), getattr(self, name) > 0, "> 0")
        check("metav.prune_rates", list(self.prune_rates), all(0 < r < 1 for r in self.prune_rates),
              "a list of rates in (0, 1) (empty: no pruned variants)")
        check("metav.verifier_weight_decay", self.verifier_weight_decay, self.verifier_weight_decay >= 0, ">= 0")
        check("metav.finetune_variants", self.finetune_variants, self.finetune_variants >= 0, ">= 0")
        check("metav.finetune_steps", self.finetune_steps, self.finetune_steps >= 1, ">= 1")
        require_pool_fields("metav", self)


def build_verifier(in_dim: int, hidden: list[int], generator: torch.Generator | None = None) -> nn.Sequential:
    """MLP in_dim -> hidden... -> 1 (a logit) with ReLU between; initialised from `generator` when given."""
    widths = [in_dim, *[int(h) for h in hidden], 1]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    verifier = nn.Sequential(*layers)
    if generator is not None:
        with torch.no_grad():
            for layer in verifier:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / layer.in_features**0.5  # nn.Linear's default range
                    layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator))
                    layer.bias.copy_(torch.empty_like(layer.bias).uniform_(-bound, bound, generator=generator))
    return verifier


def verifier_from_tensors(tensors: dict[str, torch.Tensor]) -> nn.Sequential:
    """Rebuild the meta-verifier from its flat saved tensors (`verifier.<index>.weight/bias`): shapes give the widths."""
    weights = sorted((int(k[len(VERIFIER_PREFIX):].split(".")[0]), v) for k, v in tensors.items()
                     if k.startswith(VERIFIER_PREFIX) and k.endswith(".weight"))
    if not weights:
        raise ValueError("metav: the fingerprint holds no 'verifier.*' tensors; regenerate it.")
    verifier = build_verifier(weights[0][1].shape[1], [w.shape[0] for _, w in weights[:-1]])
    verifier.load_state_dict({k[len(VERIFIER_PREFIX):]: v for k, v in tensors.items() if k.startswith(VERIFIER_PREFIX)})
    return verifier.eval()


def model_outputs(model: nn.Module, x: torch.Tensor, outputs: str) -> torch.Tensor:
    """[n, C] outputs the verifier reads: softmax, or one-hot top-1 labels whose gradient is the softmax's
    (straight-through), so label-only fingerprints can still be optimised."""
    probs = model(x).softmax(1)
    if outputs == "probs":
        return probs
    hard = F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
    return probs + (hard - probs).detach()


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with both classes weighted equally: mean over positives and over negatives, halved."""
    losses = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    return 0.5 * (losses[labels == 1].mean() + losses[labels == 0].mean())


def probability(logit: float) -> float:
    """sigmoid(logit) in float64, overflow-free: the verifier's probability that a model is derived."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    return math.exp(logit) / (1.0 + math.exp(logit))


def magnitude_pruned(model: nn.Module, rate: float) -> nn.Module:
    """A copy with the fraction `rate` of conv/linear weights of smallest magnitude (over all of them) set to zero."""
    pruned = copy.deepcopy(model)
    weights = [m.weight for m in pruned.modules() if isinstance(m, PRUNABLE)]
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    count = int(round(rate * flat.numel()))
    if count == 0:
        return pruned
    threshold = flat.kthvalue(count).values
    with torch.no_grad():
        for w in weights:
            w.mul_((w.abs() > threshold).to(w.dtype))
    return pruned


@METHODS.register
class Metav(PooledMethod):
    """MetaV (Pan et al., KDD 2022): probabilities (or label-only with `outputs: labels`); a meta-verifier's verdict.

    n learnable inputs in [0,1] (the adaptive fingerprint) and an MLP over a model's concatenated
    outputs on them (the meta-verifier) are trained jointly by balanced binary cross-entropy:
    label 1 for the source, the pool surrogates and pruned/fine-tuned copies of the source made
    during generation; label 0 for the pool references. Score = the meta-verifier's probability on
    the suspect's outputs (higher = more likely derived). Queries per suspect: n (100).
    """

    name = "metav"
    Config = MetavConfig
    test_config = MetavConfig(n_fingerprints=8, steps=20, prune_rates=[0.3], finetune_variants=1,
                              finetune_steps=3)  # contract tests (tests/methods/test_contract.py)
    access = "probs"
    version = "1"

    def __init__(self, config: MetavConfig | None = None) -> None:
        super().__init__(config)
        self.access = "label" if self.config.outputs == "labels" else "probs"  # per instance: the loop reads it

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        cfg: MetavConfig = self.config
        pools = self.pools(ctx)
        generator = self.generator(ctx)
        x_owner, y_owner = ctx.owner_data(max(INIT_POOL_FACTOR * cfg.n_fingerprints, FINETUNE_BATCH))
        if cfg.init == "owner" and len(x_owner) < cfg.n_fingerprints:
            raise ValueError(f"metav: the owner split has {len(x_owner)} samples, fewer than n_fingerprints="
                             f"{cfg.n_fingerprints}; lower n_fingerprints or set init=noise.")
        if cfg.init == "owner":
            inputs = x_owner[torch.randperm(len(x_owner), generator=generator)[: cfg.n_fingerprints].to(x_owner.device)]
        else:
            inputs = torch.rand((cfg.n_fingerprints, *x_owner.shape[1:]), generator=generator).to(ctx.device)
        variants = self._variants(source, x_owner, y_owner, generator)
        positives = [source, *pools.surrogates, *variants]
        negatives = list(pools.references)
        if cfg.reference_variants:
            negatives += [v for ref in pools.references for v in self._variants(ref, x_owner, y_owner, generator)]
        models = [*positives, *negatives]
        labels = torch.tensor([1] * len(positives) + [0] * len(negatives), device=ctx.device)
        verifier = build_verifier(cfg.n_fingerprints * ctx.num_classes, cfg.hidden, generator).to(ctx.device)
        with eval_mode(*models):
            inputs, losses = self._optimise(models, labels, inputs.clone(), verifier, ctx.progress)
            with torch.no_grad():
                pool_scores = torch.sigmoid(verifier(torch.stack([model_outputs(m, inputs, cfg.outputs).flatten()
                                                                  for m in models])).squeeze(1).double())
        predicted = pool_scores >= 0.5
        tensors = {"inputs": inputs, **{VERIFIER_PREFIX + k: v for k, v in verifier.state_dict().items()}}
        groups = {"source": 1, "surrogates": len(pools.surrogates), "variants": len(variants),
                  "references": len(pools.references), "reference_variants": len(negatives) - len(pools.references)}
        meta = {
            "n_fingerprints": cfg.n_fingerprints,
            "num_classes": ctx.num_classes,
            "outputs": cfg.outputs,
            "init": cfg.init,
            "hidden": [int(h) for h in cfg.hidden],
            "pool_models": groups,
            "pool_scores": [float(s) for s in pool_scores],
            "pool_accuracy": float((predicted == labels.bool()).float().mean()),
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "queries_per_suspect": cfg.n_fingerprints,
            "gradient_evaluations": cfg.steps * len(models) * cfg.n_fingerprints,
        }
        return Fingerprint(method=self.name, tensors={k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                           meta=meta)

    def _optimise(self, models: list[nn.Module], labels: torch.Tensor, inputs: torch.Tensor, verifier: nn.Sequential,
                  progress: bool) -> tuple[torch.Tensor, list[float]]:
        """Joint Adam on the inputs (clamped to [0,1]) and the verifier; model weights get no gradient."""
        cfg: MetavConfig = self.config
        inputs.requires_grad_(True)
        params = list(verifier.parameters())
        optimiser = torch.optim.Adam([{"params": [inputs], "lr": cfg.lr_inputs},
                                      {"params": params, "lr": cfg.lr_verifier,
                                       "weight_decay": cfg.verifier_weight_decay}])
        losses = []
        for _ in tqdm(range(cfg.steps), desc="metav", unit="step", disable=not progress, leave=False):
            features = torch.stack([model_outputs(m, inputs, cfg.outputs).flatten() for m in models])
            loss = balanced_bce(verifier(features).squeeze(1), labels)
            grads = torch.autograd.grad(loss, [inputs, *params])  # only these: models keep no .grad
            optimiser.zero_grad()
            for tensor, grad in zip([inputs, *params], grads):
                tensor.grad = grad
            optimiser.step()
            with torch.no_grad():
                inputs.clamp_(0.0, 1.0)
            losses.append(float(loss.detach()))
        for tensor in [inputs, *params]:
            tensor.grad = None
        return inputs.detach(), losses

    def _variants(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> list[nn.Module]:
        """Cheap copies of `model`: one magnitude-pruned per rate, then `finetune_variants` fine-tuned ones."""
        cfg: MetavConfig = self.config
        with eval_mode(model):
            pruned = [magnitude_pruned(model, rate) for rate in cfg.prune_rates]
        return pruned + [self._finetuned(model, x, y, generator) for _ in range(cfg.finetune_variants)]

    def _finetuned(self, source: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> nn.Module:
        """A copy of the source after `finetune_steps` SGD steps on owner data (ground-truth labels, all layers)."""
        cfg: MetavConfig = self.config
        model = copy.deepcopy(source).train()
        optimiser = torch.optim.SGD(model.parameters(), lr=cfg.finetune_lr, momentum=0.9)
        for _ in range(cfg.finetune_steps):
            idx = torch.randint(len(x), (min(FINETUNE_BATCH, len(x)),), generator=generator).to(x.device)
            optimiser.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimiser.step()
        model.zero_grad(set_to_none=True)
        return model.eval()

    def _measure(self, fp: Fingerprint, suspect: Oracle) -> dict[str, float]:
        outputs = fp.meta["outputs"]
        if outputs != self.config.outputs:
            raise ValueError(f"metav: the fingerprint was trained on outputs={outputs!r} but the config says "
                             f"outputs={self.config.outputs!r}; score it with the config that generated it.")
        inputs = fp.tensors["inputs"]
        if outputs == "labels":
            answers = F.one_hot(suspect.labels(inputs).cpu().long(), int(fp.meta["num_classes"])).float()
        else:
            answers = suspect.probs(inputs).cpu().float()
        verifier = verifier_from_tensors(fp.tensors)
        with torch.no_grad():
            logit = float(verifier(answers.flatten().unsqueeze(0)).squeeze())
        return {"score": probability(logit), "logit": logit}

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return self._measure(fp, suspect)["score"]
