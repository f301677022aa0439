"""The method: a few owner images, lightly noised with the method's seeded generator, and the source's labels on
them; a suspect's score is the share of those labels it repeats."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.checks import check_range
from bench.methods import Fingerprint, FingerprintMethod, GenerationContext
from bench.oracle import Oracle


@dataclass
class ExampleAgreementConfig:
    n_samples: int = 32  # owner images kept as the fingerprint (= queries per suspect)
    noise: float = 0.05  # std of the Gaussian noise added to each image, in [0,1] pixel units
    seed: int = 0  # the method's own seed, combined with the fingerprint seed

    def __post_init__(self) -> None:
        check_range("example_agreement.n_samples", self.n_samples, 1)
        check_range("example_agreement.noise", self.noise, 0.0, 1.0)


class ExampleAgreement(FingerprintMethod):
    """Example (fpbench docs/examples), no paper: label access; score = share of the source's labels the suspect repeats."""

    name = "example_agreement"  # the entry point's name in pyproject.toml
    Config = ExampleAgreementConfig
    access = "label"
    budget_tensors = ("inputs", "labels")  # one item = one image and its label

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        x, _ = ctx.owner_data(self.config.n_samples)
        noise = torch.randn(x.shape, generator=self.generator(ctx)).to(x.device)
        x = (x + self.config.noise * noise).clamp(0, 1)  # stays in [0,1]
        with torch.no_grad():
            labels = source(x).argmax(dim=1)
        return Fingerprint(self.name, {"inputs": x.cpu(), "labels": labels.cpu()}, {"queries_per_suspect": len(x)})

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return float((suspect.labels(fp.tensors["inputs"]).cpu() == fp.tensors["labels"]).float().mean())
