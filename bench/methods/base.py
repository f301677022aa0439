"""The fingerprinting-method contract: Config, access, generate(source, ctx), score(fp, oracle).

Every method is one file in this package, one class, one config dataclass; the file name, the
registry key and the YAML `name:` agree. The base class handles what all methods share (config,
eval mode, seeds, timing, the saved fingerprint format); subclasses write only the algorithm
(`_generate`, `_score`, optionally `_measure`).
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from torch import nn

from bench.io import atomic_save_tensors, atomic_write_json
from bench.modes import eval_mode
from bench.oracle import Access, Oracle
from bench.pools import Pools, PoolSpec  # defined in the neutral bench.pools; re-exported here
from bench.registry import Registry
from bench.seeding import combine_seeds, seeded_generator, seeded_global_rng


@dataclass
class GenerationContext:
    """What a method may use at generation time (white-box source + the owner's own data).

    Attributes:
        datamodule: the recipe's FingerprintDataModule (set up); use `owner_data`/`split_data`.
        seed: the fingerprint seed; methods seed their own torch.Generator from it.
        device: where to compute (the source model's device).
        num_classes: number of classes of the task.
        pools: defender models, only for methods whose `pool_spec()` asked for them.
        progress: whether to show progress bars.
    """

    datamodule: Any
    seed: int
    device: torch.device
    num_classes: int
    pools: Pools | None = None
    progress: bool = True

    def owner_data(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `limit` samples of the owner split (x in [0,1] on `device`, y)."""
        return self.split_data("owner", limit)

    def split_data(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `limit` samples of one of the owner's splits (`owner` or `test`)."""
        if split not in ("owner", "test"):
            raise ValueError(f"A fingerprinting method may only use the owner's data ('owner', 'test'), not '{split}'.")
        x, y = self.datamodule.tensors(split, limit)
        return x.to(self.device), y.to(self.device)


@dataclass
class Fingerprint:
    """A generated fingerprint: named tensors (safetensors) plus JSON-able metadata."""

    method: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `fingerprint.safetensors` + `fingerprint.json` atomically into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(out / "fingerprint.safetensors", self.tensors)
        atomic_write_json(out / "fingerprint.json", {"method": self.method, "meta": self.meta})
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Fingerprint:
        """Reload a saved fingerprint without re-running the method (no pickle involved)."""
        src = Path(directory)
        info = json.loads((src / "fingerprint.json").read_text())
        return cls(method=info["method"], tensors=load_file(str(src / "fingerprint.safetensors")), meta=info["meta"])

    @staticmethod
    def exists(directory: str | os.PathLike) -> bool:
        src = Path(directory)
        return (src / "fingerprint.json").is_file() and (src / "fingerprint.safetensors").is_file()


class FingerprintMethod(ABC):
    """Base class of all fingerprinting methods: subclasses write only the algorithm.

    Subclasses set `name`, `Config` (a dataclass), `access` and `version`, and implement
    `_generate` and `_score`; `_measure` may return extra figures next to the score (e.g. ADV-TRA's
    detection rate and agreement); the loop records every figure and ranks by `score`.
    `generation_target` says whether the fingerprint reached what the method's generation aims for
    (None: no target).

    The public `generate`, `score` and `measure` are template methods that own the bookkeeping
    (subclasses may not override them):

    - eval mode: `generate` runs `_generate` with the source in eval mode and afterwards gives every
      submodule its own mode back (`bench.modes.eval_mode`); a suspect is queried through the
      `Oracle`, which does the same around each query.
    - seeds: one formula (`bench.seeding`): `self.seed(ctx) = ctx.seed * 1_000_003 + config.seed`;
      `self.generator(ctx)` is a CPU generator seeded with it, for every random draw. The global
      RNG is seeded with it too for the call and then given back (`seeded_global_rng`), so a stray
      draw from it is reproducible and the caller's stream untouched. Scoring draws nothing.
    - timing: `fp.meta["generation_seconds"]` = wall seconds of the whole `generate` call.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    access: ClassVar[Access] = "label"
    version: ClassVar[str] = "1"
    # Config fields read only when scoring a suspect: a fingerprint cached under one value serves
    # every other value (the loop leaves them out of the cache key), so sweeping them is cheap.
    verification_fields: ClassVar[tuple[str, ...]] = ()
    # Figures the method's own paper reports, "AUC/T1%F/T10%F" by dataset key (lower-case letters and
    # digits, e.g. "cifar10"); the leaderboard's "paper" column shows them next to what fpbench measures.
    paper_results: ClassVar[dict[str, str]] = {}

    _TEMPLATE_METHODS: ClassVar[tuple[str, ...]] = ("generate", "score", "measure")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for public in FingerprintMethod._TEMPLATE_METHODS:
            if public in vars(cls):
                raise TypeError(f"{cls.__name__} overrides {public}(), which the base class wraps (eval mode, seeds, "
                                f"timing); implement _{public}() instead (see docs/extending.md).")

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def config_dict(self) -> dict[str, Any]:
        """The method's config as a plain dict (what the result file records)."""
        return asdict(self.config)

    def pool_spec(self) -> PoolSpec | None:
        """Defender models this method needs (None: only the source)."""
        return None

    # -- seeds --------------------------------------------------------------------------------------
    def seed(self, ctx: GenerationContext) -> int:
        """The method's seed: `combine_seeds(ctx.seed, config.seed)` (config.seed 0 when the config has none)."""
        return combine_seeds(ctx.seed, getattr(self.config, "seed", 0))

    def generator(self, ctx: GenerationContext) -> torch.Generator:
        """A fresh CPU generator seeded with `self.seed(ctx)`: the same draws on any device."""
        return seeded_generator(self.seed(ctx))

    # -- the template methods -----------------------------------------------------------------------
    def generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        """Build the fingerprint from the white-box source model (see the class docstring)."""
        started = time.perf_counter()
        with eval_mode(source), seeded_global_rng(self.seed(ctx)):
            fingerprint = self._generate(source, ctx)
        fingerprint.meta["generation_seconds"] = time.perf_counter() - started
        return fingerprint

    def measure(self, fp: Fingerprint, suspect: Oracle) -> dict[str, float]:
        """All figures for one suspect; "score" among them (higher = more likely derived)."""
        figures = self._measure(fp, suspect)
        if "score" not in figures:
            raise RuntimeError(f"{self.name}._measure returned {sorted(figures)} without 'score'; add it.")
        return figures

    def score(self, fp: Fingerprint, suspect: Oracle) -> float:
        """Query the black-box suspect; higher = more likely derived from the source."""
        return float(self.measure(fp, suspect)["score"])

    # -- what a method implements ---------------------------------------------------------------------
    @abstractmethod
    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        """The algorithm: build the fingerprint (the source is already in eval mode)."""

    @abstractmethod
    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        """The algorithm: the suspect's score (higher = more likely derived)."""

    def _measure(self, fp: Fingerprint, suspect: Oracle) -> dict[str, float]:
        """All figures for one suspect; must contain "score". Override to add more."""
        return {"score": float(self._score(fp, suspect))}

    def generation_target(self, fp: Fingerprint) -> dict[str, Any] | None:
        """Whether generation reached the method's own target, read from `fp.meta` (works on cached fingerprints).

        Override in methods whose generation can fall short of what their config asked for (UAP's
        fooling rate, CAE's conferrable count, ...); the floor and its reason are documented in the
        method's docs page. The loop writes the answer to `result["fingerprint"]["generation_target"]` and the
        leaderboard marks a row whose fingerprint missed it.

        Returns:
            None when the method has no generation target, else a `target_record`:
            `{"name": str, "achieved": float, "floor": float, "met": bool}`.
        """
        return None


# One rule for every count-based target (CAE's conferrable examples, ADV-TRA's trajectories,
# IPGuard's converged seeds): at least half of what the config requested; the reason is in each
# method's docs page, section "Generation target".
KEPT_FRACTION_FLOOR = 0.5


def target_record(name: str, achieved: float, floor: float) -> dict[str, Any]:
    """The record of a generation target: `met` is `achieved >= floor`.

    Args:
        name: what was measured, e.g. "fooling_rate" or "kept_fraction".
        achieved: the value the generation reached.
        floor: the least value that counts as reaching the target.
    """
    return {"name": name, "achieved": float(achieved), "floor": float(floor), "met": bool(achieved >= floor)}


def kept_fraction_target(name: str, kept: int, requested: int) -> dict[str, Any]:
    """A count-based target: `kept / requested` against `KEPT_FRACTION_FLOOR`."""
    return target_record(name, kept / requested, KEPT_FRACTION_FLOOR)


METHODS: Registry[type[FingerprintMethod]] = Registry("method")
