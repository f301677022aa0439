"""The deployment layer's contract: wrappers between a fingerprinting method's queries and a suspect.

A *deployment* is what a thief puts around a stolen (or any) model when it serves it: transforms of
the incoming queries (`InputTransform`: JPEG, noise, blur, bit depth, crop) and restrictions of the
answers (`OutputRestriction`: top-1 only, rounding, top-k, random labels, a query-aware defender).
A chain is a list of one-key maps, `[{jpeg: {quality: 75}}, {top1: {}}]`; input transforms run on
the queries in their order, then the model, then the output restrictions on its answers in theirs.
Every wrapper is one file with one config dataclass and one class, registered in `DEPLOYMENTS` under the
class's own `name` (written once), with the small config its contract test runs beside it (`test_config`);
the package imports every module itself, so a new wrapper touches no existing file (docs/deployment.md,
docs/extending.md).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from bench.entry_config import build_config
from bench.io import sha256_json
from bench.nets.base import Classifier
from bench.registry import Registry

if TYPE_CHECKING:
    from bench.deploy.suspect import DeployedSuspect


@dataclass
class Answer:
    """What the deployed suspect answers for one batch, as the output restrictions pass it along.

    Attributes:
        inputs: the queries as the model saw them (after the input transforms).
        probs: the probabilities answered so far [B, classes] (restrictions replace them).
        labels: the labels answered so far [B] (int64).
        model_probs: the model's own softmax on `inputs`, never changed (the defender reads it).
        features: penultimate features [B, D] when a wrapper asked for them, else None.
        flagged: queries a defender flagged [B] (bool).
    """

    inputs: torch.Tensor
    probs: torch.Tensor
    labels: torch.Tensor
    model_probs: torch.Tensor
    features: torch.Tensor | None = None
    flagged: torch.Tensor | None = None

    def relabel(self, mask: torch.Tensor, new_labels: torch.Tensor) -> None:
        """Answer `new_labels` where `mask` holds: the old and new labels' probabilities swap places,
        so the probabilities stay a distribution whose top-1 is the answered label."""
        rows = mask.nonzero().flatten()
        if rows.numel() == 0:
            return
        old, new = self.labels[rows], new_labels[rows].to(self.labels.dtype)
        probs = self.probs.clone()
        probs[rows, old], probs[rows, new] = self.probs[rows, new], self.probs[rows, old]
        labels = self.labels.clone()
        labels[rows] = new
        self.probs, self.labels = probs, labels


class Deployment(ABC):
    """One wrapper of a deployment chain; subclasses set `name`, `Config`, `test_config` and write one method."""

    name: ClassVar[str]  # the registry key, written only here: `@DEPLOYMENTS.register` reads it
    Config: ClassVar[type]
    # The config the contract check runs (`bench.deploy.contract`, tests/test_deploy.py): a Config instance,
    # or None for the defaults. Deliberately no default here: a wrapper without one fails the check naming it.
    test_config: ClassVar[Any]
    stage: ClassVar[str]  # "input" | "output"
    random: ClassVar[bool] = False  # draws random numbers (from the generator the chain hands it)
    defender: ClassVar[bool] = False  # flags queries (its flag rates are recorded; it calibrates on attacker data)

    def __init__(self, config: Any) -> None:
        self.config = config

    @property
    def needs_features(self) -> bool:
        """Whether answers must carry the model's penultimate features (`Answer.features`)."""
        return False

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def label(self) -> str:
        """Readable and complete, e.g. `jpeg(quality=75)` or `top1`: part of the suspect's provenance."""
        fields = self.config_dict()
        if not fields:
            return self.name
        return f"{self.name}({','.join(f'{k}={_format(v)}' for k, v in fields.items())})"

    def prepare(self, suspect: DeployedSuspect, calibration: torch.Tensor | None) -> None:
        """Once per suspect, before any query (a defender calibrates here); default: nothing to do."""
        return None


class InputTransform(Deployment):
    """Changes the queries before the model sees them; inputs and outputs in [0,1], same shape and dtype."""

    stage = "input"

    @abstractmethod
    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The transformed batch `x` ([B, C, H, W] in [0,1])."""


class OutputRestriction(Deployment):
    """Changes the answers after the model: probabilities and/or labels of `Answer`."""

    stage = "output"

    @abstractmethod
    def restrict(self, answer: Answer, generator: torch.Generator | None) -> Answer:
        """The restricted answer (may modify `answer` and return it)."""


DEPLOYMENTS: Registry[type[Deployment]] = Registry("deployment", name_attr="name")


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_deployment(name: str, params: Any, where: str) -> Deployment:
    """The wrapper registered as `name`, its Config merged from `params` and checked.

    Raises:
        ValueError: an unknown name ("did you mean"); a ConfigError (:func:`bench.entry_config.build_config`):
            an unknown key (naming the valid ones), a value of the wrong type or out of range, each naming
            `<where> (<name>)`.
    """
    if name not in DEPLOYMENTS:
        raise ValueError(f"{where}: {DEPLOYMENTS.unknown_message(name)}")
    cls = DEPLOYMENTS.get(name)
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"{where} ({name}): the parameters must be a mapping such as {{{name}: {{}}}}; got {params!r}.")
    config: Any = build_config(cls.Config, params, where=f"{where} ({name})", name=name)
    return cls(config)


def parse_chain(entries: Sequence[Any] | None, where: str) -> list[Deployment]:
    """A deployment chain from its recipe form, a list of one-key maps; validated, no compute.

    Args:
        entries: e.g. `[{"jpeg": {"quality": 75}}, {"top1": {}}]`; None or [] is no deployment.
        where: the recipe key, e.g. "zoo.deploy" or "zoo.positives[2].deploy", named in errors.

    Raises:
        ValueError: naming `where[i]`, the bad name or key, and what is allowed.
    """
    if entries is None:
        return []
    if isinstance(entries, dict) or not isinstance(entries, (list, tuple)):
        raise ValueError(f"{where} must be a list of one-key maps, e.g. [{{jpeg: {{quality: 75}}}}, {{top1: {{}}}}]; "
                         f"got {entries!r}.")
    chain = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):  # `[top1]`: a wrapper without parameters
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ValueError(f"{where}[{i}] must be a one-key map {{NAME: {{params}}}} (NAME one of "
                             f"{', '.join(DEPLOYMENTS.names())}); got {entry!r}.")
        (name, params), = entry.items()
        chain.append(build_deployment(str(name), params, f"{where}[{i}]"))
    return chain


def chain_label(chain: Sequence[Deployment]) -> str:
    """`jpeg(quality=75)+top1`: the chain in its order (the suspect's provenance carries it)."""
    return "+".join(d.label() for d in chain)


def split_forward(model: torch.nn.Module) -> bool:
    """Whether `model` is a plain `Classifier` (normalize -> features -> linear head), so the penultimate
    features come out of the same forward pass as the logits (a whole model from a `factory:` arch has
    no separate head: its `features` are its logits)."""
    return isinstance(model, Classifier) and type(model).forward is Classifier.forward and model.has_linear_head


def stream_seed(suspect_id: str, position: int, deployment: Deployment, stream: str) -> int:
    """The seed of one random wrapper: its suspect, place in the chain, full config and the stream."""
    digest = sha256_json({"suspect": suspect_id, "position": position, "name": deployment.name,
                          "config": deployment.config_dict(), "stream": stream})
    return int(digest[:15], 16)
