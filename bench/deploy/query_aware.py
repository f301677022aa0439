"""`query_aware`: a defender that spots fingerprint-like queries and answers them with another label.

Fingerprints sit near decision boundaries (low margin, high entropy) or off the data distribution
(far from the data the model was trained on). The defender scores each query on the signals it is
given, compares them with the same signals on clean data, and answers a flagged query with the
model's second most likely label. Its threshold is calibrated on the attacker's own data (the thief
deploys the model, so it knows its training data, never the owner's test set) to a target
false-flag rate; the loop records the rate it reaches on the clean test split (docs/deployment.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from bench.checks import check, check_choice, check_range
from bench.deploy.base import DEPLOYMENTS, Answer, OutputRestriction, split_forward

log = logging.getLogger(__name__)

SIGNALS = ("margin", "entropy", "distance")
SPACES = ("auto", "features", "input")


@dataclass
class QueryAwareConfig:
    signals: list[str] = field(default_factory=lambda: ["margin"])  # any of margin, entropy, distance (fpbench decision)
    false_flag_rate: float = 0.05  # target share of clean calibration queries flagged (the example, 5%)
    calibration_samples: int = 1000  # attacker-split samples used at most (half are the reference set with distance)
    space: str = "auto"  # distance in: features (penultimate layer), input (pixels); auto: features when the model has them

    def __post_init__(self) -> None:
        check("query_aware.signals", list(self.signals), len(self.signals) > 0 and len(set(self.signals)) == len(self.signals),
              f"a non-empty list of distinct signals among {', '.join(SIGNALS)}")
        for signal in self.signals:
            check_choice("query_aware.signals[]", signal, SIGNALS)
        check_range("query_aware.false_flag_rate", self.false_flag_rate, 0, 1, low_open=True, high_open=True)
        check_range("query_aware.calibration_samples", self.calibration_samples, 20, None)
        check_choice("query_aware.space", self.space, SPACES)


def _margin(probs: torch.Tensor) -> torch.Tensor:
    top = probs.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)


@DEPLOYMENTS.register
class QueryAware(OutputRestriction):
    """Answers suspicious queries (low margin, high entropy, far from the data) with the 2nd label.

    The threshold is calibrated on the attacker's data to `false_flag_rate` (`prepare`).
    """

    name = "query_aware"
    Config = QueryAwareConfig
    test_config = QueryAwareConfig(signals=["margin", "distance"], calibration_samples=100)  # contract test
    defender = True

    def __init__(self, config: QueryAwareConfig) -> None:
        super().__init__(config)
        self.space: str | None = None  # resolved by `prepare`
        self.reference: torch.Tensor | None = None  # distance: the attacker's data in `space`
        self.calibrated: dict[str, torch.Tensor] = {}  # signal -> sorted clean scores
        self.threshold: float | None = None

    @property
    def needs_features(self) -> bool:
        return "distance" in self.config.signals and self.space == "features"

    def prepare(self, suspect, calibration: torch.Tensor | None) -> None:  # noqa: ANN001 (DeployedSuspect)
        """Calibrate on `calibration` (the attacker's data), through the suspect's input transforms."""
        data = None if calibration is None else calibration[: int(self.config.calibration_samples)]
        distance = "distance" in self.config.signals
        need = 40 if distance else 20
        if data is None or len(data) < need:
            raise ValueError(f"query_aware needs at least {need} clean samples of the attacker's data to calibrate; "
                             f"got {0 if data is None else len(data)}. Enlarge data.splits.attacker.")
        self.space = ("features" if split_forward(suspect.model) else "input") if self.config.space == "auto" \
            else self.config.space
        if self.space == "features" and distance and not split_forward(suspect.model):
            raise ValueError(f"query_aware.space=features: the suspect ({type(suspect.model).__name__}) does not expose "
                             "penultimate features. Use space: input or auto.")
        if distance:  # a reference half and a held-out half: a sample's distance to itself would be 0
            half = len(data) // 2
            self.reference = self._points(self._model_answers(suspect, data[:half]))
            data = data[half:]
        answer = self._model_answers(suspect, data)
        scores = self._scores(answer)
        self.calibrated = {s: v.sort().values for s, v in scores.items()}
        suspicion = self._suspicion(scores)
        self.threshold = float(torch.quantile(suspicion, 1 - float(self.config.false_flag_rate), interpolation="lower"))
        rate = float((suspicion > self.threshold).float().mean())
        log.info("query_aware: calibrated on %d attacker samples (%s, distance space %s): threshold %.4f, "
                 "false-flag rate %.3f on them", len(data), "+".join(self.config.signals), self.space, self.threshold, rate)

    def _model_answers(self, suspect, x: torch.Tensor) -> Answer:  # noqa: ANN001
        parts = [suspect.model_answer(chunk, features=self.needs_features) for chunk in x.split(suspect.batch_size)]
        feats = [p.features for p in parts]
        return Answer(inputs=torch.cat([p.inputs for p in parts]), probs=torch.cat([p.probs for p in parts]),
                      labels=torch.cat([p.labels for p in parts]), model_probs=torch.cat([p.model_probs for p in parts]),
                      features=None if feats[0] is None else torch.cat(feats))

    def _points(self, answer: Answer) -> torch.Tensor:
        return answer.features if self.space == "features" else answer.inputs.flatten(1).float()

    def _scores(self, answer: Answer) -> dict[str, torch.Tensor]:
        """Each signal's score per query, higher = more suspicious."""
        out = {}
        if "margin" in self.config.signals:
            out["margin"] = -_margin(answer.model_probs)
        if "entropy" in self.config.signals:
            out["entropy"] = _entropy(answer.model_probs)
        if "distance" in self.config.signals:
            reference = self.reference.to(answer.model_probs.device)
            out["distance"] = torch.cdist(self._points(answer).to(reference.device), reference).min(dim=1).values
        return out

    def _suspicion(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        """The largest share of clean calibration scores at or below the query's, over the signals."""
        shares = [torch.searchsorted(self.calibrated[s].to(v.device), v.contiguous(), right=True).float()
                  / len(self.calibrated[s]) for s, v in scores.items()]
        return torch.stack(shares).amax(dim=0)

    def flags(self, answer: Answer) -> torch.Tensor:
        """Which queries of `answer` the defender flags."""
        if self.threshold is None:
            raise RuntimeError("query_aware was not calibrated: call DeployedSuspect.prepare(calibration) first.")
        return self._suspicion(self._scores(answer)) > self.threshold

    def restrict(self, answer: Answer, generator: torch.Generator | None) -> Answer:
        flagged = self.flags(answer)
        second = answer.model_probs.topk(2, dim=1).indices[:, 1]
        answer.relabel(flagged, second)
        answer.flagged = flagged if answer.flagged is None else answer.flagged | flagged
        return answer
