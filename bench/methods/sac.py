"""SAC: sample correlation (Guan et al., "Are You Stealing My Model? Sample Correlation for
Fingerprinting Deep Neural Networks", NeurIPS 2022)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from bench.checks import check, check_choice
from bench.methods.base import METHODS, Fingerprint, FingerprintMethod, GenerationContext

if TYPE_CHECKING:
    from bench.oracle import Oracle

log = logging.getLogger(__name__)

SAMPLES = ("misclassified", "cutmix")
CORRELATIONS = ("cosine", "pearson")


@dataclass
class SacConfig:
    """SAC hyperparameters; defaults and their sources are listed in docs/methods/sac.md."""

    n_samples: int = 50  # n: samples in the correlation matrix; queries per suspect <= n
    samples: str = "misclassified"  # misclassified (SAC-w): owner samples the source gets wrong | cutmix (SAC-m)
    split: str = "test"  # the owner's data the samples come from: test (held out) | owner
    correlation: str = "cosine"  # pairwise correlation of output vectors: cosine (the paper) | pearson
    seed: int = 0  # cutmix pairs and boxes: ctx.seed * 1_000_003 + seed

    def __post_init__(self) -> None:
        check("sac.n_samples", self.n_samples, self.n_samples >= 2, ">= 2 (a correlation needs two samples)")
        check_choice("sac.samples", self.samples, SAMPLES)
        check_choice("sac.split", self.split, ("test", "owner"))
        check_choice("sac.correlation", self.correlation, CORRELATIONS)


def correlation_matrix(outputs: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """[n, n] pairwise correlation of the rows of `outputs` ([n, C]): cosine similarity or Pearson's r."""
    if kind == "pearson":
        outputs = outputs - outputs.mean(1, keepdim=True)
    unit = nn.functional.normalize(outputs.float(), dim=1)
    return unit @ unit.T


def cutmix(x: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` CutMix images (Yun et al., ICCV 2019): a box of one image pasted into another, area ratio ~ U(0,1)."""
    first = torch.randint(len(x), (count,), generator=generator)
    second = torch.randint(len(x), (count,), generator=generator)
    height, width = x.shape[-2:]
    ratio = (1 - torch.rand(count, generator=generator)).sqrt()  # box side / image side, lambda ~ Beta(1, 1)
    box_h, box_w = (ratio * height).long(), (ratio * width).long()
    top = (torch.rand(count, generator=generator) * (height - box_h + 1)).long()
    left = (torch.rand(count, generator=generator) * (width - box_w + 1)).long()
    rows, cols = torch.arange(height).view(1, -1, 1), torch.arange(width).view(1, 1, -1)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1))).unsqueeze(1)
    first, second, inside = first.to(x.device), second.to(x.device), inside.to(x.device)
    return torch.where(inside, x[second], x[first])


@METHODS.register
class Sac(FingerprintMethod):
    """SAC (Guan et al., NeurIPS 2022): probabilities; correlation of the outputs on samples the source misclassifies.

    Fingerprint: n owner samples the source gets wrong (SAC-w; or CutMix images, SAC-m) and the
    source's n x n matrix of pairwise cosine similarities between its output (softmax) vectors.
    Score = -mean |C_source - C_suspect| over all n^2 entries (higher = more likely derived; 0 for
    identical correlations). Needs outputs, so access = "probs". Queries per suspect: n (<= 50).
    """

    name = "sac"
    Config = SacConfig
    test_config = SacConfig(n_samples=10)  # contract tests (tests/methods/test_contract.py)
    access = "probs"
    version = "1"
    # Query budgets: an item is one sample; the stored correlation matrix keeps the kept samples' rows and columns.
    budget_tensors = ("inputs", "labels", "true_labels")
    min_budget_items = 2  # a correlation needs two samples

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        cfg: SacConfig = self.config
        x, y = ctx.split_data(cfg.split)
        with torch.no_grad():
            if cfg.samples == "cutmix":
                inputs = cutmix(x, cfg.n_samples, self.generator(ctx))
                true_labels = torch.full((len(inputs),), -1, dtype=torch.long)  # a mixed image has no single label
            else:
                wrong = (source(x).argmax(1) != y).nonzero().flatten()[: cfg.n_samples]
                if len(wrong) < 2:
                    raise RuntimeError(f"sac: the source misclassifies {len(wrong)} of the {len(y)} '{cfg.split}' "
                                       "samples; a correlation needs at least 2. Use samples=cutmix or a larger split.")
                if len(wrong) < cfg.n_samples:
                    log.warning("sac: only %d misclassified '%s' samples (n_samples=%d).", len(wrong), cfg.split,
                                cfg.n_samples)
                inputs, true_labels = x[wrong], y[wrong]
            probs = source(inputs).softmax(1)
        matrix = correlation_matrix(probs, cfg.correlation)
        meta = {"n_samples": len(inputs), "n_requested": cfg.n_samples, "samples": cfg.samples,
                "correlation": cfg.correlation, "searched": len(y), "queries_per_suspect": len(inputs),
                "gradient_evaluations": 0}
        return Fingerprint(method=self.name, meta=meta, tensors={
            "inputs": inputs.detach().cpu().contiguous(), "labels": probs.argmax(1).cpu(), "true_labels": true_labels.cpu(),
            "correlation": matrix.detach().cpu().contiguous()})

    def _subsample(self, fp: Fingerprint, keep: torch.Tensor) -> Fingerprint:
        """The kept samples and their correlations: C[keep][:, keep] (an entry depends on its two samples only)."""
        subset = super()._subsample(fp, keep)
        subset.tensors["correlation"] = fp.tensors["correlation"][keep][:, keep]
        return subset

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        matrix = correlation_matrix(suspect.probs(fp.tensors["inputs"]).cpu(), fp.meta["correlation"])
        return 0.0 - float((fp.tensors["correlation"] - matrix).abs().mean())  # 0.0 - : no "-0.0" for identical
