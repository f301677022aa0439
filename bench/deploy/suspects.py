"""Deploying the benchmark's suspects, as the evaluation loop asks: each suspect's chain, the suspect behind
it (calibrated, its utility measured once), the fields its per_model rows carry, and the oracles that query
it for each method (`bench/evaluate.py`). The deployed suspect itself is `bench.deploy.suspect`."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from torch import nn

from bench.deploy.base import parse_chain
from bench.deploy.suspect import DeployedSuspect
from bench.oracle import Oracle

log = logging.getLogger(__name__)


class SplitCache:
    """A datamodule's `tensors(split, limit)`, each read once: every deployed suspect of a benchmark is
    calibrated and measured on the same tensors (a folder dataset would decode them per suspect)."""

    def __init__(self, datamodule: Any) -> None:
        self.datamodule = datamodule
        self._tensors: dict[tuple[str, int | None], Any] = {}

    def tensors(self, split: str, limit: int | None = None) -> Any:
        key = (split, limit)
        if key not in self._tensors:
            self._tensors[key] = self.datamodule.tensors(split, limit)
        return self._tensors[key]


def suspect_chain(zoo_deploy: Sequence[Any] | None, entry_deploy: Sequence[Any] | None) -> list[Any]:
    """A suspect's chain in recipe form: `zoo.deploy` first, then its own entry's `deploy:`."""
    return [*(zoo_deploy or []), *(entry_deploy or [])]


def deploy_suspect(model: nn.Module, entries: Sequence[Any], model_id: str, provenance: str, datamodule: Any,
                   batch_size: int = 1024) -> tuple[DeployedSuspect | None, dict[str, Any]]:
    """`model` behind its chain, prepared, with the row fields every method's row of it carries.

    `datamodule`: anything with `tensors(split, limit)`; the loop passes one `SplitCache` for all suspects.

    The defender calibrates on the attacker split; the utility (`test_acc_deployed`, and the
    defender's `defender_false_flag_rate`) is measured once on the whole test split, outside every
    method's query count.

    Returns:
        `(None, {})` without a chain; else the deployed suspect and `{deploy, provenance,
        test_acc_deployed[, defender_false_flag_rate]}`.
    """
    chain = parse_chain(list(entries), "deploy")  # validated before any compute already; cheap
    if not chain:
        return None, {}
    suspect = DeployedSuspect(model, chain, model_id, batch_size)
    limit = max((int(d.config.calibration_samples) for d in chain if d.defender), default=0)
    calibration = datamodule.tensors("attacker", limit)[0] if limit else None
    suspect.prepare(calibration)
    x_test, y_test = datamodule.tensors("test")
    row = {"deploy": suspect.label, "provenance": f"{provenance}|deploy={suspect.label}", **suspect.utility(x_test, y_test)}
    log.info("suspect %s deployed as %s: test accuracy through it %.4f", model_id, suspect.label, row["test_acc_deployed"])
    return suspect, row


def oracle_opener(model: nn.Module, deployed: DeployedSuspect | None, stream: str,
                  **oracle_args: Any) -> Callable[[], Oracle]:
    """What opens one method's oracles on a suspect: on the model itself, or on its deployment.

    Each oracle on a deployment restarts its random draws: the first on stream `stream` (one per
    method, so a method's answers do not depend on the methods before it), later ones (query-budget
    subsets) on `stream/1`, `stream/2`, ...; `deployed.flag_rate(stream)` is the first oracle's.
    """
    if deployed is None:
        return partial(Oracle, model, **oracle_args)
    calls = itertools.count()

    def open_oracle() -> Oracle:
        n = next(calls)
        deployed.stream(stream if n == 0 else f"{stream}/{n}")
        return Oracle(deployed, **oracle_args)  # an endpoint to the oracle: one query per input, counted once

    return open_oracle
