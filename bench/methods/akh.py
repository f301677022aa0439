"""AKH: the trivial misclassification baseline of QuRD (Godinot et al., "Queries, Representation &
Detection: The Next 100 Model Fingerprinting Schemes", AAAI 2025)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from bench.checks import check, check_choice
from bench.methods._common import label_agreement
from bench.methods.base import METHODS, Fingerprint, FingerprintMethod, GenerationContext
from bench.methods.sac import cutmix
from bench.oracle import Oracle

log = logging.getLogger(__name__)

PADDINGS = ("cutmix", "none")


@dataclass
class AkhConfig:
    """AKH hyperparameters; defaults and their sources are listed in docs/methods/akh.md."""

    n_samples: int = 100  # query budget: the misclassified samples first, then padding up to this many
    split: str = "test"  # the owner's held-out data, searched in order for source mistakes
    padding: str = "cutmix"  # cutmix (QuRD): fill the budget with CutMix images of the split | none: mistakes only
    seed: int = 0  # CutMix pairs and boxes: generator seeded with ctx.seed * 1_000_003 + seed

    def __post_init__(self) -> None:
        check("akh.n_samples", self.n_samples, self.n_samples >= 1, ">= 1")
        check_choice("akh.split", self.split, ("owner", "test"))
        check_choice("akh.padding", self.padding, PADDINGS)


@METHODS.register
class Akh(FingerprintMethod):
    """AKH (Godinot et al., QuRD, AAAI 2025): label-only; owner samples the source misclassifies.

    Queries: the `split` samples the source gets wrong, in split order, at most `n_samples`; when
    there are fewer, CutMix images of two split images fill the query set up to `n_samples`
    (QuRD's padding; `padding: none` keeps the mistakes only). Each query is stored with the
    source's label. Score = fraction of the queries on which the suspect repeats the source's label
    (higher = more likely derived; the source itself scores 1.0). No gradients.
    """

    name = "akh"
    Config = AkhConfig
    test_config = AkhConfig(n_samples=20)  # contract tests (tests/methods/test_contract.py)
    access = "label"
    version = "2"  # 2: padded up to n_samples with CutMix images (QuRD); 1 kept the mistakes only
    budget_tensors = ("inputs", "labels", "padded")  # query budgets: an item is one sample

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        cfg: AkhConfig = self.config
        x, y = ctx.split_data(cfg.split)
        oracle = Oracle(source, access="label")
        source_labels = oracle.labels(x)
        wrong = (source_labels != y.to(source_labels.device)).nonzero().flatten()[: cfg.n_samples]
        inputs, labels = x[wrong], source_labels[wrong]
        pad = cfg.n_samples - len(wrong) if cfg.padding == "cutmix" else 0
        if pad > 0:
            if len(x) == 0:
                raise RuntimeError(f"akh: the '{cfg.split}' split is empty; there is nothing to fingerprint with.")
            mixed = cutmix(x, pad, self.generator(ctx))
            inputs, labels = torch.cat([inputs, mixed]), torch.cat([labels, oracle.labels(mixed)])
            log.info("akh: %d misclassified '%s' samples; %d CutMix images pad the query set to %d.", len(wrong),
                     cfg.split, pad, cfg.n_samples)
        if len(inputs) == 0:
            raise RuntimeError(f"akh: the source misclassifies none of the {len(y)} '{cfg.split}' samples and "
                               "padding is 'none'; there is nothing to fingerprint with. Use padding=cutmix or a "
                               "larger split.")
        padded = torch.arange(len(inputs)) >= len(wrong)
        meta = {"n_samples": len(inputs), "n_requested": cfg.n_samples, "misclassified": len(wrong),
                "padded": pad, "padding": cfg.padding, "searched": len(y),
                "queries_per_suspect": len(inputs)}
        return Fingerprint(method=self.name, meta=meta, tensors={
            "inputs": inputs.detach().cpu().contiguous(), "labels": labels.cpu(), "padded": padded})

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return label_agreement(fp, suspect)
