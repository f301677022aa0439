"""The deployment contract as checks: what every wrapper keeps, run over every registered one.

`tests/test_deploy.py` runs `check_deployment` on each entry of `DEPLOYMENTS` with the config the class
carries (`test_config`); the author of a wrapper in another package runs it too. Each check raises an
AssertionError that names the wrapper and the broken rule (docs/extending.md, "A deployment wrapper").
The checks run on a tiny fixed model and seeded 8x8 grey images, in well under a second per wrapper.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch
from torch import nn

from bench.deploy.base import DEPLOYMENTS, Deployment, InputTransform, OutputRestriction, build_deployment, parse_chain
from bench.deploy.suspect import DeployedSuspect
from bench.oracle import Oracle

CLASSES = 10  # answers of the check's model
QUERIES = 48  # queries per check, sent in batches of 16 (several batches per call)


class _CountingLinear(nn.Module):
    """A fixed linear classifier of flattened 8x8 grey images that counts the rows it sees."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)  # not the global RNG: the checks watch it
        self.weight = nn.Parameter(torch.randn(CLASSES, 64, generator=generator))
        self.bias = nn.Parameter(torch.randn(CLASSES, generator=generator))
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return x.flatten(1) @ self.weight.T + self.bias


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def contract_config(cls: type[Deployment]) -> Any:
    """The config a wrapper class carries for its contract check (None: its defaults).

    Raises:
        AssertionError: the class sets no `test_config`, or one that is not its Config (nor None).
    """
    where = f"deployment '{getattr(cls, 'name', '?')}' ({cls.__module__}.{cls.__qualname__})"
    assert hasattr(cls, "test_config"), (
        f"{where} has no `test_config`: set it in the class to a small {cls.Config.__name__}(...), or to None "
        "for the defaults (docs/extending.md, \"A deployment wrapper\")")
    config = cls.test_config
    assert config is None or isinstance(config, cls.Config), (
        f"{where}: test_config is a {type(config).__name__}, not a {cls.Config.__name__} or None")
    return config


def check_deployment(name: str) -> None:
    """Every contract check on the wrapper registered as `name`, with its `test_config`.

    Raises:
        AssertionError: naming the wrapper and the first rule it breaks.
        bench.registry.RegistryError: `name` is not registered.
    """
    cls = DEPLOYMENTS.get(name)
    assert cls.name == name, f"deployment '{name}': the class says name = {cls.name!r}; write the name once, in the class"
    assert issubclass(cls, (InputTransform, OutputRestriction)) and cls.stage in ("input", "output"), (
        f"deployment '{name}': subclass InputTransform (stage 'input') or OutputRestriction (stage 'output')")
    config = contract_config(cls)
    params = {} if config is None else dataclasses.asdict(config)
    check_config(name, params)
    if issubclass(cls, InputTransform):
        check_transform(name, params)
    check_answers(name, params)


def check_config(name: str, params: dict[str, Any]) -> None:
    """Defaults validate; an unknown key is refused naming the valid keys; the label shows every field."""
    build_deployment(name, {}, "contract")  # the defaults are a valid config
    valid = [field.name for field in dataclasses.fields(DEPLOYMENTS.get(name).Config)]
    try:
        build_deployment(name, {**params, "no_such_key": 1}, "contract")
    except ValueError as err:
        for expected in (f"Unknown key 'no_such_key' in contract ({name}).", f"Valid keys: {', '.join(valid) or '(none)'}."):
            assert expected in str(err), f"deployment '{name}': an unknown key's message {str(err)!r} lacks {expected!r}"
    else:
        raise AssertionError(f"deployment '{name}': an unknown config key was accepted")
    deployment = build_deployment(name, params, "contract")
    json.dumps(deployment.config_dict())  # the suspect's provenance records it
    label = deployment.label()
    assert label.startswith(name) and all(f"{key}=" in label for key in valid), (
        f"deployment '{name}': its label {label!r} must start with the name and show every config field")
    (again,) = parse_chain([{name: params}], "contract")
    assert again.label() == label, f"deployment '{name}': the recipe form gives {again.label()!r}, not {label!r}"
    assert isinstance(deployment.needs_features, bool), f"deployment '{name}': needs_features must be a bool"


def check_transform(name: str, params: dict[str, Any]) -> None:
    """An input transform keeps the batch's shape and dtype, stays in [0,1] and leaves the caller's batch alone."""
    x = _images(QUERIES, seed=1)
    before = x.clone()
    transform = build_deployment(name, params, "contract")
    assert isinstance(transform, InputTransform)
    out = transform.transform(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype, (
        f"deployment '{name}': transform gave {tuple(out.shape)} {out.dtype} for {tuple(x.shape)} {x.dtype}")
    assert float(out.min()) >= 0 and float(out.max()) <= 1, f"deployment '{name}': transformed pixels left [0,1]"
    assert torch.equal(x, before), f"deployment '{name}': transform changed the caller's batch in place"


def _deployed(name: str, params: dict[str, Any]) -> tuple[DeployedSuspect, _CountingLinear]:
    """A fresh wrapper around a fresh copy of the check's model, prepared on seeded calibration images."""
    model = _CountingLinear()
    suspect = DeployedSuspect(model, [build_deployment(name, params, "contract")], "contract", batch_size=16)
    suspect.prepare(_images(200, seed=2))  # a defender calibrates here; the others do nothing
    model.rows = 0
    return suspect.stream("check"), model


def check_answers(name: str, params: dict[str, Any]) -> None:
    """Through an oracle: answers well formed, one query per input, the same for the same seed, and drawn
    only from the wrapper's own generator (the global RNG untouched)."""
    x = _images(QUERIES, seed=3)
    rng = torch.get_rng_state()
    suspect, model = _deployed(name, params)
    oracle = Oracle(suspect, access="probs")
    probs, labels = oracle.probs(x), oracle.labels(x)
    assert oracle.queries == 2 * QUERIES and model.rows == 2 * QUERIES, (
        f"deployment '{name}': {oracle.queries} queries counted and {model.rows} model rows for {2 * QUERIES} inputs")
    assert probs.shape == (QUERIES, CLASSES) and probs.dtype == torch.float32 and bool(torch.isfinite(probs).all()), (
        f"deployment '{name}': answered probabilities {tuple(probs.shape)} {probs.dtype}, not finite float32 "
        f"({QUERIES}, {CLASSES})")
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1, f"deployment '{name}': probabilities left [0,1]"
    assert labels.shape == (QUERIES,) and labels.dtype == torch.int64, (
        f"deployment '{name}': labels {tuple(labels.shape)} {labels.dtype}, not ({QUERIES},) int64")
    assert bool(((labels >= 0) & (labels < CLASSES)).all()), f"deployment '{name}': a label outside 0..{CLASSES - 1}"
    rate = suspect.flag_rate()
    assert (rate is None) != DEPLOYMENTS.get(name).defender and (rate is None or 0 <= rate <= 1), (
        f"deployment '{name}': flag rate {rate!r} (a defender flags a share of queries; other wrappers none)")
    again, _ = _deployed(name, params)
    replay = Oracle(again, access="probs")
    assert torch.equal(replay.probs(x), probs) and torch.equal(replay.labels(x), labels), (
        f"deployment '{name}': the same suspect, stream and queries answered differently; draw random numbers "
        "only from the generator handed in, and set `random = True` if the wrapper draws any")
    assert torch.equal(torch.get_rng_state(), rng), (
        f"deployment '{name}' drew from the global RNG: draw only from the generator handed in "
        "(set `random = True` to get one)")
