"""The fingerprinting-method contract: Config, access, generate(source, ctx), score(fp, oracle).

Every method is one file (or one subpackage) in this package, one class, one config dataclass; the
file name, the registry key and the YAML `name:` agree. The package imports every module it holds
(`bench.registry.import_submodules`), so a new method is one new file; its name is written once, as the
class's `name` (`@METHODS.register` reads it), and its small contract-test config sits in the class
(`test_config`). The base class handles what all methods share (config, eval mode, seeds, timing, the
saved fingerprint format); subclasses write only the algorithm (`_generate`, `_score`, optionally `_measure`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from bench.io import atomic_write_bytes, atomic_write_json, sha256_file, sha256_json
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


IMPORT_KEY = "fingerprint"  # the loop-level method-entry key naming an imported fingerprint (bench.fingerprint_import)

# The files of a cached fingerprint; `sha256.json` records their hashes and is written last.
FINGERPRINT_FILES = ("fingerprint.safetensors", "fingerprint.json")
HASHES_FILE = "sha256.json"
# Wall time of the generation: kept beside the fingerprint, outside its hash, so a regenerated identical
# fingerprint has the same sha256 (and a changed one is told apart from a slower one).
TIMING_FILE = "timing.json"
TIMING_KEYS = ("generation_seconds", "generate_seconds")


class FingerprintIntegrityError(ValueError):
    """A saved fingerprint whose files do not match the sha256 recorded when it was saved.

    Attributes:
        path: the file that failed (a fingerprint file, or `sha256.json` when it is missing or unreadable).
        unrecorded: True when no hashes were recorded (saved before fingerprints carried them, or the save
            was interrupted before writing `sha256.json`): nothing suggests an edit.
    """

    def __init__(self, message: str, path: Path, unrecorded: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.unrecorded = unrecorded


def fingerprint_sha256(file_hashes: dict[str, str]) -> str:
    """The fingerprint's sha256: `sha256_json` of `{file name: file sha256}` over `FINGERPRINT_FILES`."""
    return sha256_json({name: file_hashes[name] for name in FINGERPRINT_FILES})


@dataclass
class Fingerprint:
    """A generated fingerprint: named tensors (safetensors) plus JSON-able metadata.

    `sha256` is set by `save` and `load` (None before): the hash over the saved files that a result
    records as the fingerprint it used (`fingerprint_sha256`).
    """

    method: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `fingerprint.safetensors`, `fingerprint.json`, then their hashes `sha256.json`, each atomically.

        The hashes file is removed first and written last, so a save killed midway leaves an entry
        without recorded hashes (regenerated by the loop), never one whose hashes describe other files.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / HASHES_FILE).unlink(missing_ok=True)
        meta = {k: v for k, v in self.meta.items() if k not in TIMING_KEYS}  # the same fingerprint, the same hash
        payload = {
            "fingerprint.safetensors": tensors_to_bytes({k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}),
            "fingerprint.json": (json.dumps({"method": self.method, "meta": meta}, indent=2, sort_keys=True)
                                 + "\n").encode("utf-8"),
        }
        atomic_write_json(out / TIMING_FILE, {k: v for k, v in self.meta.items() if k in TIMING_KEYS})
        for name, data in payload.items():
            atomic_write_bytes(out / name, data)
        hashes = {name: hashlib.sha256(data).hexdigest() for name, data in payload.items()}
        self.sha256 = fingerprint_sha256(hashes)
        atomic_write_json(out / HASHES_FILE, {"files": hashes, "sha256": self.sha256})
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, verify: bool = True) -> Fingerprint:
        """Reload a saved fingerprint without re-running the method (no pickle involved).

        Args:
            directory: the folder `save` wrote.
            verify: check every file against `sha256.json` before reading it.

        Raises:
            FingerprintIntegrityError: (verify) a file differs from its recorded sha256, or no hashes
                were recorded (`unrecorded`); the message names the file.
        """
        src = Path(directory)
        digest = verify_fingerprint_files(src) if verify else None
        info = json.loads((src / "fingerprint.json").read_text(encoding="utf-8"))
        return cls(method=info["method"], tensors=load_file(str(src / "fingerprint.safetensors")),
                   meta={**info["meta"], **_timing(src)}, sha256=digest)

    @staticmethod
    def exists(directory: str | os.PathLike) -> bool:
        src = Path(directory)
        return all((src / name).is_file() for name in FINGERPRINT_FILES)


def _timing(directory: Path) -> dict[str, float]:
    """The generation timing saved beside a fingerprint (not hashed; {} if absent or unreadable)."""
    try:
        timing = json.loads((directory / TIMING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(timing, dict):
        return {}
    return {k: float(v) for k, v in timing.items() if k in TIMING_KEYS and isinstance(v, (int, float))}


def verify_fingerprint_files(directory: Path) -> str:
    """Check a saved fingerprint's files against its `sha256.json`; return the fingerprint's sha256.

    Raises:
        FingerprintIntegrityError: naming the file that is missing, unreadable or changed.
    """
    hashes_path = directory / HASHES_FILE
    if not hashes_path.is_file():
        raise FingerprintIntegrityError(f"{hashes_path} is missing: the fingerprint was saved before fingerprints "
                                        "carried sha256, or its save was interrupted.", hashes_path, unrecorded=True)
    try:
        recorded = json.loads(hashes_path.read_text(encoding="utf-8"))
        files = {name: str(recorded["files"][name]) for name in FINGERPRINT_FILES}
        digest = str(recorded["sha256"])
    except (ValueError, KeyError, TypeError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FingerprintIntegrityError(f"{hashes_path} is not a valid hashes file ({type(err).__name__}: {err}).",
                                        hashes_path) from None
    for name, expected in files.items():
        path = directory / name
        actual = sha256_file(path) if path.is_file() else "missing"
        if actual != expected:
            raise FingerprintIntegrityError(f"{path} was changed after it was saved: sha256 {actual[:12]}… != "
                                            f"recorded {expected[:12]}… in {hashes_path}.", path)
    if fingerprint_sha256(files) != digest:
        raise FingerprintIntegrityError(f"{hashes_path} was edited: its sha256 {digest[:12]}… is not the hash of "
                                        "the file hashes it lists.", hashes_path)
    return digest


class FingerprintMethod(ABC):
    """Base class of all fingerprinting methods: subclasses write only the algorithm.

    Subclasses set `name` (the registry key, written only here: `@METHODS.register` reads it), `Config`
    (a dataclass), `access`, `version` and `test_config`, and implement `_generate` and `_score`;
    `_measure` may return extra figures next to the score (e.g. ADV-TRA's detection rate and agreement);
    the loop records every figure and ranks by `score`. `generation_target` says whether the fingerprint
    reached what the method's generation aims for (None: no target).

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
    # The small config the contract tests run (tests/methods/test_contract.py): a Config instance that
    # generates in about a second on 8x8 digits, or None for the defaults. Deliberately no default here:
    # a method without one fails the contract test that names it.
    test_config: ClassVar[Any]
    # Config fields read only when scoring a suspect: a fingerprint cached under one value serves
    # every other value (the loop leaves them out of the cache key), so sweeping them is cheap.
    verification_fields: ClassVar[tuple[str, ...]] = ()
    # Figures the method's own paper reports, "AUC/T1%F/T10%F" by dataset key (lower-case letters and
    # digits, e.g. "cifar10"); the leaderboard's "paper" column shows them next to what fpbench measures.
    paper_results: ClassVar[dict[str, str]] = {}

    # Query budgets (docs/metrics.md, "Scores against query budget"): the tensors whose first dimension
    # indexes the fingerprint's items (a trajectory, a sample, a pair); `at_budget` keeps a seeded subset
    # of items. Empty: the method cannot be subsampled unless it overrides `budget_items`/`_subsample`.
    budget_tensors: ClassVar[tuple[str, ...]] = ()
    min_budget_items: ClassVar[int] = 1  # fewest items a subsampled fingerprint may hold (SAC: 2)
    # The loop checks that a fingerprint recognises its own source (`bench.self_check`); False only for a
    # guard whose score ignores the suspect (`random`).
    recognises_source: ClassVar[bool] = True

    _TEMPLATE_METHODS: ClassVar[tuple[str, ...]] = ("generate", "score", "measure", "at_budget")

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

    # -- query budgets --------------------------------------------------------------------------------
    def budget_items(self, fp: Fingerprint) -> int | None:
        """How many items the fingerprint holds for subsampling (None: it cannot be subsampled)."""
        if not self.budget_tensors:
            return None
        return int(fp.tensors[self.budget_tensors[0]].shape[0])

    def budget_fit(self, fp: Fingerprint, budget: int) -> tuple[int, int, int] | None:
        """`(items, queries per item rounded up, items that fit in budget)`; None when it cannot be subsampled."""
        items = self.budget_items(fp)
        if not items:
            return None
        per_item = -(-int(fp.meta.get("queries_per_suspect", 0)) // items)
        return items, per_item, budget // per_item

    def _subsample(self, fp: Fingerprint, keep: torch.Tensor) -> Fingerprint:
        """The fingerprint restricted to the items `keep` (sorted indices): index-selects `budget_tensors`."""
        tensors = {k: (v[keep] if k in self.budget_tensors else v) for k, v in fp.tensors.items()}
        return Fingerprint(method=fp.method, tensors=tensors, meta=dict(fp.meta), sha256=fp.sha256)

    def at_budget(self, fp: Fingerprint, budget: int, seed: int) -> Fingerprint | None:
        """The fingerprint a verifier limited to `budget` queries per suspect would use.

        The whole fingerprint when it fits the budget; otherwise `budget // q` of its items drawn
        without replacement from `seeded_generator(seed, budget)` (q = queries per item, rounded up) and
        kept in their original order; None when the method cannot be subsampled or fewer than
        `min_budget_items` items fit. `meta` gains `budget` and `budget_items`, and its
        `queries_per_suspect` is what the subset costs.
        """
        if int(fp.meta.get("queries_per_suspect", 0)) <= budget:
            return fp
        fit = self.budget_fit(fp, budget)
        if fit is None or fit[2] < self.min_budget_items:
            return None
        items, per_item, count = fit
        keep = torch.randperm(items, generator=seeded_generator(seed, budget))[:count].sort().values
        subset = self._subsample(fp, keep)
        subset.meta.update(budget=int(budget), budget_items=int(count), queries_per_suspect=int(count * per_item))
        return subset

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


METHODS: Registry[type[FingerprintMethod]] = Registry("method", name_attr="name")
