"""`fpbench reproduce`: re-score a board's suspects with its own zoo and fingerprints, and say, per result
file, whether every score is identical and, where not, by how much (docs/sharing.md, "Reproduce a board").

Retraining a zoo on another processor never gives the same bytes (CPU kernels differ by vendor and
vector width), so a board is reproduced by scoring the *same* models with the *same* fingerprints: pull
the zoo (`fpbench zoo pull`) and the fingerprints (`fpbench fingerprint pull`), then run this. It
rebuilds each result's measured config (seed, data, zoo, eval, method) into a recipe, checks that it
hashes to the result's `config_sha256`, that every planned model is built and every fingerprint is
cached with the sha256 the result recorded, and only then runs the ordinary evaluation loop into a
temporary results tree: nothing is trained and nothing is generated. Results of one trial share one
run (the zoo is loaded once for all its methods).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.config import ConfigError, load_recipe, run_config_sha256
from bench.evaluate import method_pool_specs, run_benchmark
from bench.io import atomic_write_json, sha256_json
from bench.methods import METHODS
from bench.methods.base import Fingerprint, FingerprintIntegrityError, verify_fingerprint_files
from bench.plugins import key_reference, unregistered_fix
from bench.provenance import collect_hardware, cpu_capability
from bench.results import iter_results
from bench.verification import VerifyError, cached_fingerprint_dir, method_of, result_entry
from bench.zoo.build import prepare

log = logging.getLogger(__name__)

REPORT_FORMAT = "fpbench-reproduce"
DEFAULT_OVERRIDES = ("compute.cpu_threads=1",)  # what every published recipe scores with; later overrides win
IDENTICAL, DIFFERS, NOT_RESCORED = "identical", "differs", "not rescored"


class ReproduceError(ConfigError):
    """Reproducing cannot start: a model or fingerprint is missing, or the results are unusable (exit 2)."""


@dataclass
class FileOutcome:
    """How one result file's scores compare with a re-scoring of its suspects."""

    path: str  # the result file, relative to the results tree's runs/
    method: str
    seed: int
    status: str  # IDENTICAL | DIFFERS | NOT_RESCORED
    suspects: int = 0
    differing: int = 0  # suspects with any score (main or at a query budget) not bit-identical
    max_abs_diff: float = 0.0  # over every suspect's main and budget scores
    auc: float | None = None  # the published AUC
    auc_diff: float | None = None  # re-scored minus published
    fingerprint_identical: bool | None = None
    note: str = ""


@dataclass
class ReproduceReport:
    """Every result file's outcome, with where and how it was re-scored."""

    zoo: str | None = None  # the zoo whose results were re-scored (None: every zoo of the results tree)
    files: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0
    hardware: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {status: sum(f.status == status for f in self.files) for status in (IDENTICAL, DIFFERS, NOT_RESCORED)}

    def to_json(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "format_version": 1, "zoo": self.zoo, "counts": self.counts(),
                "seconds": round(self.seconds, 1),
                "hardware": self.hardware, "files": [asdict(f) for f in self.files]}


def reproduce(results_dir: str | os.PathLike, zoo: str | None = None, zoo_dir: str | os.PathLike = "zoo",
              cache_dir: str | os.PathLike = ".cache/fpbench", overrides: list[str] | None = None,
              progress: bool = True) -> ReproduceReport:
    """Re-score every suspect of the result files under `results_dir` (of zoo `zoo` only, when given).

    Args:
        results_dir: a results tree (`results`, `local_results`): its `runs/` holds the result files.
        zoo: only the results of this zoo (e.g. `quickstart`).
        zoo_dir: where the zoo is (`paths.zoo_dir`), e.g. after `fpbench zoo pull`.
        cache_dir: where the fingerprints are (`paths.cache_dir`), e.g. after `fpbench fingerprint pull`.
        overrides: recipe overrides for how to run (`compute.*`, `eval.device`); one that changes what a
            result measures makes its config hash differ, and that result is reported as not re-scored.
        progress: progress bars.

    Raises:
        ReproduceError: no result files, a planned model not built, a fingerprint not cached (or another one).
    """
    start = time.perf_counter()
    runs = Path(results_dir) / "runs"
    results = [(p, r) for p, r in iter_results(results_dir) if zoo is None or r["zoo"]["name"] == zoo]
    if not results:
        raise ReproduceError(f"No result files under {runs}{f' of zoo {zoo!r}' if zoo else ''}: name the results tree "
                             "of the board (e.g. results) and --zoo NAME of its benchmark.")
    _check_references(results, runs)
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, result in results:  # one run per trial: the same config less the method
        groups.setdefault(sha256_json({k: v for k, v in result["config"].items() if k != "method"}), []).append((path, result))
    report = ReproduceReport(zoo=zoo, hardware={**collect_hardware(), "cpu_capability": cpu_capability()})
    with tempfile.TemporaryDirectory(prefix="fpbench-reproduce-") as tmp:
        trials = [_Trial.prepare(members, runs, Path(tmp) / f"trial-{n}", Path(zoo_dir), Path(cache_dir),
                                 [*DEFAULT_OVERRIDES, *(overrides or [])]) for n, members in enumerate(groups.values())]
        threads = [t.cfg.compute.cpu_threads for t in trials if t.cfg is not None]
        report.hardware["scoring_threads"] = threads[0] if threads and threads[0] is not None else \
            report.hardware["torch_threads"]  # what the loop scored with (compute.cpu_threads), not this process's default
        for trial in trials:  # every trial checked before the first is scored: a missing model stops nothing half-way
            trial.rescore(progress)
            report.files += trial.outcomes.values()
    report.seconds = time.perf_counter() - start
    return report


def _check_references(results: list[tuple[Path, dict[str, Any]]], runs: Path) -> None:
    """A result made with a method class a recipe named (`package.module-Class`) needs that class registered in
    this process, and a name read from a file is never imported: refuse before any work, naming the fix."""
    unregistered = sorted({(r["method"]["name"], p.relative_to(runs).as_posix()) for p, r in results
                           if key_reference(r["method"]["name"]) and r["method"]["name"] not in METHODS})
    if unregistered:
        name, example = unregistered[0]
        more = len({n for n, _ in unregistered}) - 1
        raise ReproduceError(f"{example} (under {runs}) was made with a method this process has not registered: "
                             f"{unregistered_fix(name)}{f'; {more} more such method(s)' if more else ''}.")


def _recipe(members: list[tuple[Path, dict[str, Any]]], work: Path, zoo_dir: Path, cache_dir: Path,
            overrides: list[str]) -> Any:
    """The recipe that measures these results, with this machine's paths and no tracking, loaded and validated."""
    config = members[0][1]["config"]
    budgets = sorted({b["budget"] for _, r in members for b in r.get("budgets") or [] if type(b["budget"]) is int})
    recipe = {"seed": config["seed"], "data": config["data"], "zoo": config["zoo"],
              "eval": {**config["eval"], "budgets": budgets},
              "methods": [result_entry(r) for _, r in members],
              "paths": {"zoo_dir": str(zoo_dir.resolve()), "cache_dir": str(cache_dir.resolve()),
                        "results_dir": str((work / "results").resolve())},
              "tracking": {"wandb": {"mode": "disabled"}}}
    work.mkdir(parents=True)
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return load_recipe(path, overrides)


@dataclass
class _Trial:
    """The results of one trial (one config less the method): their recipe, those it can re-score, the outcomes."""

    cfg: Any
    kept: list[tuple[Path, dict[str, Any]]]
    outcomes: dict[int, FileOutcome]  # by id() of the published result

    @classmethod
    def prepare(cls, members: list[tuple[Path, dict[str, Any]]], runs: Path, work: Path, zoo_dir: Path,
                cache_dir: Path, overrides: list[str]) -> _Trial:
        """Rebuild the recipe, keep the results whose config it reproduces, and check their models and fingerprints.

        Raises:
            ReproduceError: a planned model is not built, or a fingerprint is not cached as its result recorded.
        """
        outcomes = {id(r): FileOutcome(path.relative_to(runs).as_posix(), r["method"]["name"], int(r["seed"]),
                                       NOT_RESCORED, suspects=len(r["per_model"]), auc=r["metrics"].get("auc"))
                    for path, r in members}
        try:
            cfg = _recipe(members, work, zoo_dir, cache_dir, overrides)
        except ConfigError as err:
            for outcome in outcomes.values():
                outcome.note = f"this fpbench cannot rebuild its config: {err}"
            return cls(None, [], outcomes)
        kept = []
        for path, result in members:
            if run_config_sha256(cfg, result_entry(result)) == result["config_sha256"]:
                kept.append((path, result))
            else:
                outcomes[id(result)].note = ("its config rebuilds to another config_sha256 here (a result of another "
                                             "fpbench version, or an override that changes what it measures)")
        if kept and len(kept) < len(members):
            cfg = _recipe(kept, work.with_name(work.name + "-kept"), zoo_dir, cache_dir, overrides)
        if kept:
            _preflight(cfg, kept, zoo_dir, cache_dir)
        return cls(cfg, kept, outcomes)

    def rescore(self, progress: bool) -> None:
        """Run the evaluation loop on the kept results' suspects and compare each new result with its original."""
        if not self.kept:
            return
        outcome = run_benchmark(self.cfg, progress=progress)
        fresh = {r["config_sha256"]: r for r in outcome.results.values()}
        for _, result in self.kept:
            new = fresh.get(result["config_sha256"])
            if new is None:
                why = outcome.failed.get(result["method"]["name"], "no result written")
                self.outcomes[id(result)].note = f"re-scoring failed: {why}"
            else:
                _compare(self.outcomes[id(result)], result, new)


def _preflight(cfg: Any, members: list[tuple[Path, dict[str, Any]]], zoo_dir: Path, cache_dir: Path) -> None:
    """Every planned model built and every fingerprint cached as recorded: else refuse (nothing is trained or generated)."""
    _, plan, store = prepare(cfg, method_pool_specs(cfg))
    missing = store.unbuilt(plan.jobs)
    if missing:
        raise ReproduceError(f"Zoo {plan.name} under {zoo_dir} lacks {len(missing)} of its {len(plan.jobs)} models "
                             f"({', '.join(j.model_id for j in missing[:5])}{', ...' if len(missing) > 5 else ''}). "
                             "reproduce re-scores and never trains: pull the board's zoo first (--pull-zoo URI, or "
                             "fpbench zoo pull URI --zoo-dir DIR).")
    source = store.records()[plan.source.model_id]
    for path, result in members:
        if result["zoo"].get("source_sha256") not in (None, source["sha256"]):
            raise ReproduceError(f"{path} measured source {result['zoo']['source_sha256'][:12]}…, but zoo "
                                 f"{plan.name} under {zoo_dir} holds {source['sha256'][:12]}…: another zoo of the same "
                                 "name. Pull the board's own zoo into another --zoo-dir.")
        try:
            folder = cached_fingerprint_dir(result, method_of(result_entry(result)), cache_dir, path)
            found = verify_fingerprint_files(folder) if Fingerprint.exists(folder) else None  # hashes only, no tensors
        except (VerifyError, FingerprintIntegrityError, OSError, ValueError) as err:
            raise ReproduceError(f"{path}: its fingerprint cannot be read ({err}).") from None
        if found != result["fingerprint"].get("sha256"):
            state = "is not cached" if found is None else f"is cached as {found[:12]}…, not as recorded"
            raise ReproduceError(f"The fingerprint of {path} {state} at {folder}. reproduce never generates: pull "
                                 "the board's fingerprints first (--pull-fingerprints URI, or fpbench fingerprint pull URI "
                                 "--cache-dir DIR).")


def _scores(row: dict[str, Any]) -> dict[str, Any]:
    return {"score": row.get("score"), **{f"budget {k}": v for k, v in (row.get("budget_scores") or {}).items()}}


def _compare(outcome: FileOutcome, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Fill `outcome` from the published result `old` and its re-scoring `new`."""
    fresh = {row["model_id"]: row for row in new["per_model"]}
    differing, worst = 0, 0.0
    for row in old["per_model"]:
        other = fresh.get(row["model_id"])
        before, after = _scores(row), _scores(other or {})
        diffs = [_difference(before.get(k), after.get(k)) for k in set(before) | set(after)]
        if other is None or any(d != 0.0 for d in diffs):
            differing += 1
        worst = max([worst, *(d for d in diffs if math.isfinite(d))])  # a score present on one side only counts as differing
    outcome.differing, outcome.max_abs_diff = differing, worst
    outcome.fingerprint_identical = new["fingerprint"].get("sha256") == old["fingerprint"].get("sha256")
    if outcome.auc is not None and new["metrics"].get("auc") is not None:
        outcome.auc_diff = float(new["metrics"]["auc"]) - float(outcome.auc)
    outcome.status = IDENTICAL if differing == 0 and outcome.fingerprint_identical else DIFFERS
    if not outcome.fingerprint_identical:
        outcome.note = "the loop regenerated the fingerprint (the cached one failed its self-check here)"


def _difference(a: Any, b: Any) -> float:
    """|a - b| of two scores: 0 for two missing or two NaN ones, inf when one side is missing, NaN against a number."""
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return math.inf
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(float(a) - float(b))


def report_lines(report: ReproduceReport) -> list[str]:
    """The console table: one line per result file, then the counts."""
    lines = []
    for f in report.files:
        if f.status == IDENTICAL:
            what = f"identical: {f.suspects} suspect scores, the same fingerprint"
        elif f.status == DIFFERS:
            auc = f", AUC {f.auc_diff:+.4f}" if f.auc_diff is not None else ""
            what = f"DIFFERS: {f.differing} of {f.suspects} suspects, max |Δ score| {f.max_abs_diff:.4g}{auc}"
        else:
            what = f"not re-scored: {f.note}"
        lines.append(f"  {f.path}  {f.method} (seed {f.seed}): {what}")
    counts = report.counts()
    lines.append(f"{counts[IDENTICAL]} identical, {counts[DIFFERS]} differ, {counts[NOT_RESCORED]} not re-scored "
                 f"({report.seconds:.0f} s on {report.hardware.get('cpu') or 'this machine'})")
    return lines


def write_report(report: ReproduceReport, path: str | os.PathLike) -> Path:
    """The report as JSON at `path` (atomically); paths in it are relative to the results tree."""
    atomic_write_json(path, report.to_json())
    return Path(path)
