"""AKH: the trivial misclassification baseline of QuRD (Godinot et al., AAAI 2025)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bench.methods.base import METHODS, Fingerprint, FingerprintMethod, GenerationContext
from bench.oracle import Oracle


@dataclass
class AkhConfig:
    n_samples: int = 100  # queries per suspect: at most this many misclassified samples are kept
    split: str = "test"  # the owner's held-out data, searched in order for source mistakes

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"akh.n_samples={self.n_samples} must be >= 1.")
        if self.split not in ("owner", "test"):
            raise ValueError(f"akh.split='{self.split}' must be 'owner' or 'test' (the owner's own data).")


@METHODS.register("akh")
class Akh(FingerprintMethod):
    """AKH (Godinot et al., QuRD, AAAI 2025): label-only; owner samples the source misclassifies.

    Score = fraction of those samples on which the suspect repeats the source's (wrong) label;
    queries per suspect = the number of samples kept (at most `n_samples`). No gradients.
    """

    name = "akh"
    Config = AkhConfig
    access = "label"

    def generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        x, y = ctx.split_data(self.config.split)
        source_labels = Oracle(source, access="label").labels(x)
        wrong = (source_labels != y).nonzero().flatten()[: self.config.n_samples]
        if len(wrong) == 0:
            raise RuntimeError(f"akh: the source misclassifies none of the {len(y)} '{self.config.split}' samples; "
                               "there is nothing to fingerprint with. Use a larger split.")
        return Fingerprint(method=self.name, tensors={"inputs": x[wrong].cpu(), "labels": source_labels[wrong].cpu()},
                           meta={"n_samples": len(wrong), "searched": len(y)})

    def score(self, fp: Fingerprint, suspect: Oracle) -> float:
        labels = suspect.labels(fp.tensors["inputs"])
        return float((labels == fp.tensors["labels"].to(labels.device)).float().mean().item())
