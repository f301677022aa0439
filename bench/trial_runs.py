"""Running a recipe's trials: `fpbench run` repeats the benchmark `trials.count` times.

Trial t runs the recipe with ``seed + t`` (fingerprint generation) and, with ``trials.new_source``,
``zoo.source.seed + t``: a new source model and new positives, while negatives and defender-pool
references whose recipe does not depend on the source are the same models in every trial (the zoo
builds each model once; docs/recipes.md, "Trials"). Every trial's config is loaded and its zoo
planned before any training, so a recipe error in trial 4 stops the run before trial 0 trains. A
trial whose result files all exist and validate is skipped, so an interrupted run resumes where it
stopped. The wall time of every phase (zoo, each method's generation, verification, report) is
recorded per trial and written to ``<results_dir>/perf/trials-<zoo>.json``.
"""

from __future__ import annotations

import copy
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.config import load_recipe, recipe_sha256, run_config_sha256, to_dict
from bench.evaluate import BenchmarkOutcome, method_pool_specs, run_benchmark
from bench.io import atomic_write_json, inside
from bench.provenance import collect_hardware, usable_cpus
from bench.published import writes_published
from bench.results import ResultError, read_result, result_path
from bench.zoo.jobs import setup_datamodule
from bench.zoo.plan import plan_zoo
from bench.zoo.workers import resolve_workers

log = logging.getLogger(__name__)


def trial_overrides(cfg: DictConfig, trial: int) -> list[str]:
    """The overrides that turn the recipe into its trial ``trial`` (0 is the recipe itself)."""
    out = [f"seed={int(cfg.seed) + trial}"]
    if cfg.trials.new_source:
        out.append(f"zoo.source.seed={int(cfg.zoo.source.seed) + trial}")
    return out


def trial_configs(base: DictConfig, recipe: str | Path, overrides: list[str]) -> list[DictConfig]:
    """Every trial's validated config (``base``: the recipe loaded with ``overrides``, trial 0), each
    zoo planned (cheap: no training) so errors surface first."""
    configs = [base if t == 0 else load_recipe(recipe, [*overrides, *trial_overrides(base, t)])
               for t in range(int(base.trials.count))]  # fmt: skip
    if len(configs) > 1:
        pools, dm = method_pool_specs(base), setup_datamodule(base)  # trials differ in seeds only: data read once
        for cfg in configs:  # ConfigError, e.g. a SAST negative's seed equal to a trial's source seed
            plan_zoo(cfg, dm.split_hashes(), pools)
    return configs


def result_paths(cfg: DictConfig) -> list[Path]:
    """Where a run of ``cfg`` writes one result per method."""
    return [result_path(cfg.paths.results_dir, cfg.zoo.name, m["name"], run_config_sha256(cfg, m), cfg.seed)
            for m in to_dict(cfg)["methods"]]  # fmt: skip


def finished(paths: list[Path]) -> bool:
    """True when every result file exists and validates (a run of that config is complete)."""
    try:
        return all(p.is_file() and read_result(p) for p in paths)
    except ResultError:
        return False


@dataclass
class TrialRun:
    trial: int
    seed: int
    source_seed: int
    skipped: bool = False  # every result of the trial was already there
    outcome: BenchmarkOutcome | None = None
    seconds: float = 0.0

    @property
    def phases(self) -> dict[str, float]:
        return dict(self.outcome.phases) if self.outcome is not None else {}


@dataclass
class TrialsOutcome:
    runs: list[TrialRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(r.outcome is not None and r.outcome.failed for r in self.runs)


def _unfinished(cfg: DictConfig) -> DictConfig | None:
    """``cfg`` with only the methods whose result is missing (None: every result exists)."""
    methods = to_dict(cfg)["methods"]
    todo = [m for m, path in zip(methods, result_paths(cfg)) if not finished([path])]
    if not todo:
        return None
    if len(todo) == len(methods):
        return cfg
    out = copy.deepcopy(cfg)  # keeps the recipe's structured types (a plain copy hands datamodules dicts)
    OmegaConf.set_readonly(out, False)
    out.methods = todo
    OmegaConf.set_readonly(out, True)
    return out


def run_trials(configs: list[DictConfig], progress: bool = True,
               on_trial: Callable[[TrialRun], None] | None = None) -> TrialsOutcome:
    """Run every trial in order; ``on_trial`` sees each one when it is done.

    With more than one trial the run resumes: a (trial, method) whose result file exists and
    validates is not run again, so an interrupted run, or one method added to the recipe later,
    costs only what is missing. A single trial always runs (a rerun re-verifies and rewrites).
    """
    outcome = TrialsOutcome()
    start = time.perf_counter()
    for trial, full in enumerate(configs):
        run = TrialRun(trial, int(full.seed), int(full.zoo.source.seed))
        cfg = _unfinished(full) if len(configs) > 1 else full
        where = f"trial {trial + 1} of {len(configs)} (seed={run.seed}, source seed={run.source_seed})"
        if cfg is None:
            run.skipped = True
            log.info("%s: every result exists; skipped", where)
        else:
            log.info("%s: running %s", where, ", ".join(m["name"] for m in to_dict(cfg)["methods"]))
            t0 = time.perf_counter()
            run.outcome = run_benchmark(cfg, progress=progress)
            run.seconds = time.perf_counter() - t0
        outcome.runs.append(run)
        if on_trial is not None:
            on_trial(run)
    outcome.seconds = time.perf_counter() - start
    return outcome


def timing_record(configs: list[DictConfig], outcome: TrialsOutcome) -> dict[str, Any]:
    """Wall seconds by phase and trial, their totals, and the machine they ran on."""
    per_trial = [{"trial": r.trial, "seed": r.seed, "source_seed": r.source_seed, "skipped": r.skipped,
                  "seconds": round(r.seconds, 3), "models_built": len(r.outcome.zoo.built) if r.outcome else 0,
                  "phases": {k: round(v, 3) for k, v in r.phases.items()}}
                 for r in outcome.runs]  # fmt: skip
    totals: dict[str, float] = {}
    for entry in per_trial:
        for phase, seconds in entry["phases"].items():
            totals[phase] = round(totals.get(phase, 0.0) + seconds, 3)
    cfg = configs[0]
    return {"zoo": str(cfg.zoo.name), "recipe_sha256": recipe_sha256(cfg), "trials": len(configs),
            "new_source": bool(cfg.trials.new_source), "executor": str(cfg.compute.executor),
            "workers": resolve_workers(cfg), "cpu_threads": cfg.compute.cpu_threads,  # the count used (null: automatic)
            "hardware": collect_hardware(), "usable_cpus": usable_cpus(), "python": platform.python_version(),
            "wall_seconds": round(outcome.seconds, 3), "phase_totals": totals, "per_trial": per_trial}  # fmt: skip


def write_timing(cfg: DictConfig, record: dict[str, Any]) -> Path | None:
    """``<results_dir>/perf/trials-<zoo>.json``; in the published folder an existing file is kept
    unless ``paths.overwrite_published`` (a cached rerun must not replace the from-scratch timing)."""
    path = inside(Path(cfg.paths.results_dir), "perf", f"trials-{cfg.zoo.name}.json")
    if path.exists() and writes_published(cfg) and not cfg.paths.overwrite_published:
        log.warning("%s is published and kept (paths.overwrite_published=true replaces it).", path)
        return None
    atomic_write_json(path, record)
    return path


def timing_lines(record: dict[str, Any]) -> list[str]:
    """A table of wall seconds: one row per phase, one column per trial, then the total."""
    trials = record["per_trial"]
    phases = list(dict.fromkeys(p for t in trials for p in t["phases"]))
    width = max([len(p) for p in phases] + [10])
    head = "".join(f" {'trial ' + str(t['trial']):>9}" for t in trials)
    lines = [f"wall seconds by phase ({record['trials']} trial(s), {record['usable_cpus']} usable CPU(s)):",
             f"{'phase':<{width}}{head} {'total':>9}"]
    for phase in phases:
        cells = "".join(f" {t['phases'].get(phase, 0.0):>9.1f}" if not t["skipped"] else f" {'cached':>9}" for t in trials)
        lines.append(f"{phase:<{width}}{cells} {record['phase_totals'].get(phase, 0.0):>9.1f}")
    cells = "".join(f" {t['seconds']:>9.1f}" for t in trials)
    lines.append(f"{'all':<{width}}{cells} {record['wall_seconds']:>9.1f}")
    return lines
