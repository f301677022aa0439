"""The fingerprinting-method contract: Config, access, generate(source, ctx), score(fp, oracle).

Every method is one file in this package, one class, one config dataclass; the file name, the
registry key and the YAML `name:` agree. The base class handles what all methods share (config,
device, the saved fingerprint format); subclasses write only the algorithm.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from torch import nn

from bench.io import atomic_save_tensors, atomic_write_json
from bench.oracle import Access, Oracle
from bench.pools import Pools, PoolSpec  # defined in the neutral bench.pools; re-exported here
from bench.registry import Registry


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
    """Base class of all fingerprinting methods.

    Subclasses set `name`, `Config` (a dataclass), `access` and `version`, and implement `generate`
    and `score`. `measure` may return extra figures next to the score (e.g. ADV-TRA's detection
    rate and agreement); the loop records every figure and ranks by `score`. `generation_target`
    says whether the fingerprint reached what the method's generation aims for (None: no target).
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    access: ClassVar[Access] = "label"
    version: ClassVar[str] = "1"
    # Config fields read only when scoring a suspect: a fingerprint cached under one value serves
    # every other value (the loop leaves them out of the cache key), so sweeping them is cheap.
    verification_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def config_dict(self) -> dict[str, Any]:
        """The method's config as a plain dict (what the result file records)."""
        return asdict(self.config)

    def pool_spec(self) -> PoolSpec | None:
        """Defender models this method needs (None: only the source)."""
        return None

    @abstractmethod
    def generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        """Build the fingerprint from the white-box source model."""

    @abstractmethod
    def score(self, fp: Fingerprint, suspect: Oracle) -> float:
        """Query the black-box suspect; higher = more likely derived from the source."""

    def measure(self, fp: Fingerprint, suspect: Oracle) -> dict[str, float]:
        """All figures for one suspect; must contain "score". Override to add more."""
        return {"score": float(self.score(fp, suspect))}

    def generation_target(self, fp: Fingerprint) -> dict[str, Any] | None:
        """Whether generation reached the method's own target, read from `fp.meta` (works on cached fingerprints).

        Override in methods whose generation can fall short of what their config asked for (UAP's
        fooling rate, CAE's conferrable count, ...); the floor and its reason are documented in the
        method's docs page. The loop writes the answer to `result["fingerprint"]["target"]` and the
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
