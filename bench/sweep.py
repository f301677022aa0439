"""Sweeps: a grid or random search over any recipe keys, repeated over trial seeds.

A sweep file names a base recipe and the keys to vary. Every (point, trial) becomes one `fpbench run`
with extra overrides, so it writes an ordinary result file; the zoo and cached fingerprints are
reused wherever a point does not change them, a finished point is skipped on rerun, and a failing
point is reported while the others go on.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.builtin_recipes import builtin_sweep, builtin_sweep_names, is_builtin_name
from bench.config import ConfigError, load_recipe
from bench.io import atomic_write_text, inside, name_problem
from bench.report.variants import method_config, variant_label
from bench.results import read_result

log = logging.getLogger(__name__)
SEARCHES = ("grid", "random")


@dataclass
class SweepSpec:
    name: str
    path: Path
    recipe: Path
    parameters: dict[str, Any]
    search: str = "grid"
    n: int = 10  # random search: number of points
    sample_seed: int = 0  # random search: sampling seed
    trials: int = 1  # repeats with fingerprint seeds seed, seed+1, ...
    trial_zoo_seed: bool = False  # also vary zoo.source.seed per trial (a new zoo per trial)
    overrides: list[str] = field(default_factory=list)  # fixed overrides (sweep file, then command line)
    base_seed: int = 0  # the base recipe's trial seed; trial t runs with base_seed + t
    base_source_seed: int = 0  # the base recipe's zoo.source.seed (trial_zoo_seed)

    def points(self) -> list[dict[str, Any]]:
        """The swept values of every point, in a deterministic order."""
        if self.search == "grid":
            keys = list(self.parameters)
            return [dict(zip(keys, combo)) for combo in itertools.product(*(self.parameters[k] for k in keys))]
        rng = random.Random(self.sample_seed)
        return [{k: _sample(v, rng) for k, v in self.parameters.items()} for _ in range(self.n)]


def _sample(space: Any, rng: random.Random) -> Any:
    if isinstance(space, list):
        return rng.choice(space)
    low, high = float(space["min"]), float(space["max"])
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if space.get("log") else rng.uniform(low, high)
    return int(round(value)) if space.get("int") else value


def sweep_file(path: str | Path) -> Path:
    """The file a sweep argument names: a path as given, or a built-in sweep's file for a bare name (no ``/``,
    no ``.yaml`` and no such file here: ``smoke`` -> ``recipes/sweeps/smoke.yaml`` of the installed package).

    Raises:
        ConfigError: no such file, or a bare name that is no built-in sweep (listing the built-in ones).
    """
    if is_builtin_name(path):
        found = builtin_sweep(str(path))
        if found is None:
            raise ConfigError(f"Sweep '{path}' is neither a file nor a built-in sweep. Built-in sweeps: "
                              f"{', '.join(builtin_sweep_names()) or '(none installed)'}. Give one of those names "
                              "(fpbench sweep smoke) or a sweep file's path (fpbench sweep recipes/sweeps/smoke.yaml).")
        return found
    if not Path(path).is_file():
        raise ConfigError(f"Sweep file not found: {path}. Give a sweep file's path, or the name of a built-in sweep: "
                          f"{', '.join(builtin_sweep_names()) or '(none installed)'}.")
    return Path(path)


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and check a sweep file (or a built-in sweep by name); every point's recipe is validated before any work."""
    path = sweep_file(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:  # its message carries the line and column
        raise ConfigError(f"Cannot parse sweep {path}: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Sweep {path} must be a YAML mapping at top level, got a {type(raw).__name__}.")
    known = {"name", "recipe", "parameters", "search", "n", "sample_seed", "trials", "trial_zoo_seed", "overrides"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in sweep {path}. Valid keys: {', '.join(sorted(known))}.")
    for key in ("recipe", "parameters"):
        if key not in raw:
            raise ConfigError(f"Sweep {path} needs '{key}:'.")
    if not isinstance(raw["recipe"], str) or not raw["recipe"]:
        raise ConfigError(f"'recipe:' in sweep {path} must be a recipe path (relative to the sweep file).")
    if not isinstance(raw["parameters"], dict) or not raw["parameters"]:
        raise ConfigError(f"'parameters:' in sweep {path} must be a non-empty mapping of recipe key -> values.")
    if not isinstance(raw.get("overrides", []), list):
        raise ConfigError(f"'overrides:' in sweep {path} must be a list of key=value strings.")
    for key in ("n", "sample_seed", "trials"):
        if key in raw and (isinstance(raw[key], bool) or not isinstance(raw[key], int)):
            raise ConfigError(f"{key}={raw[key]!r} in sweep {path} must be an integer.")
    name = str(raw.get("name", path.stem))
    problem = name_problem(name)
    if problem:
        raise ConfigError(f"Sweep name {name!r} in {path} (key 'name:', or the file name without one) is not a "
                          f"valid folder name: it {problem}. Set a plain 'name:' such as 'my_sweep'.")
    spec = SweepSpec(name=name, path=path, recipe=(path.parent / raw["recipe"]).resolve(),
                     parameters=dict(raw["parameters"]), search=str(raw.get("search", "grid")), n=int(raw.get("n", 10)),
                     sample_seed=int(raw.get("sample_seed", 0)), trials=int(raw.get("trials", 1)),
                     trial_zoo_seed=bool(raw.get("trial_zoo_seed", False)),
                     overrides=[*map(str, raw.get("overrides", [])), *(overrides or [])])
    base = load_recipe(spec.recipe, spec.overrides)
    spec.base_seed, spec.base_source_seed = int(base.seed), int(base.zoo.source.seed)
    if spec.search not in SEARCHES:
        raise ConfigError(f"search='{spec.search}' in {path} is not one of {', '.join(SEARCHES)}.")
    if spec.trials < 1 or spec.n < 1:
        raise ConfigError(f"trials={spec.trials} and n={spec.n} in {path} must be >= 1.")
    for key, values in spec.parameters.items():
        if spec.search == "grid" and (not isinstance(values, list) or not values):
            raise ConfigError(f"Grid parameter '{key}' in {path} needs a non-empty list of values.")
        if isinstance(values, dict) and not {"min", "max"} <= set(values):
            raise ConfigError(f"Random parameter '{key}' in {path} needs a list or {{min, max[, log, int]}}.")
    for point in spec.points():  # cheap: fail on a bad key before any training
        for trial in range(spec.trials):
            load_recipe(spec.recipe, point_overrides(spec, point, trial))
    return spec


def _literal(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def point_overrides(spec: SweepSpec, point: dict[str, Any], trial: int) -> list[str]:
    """Overrides of one (point, trial): fixed ones, the point's values, the trial's seeds, the W&B group."""
    out = [*spec.overrides, *(f"{k}={_literal(v)}" for k, v in point.items()), f"seed={spec.base_seed + trial}",
           f"tracking.wandb.group={spec.name}"]
    if spec.trial_zoo_seed:
        out.append(f"zoo.source.seed={spec.base_source_seed + trial}")
    return out


@dataclass
class SweepOutcome:
    spec: SweepSpec
    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: int = 0
    csv: Path | None = None
    plots: list[Path] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        done = len(self.rows)
        lines = [f"sweep {self.spec.name}: {done} result(s), {self.skipped} already done, {len(self.failed)} failed"]
        lines += [f"  FAILED {f}" for f in self.failed]
        lines.append(f"csv: {self.csv}")
        lines += [f"plot: {p}" for p in self.plots]
        return lines


def run_sweep(spec: SweepSpec, progress: bool = True) -> SweepOutcome:
    """Run every (point, trial) not yet finished; write the sweep CSV and plots."""
    from bench.evaluate import run_benchmark  # optional: heavy (Lightning, the zoo, the methods)
    from bench.report.sweeps import write_sweep_report  # optional: heavy (matplotlib)
    from bench.tracking import log_sweep  # optional: heavy (W&B, Lightning loggers)
    from bench.trial_runs import finished, result_paths  # optional: heavy (imports bench.evaluate)

    outcome = SweepOutcome(spec=spec)
    results_dir = None
    for index, point in enumerate(spec.points()):
        for trial in range(spec.trials):
            cfg = load_recipe(spec.recipe, point_overrides(spec, point, trial))
            results_dir = Path(cfg.paths.results_dir)
            paths = result_paths(cfg)
            label = f"point {index} {point} trial {trial}"
            if finished(paths):
                outcome.skipped += 1
                log.info("%s: already done", label)
            else:
                log.info("%s: running", label)
                try:
                    run_benchmark(cfg, progress=progress)
                except Exception as err:  # a failing point is reported; the sweep goes on
                    log.exception("%s failed", label)
                    outcome.failed.append(f"{label}: {type(err).__name__}: {err}")
                    continue
            for path in paths:
                outcome.rows.append(_row(spec, index, point, trial, path))
    if results_dir is not None and outcome.rows:
        outcome.csv, outcome.plots = write_sweep_report(spec.name, list(spec.parameters), outcome.rows,
                                                        inside(results_dir, "sweeps", spec.name))

        log_sweep(cfg, spec.name, outcome.csv, outcome.plots)
    return outcome


def _row(spec: SweepSpec, index: int, point: dict[str, Any], trial: int, path: Path) -> dict[str, Any]:
    result = read_result(path)
    metrics = result["metrics"]
    name = result["method"]["name"]
    swept = {key.split(".", 2)[2] for key in point if key.startswith(f"methods.{name}.")}
    config = {k: v for k, v in method_config(result).items() if k not in swept}
    row = {"point": index, "trial": trial, "seed": result["seed"], **point, "method": name,
           # what differs from the method's defaults besides the swept keys: two entries of one method in
           # the recipe (e.g. adv_tra and adv_tra[score=agreement]) stay apart in the CSV and the plots
           "variant": variant_label(name, config, result["config_sha256"][:8]),
           "auc": metrics["auc"],
           **{f"tpr@{k}": v for k, v in sorted(metrics["tpr_at_fpr"].items(), key=lambda kv: float(kv[0]))},
           "n_negative": metrics["n_negative"],  # what the TPR columns' labels may claim (docs/statistics.md)
           "queries_per_suspect": result["queries_per_suspect"], "generate_s": result["timing_s"]["generate"],
           "result": str(path)}
    if "trajectory_length" in result.get("fingerprint", {}):
        row["trajectory_length"] = result["fingerprint"]["trajectory_length"]
    if "zoo.deploy" in point:  # a deployment sweep (docs/deployment.md): its label and the positives' utility
        row.update(deployment_row(result))
    return row


def deployment_row(result: dict[str, Any]) -> dict[str, Any]:
    """The deployment a result was measured under (`none` when undeployed) and the suspects' utility:
    mean clean test accuracy through the deployment, of the positives and of the negatives."""
    rows = result["per_model"]
    row: dict[str, Any] = {"zoo.deploy": next((m["deploy"] for m in rows if m.get("deploy")), "none")}
    for role in ("positive", "negative"):
        accuracies = [m.get("test_acc_deployed", m.get("test_acc")) for m in rows if m["role"] == role]
        accuracies = [a for a in accuracies if a is not None]
        row[f"utility_{role}s"] = sum(accuracies) / len(accuracies) if accuracies else None
    return row


def write_wandb_sweep(spec: SweepSpec, path: str | Path) -> Path:
    """A W&B sweep definition whose program is `fpbench run` (agents pass `--key=value`)."""
    if spec.search == "grid":
        parameters = {k: {"values": v} for k, v in spec.parameters.items()}
    else:
        parameters = {k: ({"values": v} if isinstance(v, list) else
                          {"min": v["min"], "max": v["max"], "distribution": "log_uniform_values" if v.get("log") else "uniform"})
                      for k, v in spec.parameters.items()}
    if spec.trials > 1:
        parameters["seed"] = {"values": [spec.base_seed + t for t in range(spec.trials)]}
    definition = {
        "name": spec.name,
        "method": "grid" if spec.search == "grid" else "random",
        "metric": {"name": "auc", "goal": "maximize"},
        "parameters": parameters,
        "command": ["fpbench", "run", str(spec.recipe), *spec.overrides, f"tracking.wandb.group={spec.name}",
                    "tracking.wandb.mode=online", "${args}"],
    }
    out = Path(path)
    atomic_write_text(out, yaml.safe_dump(definition, sort_keys=False))
    return out

