"""A local model behind a deployment chain, answering as an endpoint does (labels or probabilities).

The `Oracle` treats any object with `labels(x)` and `probabilities(x)` as an endpoint: it counts one
query per input and never looks further, so the chain adds no oracle queries. Calibration (the
query-aware defender) and the utility measurement call the suspect directly, outside every count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bench.deploy.base import Answer, Deployment, chain_label, split_forward, stream_seed
from bench.modes import eval_mode

log = logging.getLogger(__name__)


class DeployedSuspect:
    """`model` answering through `chain`: input transforms, the model, then output restrictions.

    Random wrappers draw from CPU generators seeded by (suspect, place in the chain, wrapper config,
    stream); `stream(name)` restarts them, so each method's verification (and the utility check)
    gets its own reproducible draws whatever ran before it.

    Args:
        model: the suspect's model (any device; answers come back on it).
        chain: parsed wrappers (`bench.deploy.parse_chain`), in recipe order.
        suspect_id: what seeds the random wrappers (the checkpoint's model id).
        batch_size: largest batch sent to the model at once.
    """

    def __init__(self, model: nn.Module, chain: Sequence[Deployment], suspect_id: str, batch_size: int = 1024) -> None:
        self.model = model
        self.chain = list(chain)
        self.inputs = [d for d in self.chain if d.stage == "input"]
        self.outputs = [d for d in self.chain if d.stage == "output"]
        self.suspect_id = suspect_id
        self.batch_size = int(batch_size)
        self.label = chain_label(self.chain)
        self.has_defender = any(d.defender for d in self.chain)
        self.counts: dict[str, list[int]] = {}  # stream -> [queries answered, of which a defender flagged]
        self._current = "default"
        self._generators: dict[int, torch.Generator] = {}
        self.stream("default")

    # -- set-up ------------------------------------------------------------------------------------
    def prepare(self, calibration: torch.Tensor | None = None) -> DeployedSuspect:
        """Let every wrapper prepare (the defender calibrates on `calibration`, the attacker's data)."""
        self.stream("calibration")
        for deployment in self.chain:
            deployment.prepare(self, calibration)
        return self.stream("default")

    def stream(self, name: str) -> DeployedSuspect:
        """Restart every random wrapper's generator on stream `name` and zero its counters."""
        self._generators = {i: torch.Generator().manual_seed(stream_seed(self.suspect_id, i, d, name))
                            for i, d in enumerate(self.chain) if d.random}
        self._current = name
        self.counts[name] = [0, 0]
        return self

    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    # -- answering ----------------------------------------------------------------------------------
    def model_answer(self, x: torch.Tensor, features: bool = False) -> Answer:
        """Input transforms and the model, no output restriction (one batch); features when asked
        and the model exposes them (else `Answer.features` is None)."""
        for i, deployment in enumerate(self.chain):
            if deployment.stage == "input":
                x = deployment.transform(x, self._generators.get(i))
        x = x.to(self.device)
        with eval_mode(self.model), torch.no_grad():
            feats = None
            if features and split_forward(self.model):
                feats = self.model.features(self.model.normalize(x))
                logits = self.model.head(feats)
            else:
                logits = self.model(x)
        probs = logits.float().softmax(dim=1)
        labels = logits.argmax(dim=1)
        return Answer(inputs=x, probs=probs, labels=labels, model_probs=probs,
                      features=None if feats is None else feats.float(),
                      flagged=torch.zeros(len(x), dtype=torch.bool, device=x.device))

    def answer(self, x: torch.Tensor) -> Answer:
        """The deployed answer to a batch of queries `x` ([B, C, H, W] in [0,1]), in model batches."""
        parts = [self._answer_batch(chunk) for chunk in x.split(self.batch_size)]
        return Answer(inputs=torch.cat([p.inputs for p in parts]), probs=torch.cat([p.probs for p in parts]),
                      labels=torch.cat([p.labels for p in parts]), model_probs=torch.cat([p.model_probs for p in parts]),
                      flagged=torch.cat([p.flagged for p in parts]))

    def _answer_batch(self, x: torch.Tensor) -> Answer:
        answer = self.model_answer(x, features=any(d.needs_features for d in self.outputs))
        for i, deployment in enumerate(self.chain):
            if deployment.stage == "output":
                answer = deployment.restrict(answer, self._generators.get(i))
        counts = self.counts[self._current]
        counts[0] += len(x)
        counts[1] += int(answer.flagged.sum())
        return answer

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels as deployed (what the oracle hands a label-only method)."""
        return self.answer(x).labels

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities as deployed (what the oracle hands a method that reads probabilities)."""
        return self.answer(x).probs

    # -- what the result records ------------------------------------------------------------------
    def flag_rate(self, stream: str | None = None) -> float | None:
        """Fraction of stream `stream`'s queries (default: the current stream's) a defender flagged
        (None: no defender in the chain)."""
        if not self.has_defender:
            return None
        answered, flagged = self.counts.get(stream or self._current, [0, 0])
        return flagged / answered if answered else 0.0

    def utility(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """Clean accuracy through the deployment (stream "utility") and the defender's false-flag rate."""
        self.stream("utility")
        labels = self.labels(x).cpu()
        figures = {"test_acc_deployed": int((labels == y.cpu()).sum()) / max(len(y), 1)}
        if self.has_defender:
            figures["defender_false_flag_rate"] = self.flag_rate()
        self.stream("default")
        return figures
