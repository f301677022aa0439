"""Benchmark: the same zoo built by yesterday's default path and today's, in one run (issue "Zoo throughput", item 4).

Builds the recipe's zoo (the quickstart's by default) from scratch by three paths, each in its own
`python -m bench zoo` subprocess and folder, in `perf.repeats` rounds (before, workers, after, then again),
so that a drift of the machine's speed hits every path alike; rates are medians over the rounds,
with each round's own figures and speedup kept:

- `before`: one job at a time in the driver's process, contiguous weights (`compute.workers=1
  compute.trainer.memory_format=contiguous`): what `make quickstart` did before this change; or, with
  `perf.baseline_ref=<git revision>`, the code of that revision with its own defaults (a detached
  `git worktree` of this checkout inside the work folder, first on PYTHONPATH): the code has changed
  in ways overrides cannot undo (training-step logging), so the emulated `before` is faster than the old code;
- `workers`: worker processes on every core (`compute.workers=null`), contiguous weights: the
  processes' share of the gain;
- `after`: worker processes and channels-last weights during fits (`compute.workers=null
  compute.trainer.memory_format=channels_last`): today's default.

and reports models per hour, nominal training images per second and the GFLOP/s they imply
beside a matmul on the same threads, and every model's test accuracy on each path with the
seed-to-seed noise of the zoo itself (models that differ only in their seed); `baseline` says which
`before` was measured. Images are nominal:
epochs x the training split per fit; PGD's extra passes and extraction's labelling are not counted,
so the GFLOP/s figures are lower bounds. No timed assertion (docs/architecture.md, style rule 10).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from bench.builtin_recipes import builtin_recipe, is_builtin_name
from bench.config import ConfigError
from bench.evaluate import method_pool_specs
from bench.nets import new_model
from bench.perf.base import BENCHMARKS, REPO, PerfRun, in_default_run, usable_cpus
from bench.perf.processes import run_measured, scratch_paths, workdir
from bench.perf.zoo_profile import _image_hw, _matmul_gflops, forward_macs
from bench.zoo.build import prepare
from bench.zoo.plan_base import Job
from bench.zoo.store import ZooError, ZooStore
from bench.zoo.tasks import nominal_images

PATHS = {
    "before": ["compute.workers=1", "compute.trainer.memory_format=contiguous"],
    "workers": ["compute.workers=null", "compute.trainer.memory_format=contiguous"],
    "after": ["compute.workers=null", "compute.trainer.memory_format=channels_last"],
}
HOW_OVERRIDES = "overrides: " + " ".join(PATHS["before"])  # how `before` is built without perf.baseline_ref
SEED = re.compile(r"(,?)seed=\d+(,?)")


@dataclass(frozen=True)
class Baseline:
    """The revision whose code builds the `before` path (perf.baseline_ref), checked out in `worktree`."""

    ref: str  # as given
    commit: str  # its full sha
    recipe: str  # the recipe relative to the repository (read from the worktree), or a file outside it as given
    inside_repo: bool  # whether `recipe` is relative to the repository
    worktree: Path  # where the revision is checked out: <work folder>/baseline

    @property
    def how(self) -> str:
        return f"code of {self.commit[:12]}"

    def record(self) -> dict[str, Any]:
        return {"ref": self.ref, "commit": self.commit, "how": self.how}


@in_default_run(80)
@BENCHMARKS.register("zoo_throughput")
def zoo_throughput(run: PerfRun) -> dict[str, Any]:
    """The recipe's zoo built from scratch by the `before`, `workers` and `after` paths: speed and accuracies.

    With `perf.baseline_ref` set, `before` runs the code of that git revision (a worktree of this checkout,
    removed at the end unless `perf.keep_workdir`: then `git worktree remove` it yourself) with its own defaults;
    otherwise the overrides of `PATHS`. `baseline` in the figures says which, as does `paths.before.how`.

    Raises:
        ConfigError: `perf.baseline_ref` is not a commit of this git checkout, or the recipe is not in it (before any work).
    """
    s = run.settings
    found = check_baseline(s.baseline_ref, s.recipe) if s.baseline_ref else None  # cheap checks before any work
    cfg = run.recipe()
    dm, plan, _ = prepare(cfg, method_pool_specs(cfg))  # what `fpbench zoo` builds: the zoo and its pools
    images = {job.model_id: nominal_images(job, dm.split_size) for job in plan.jobs}
    flops = {job.model_id: images[job.model_id] * train_flops_per_image(job, dm) for job in plan.jobs}
    data_dir = str(Path(cfg.paths.data_dir).resolve())  # the baseline runs in its worktree: a relative path would move
    work = workdir("throughput")
    baseline = Baseline(*found, worktree=work / "baseline") if found else None
    out: dict[str, Any] = {"models": len(plan.jobs), "nominal_images": sum(images.values()),
                           "train_flops": sum(flops.values()), "usable_cpus": usable_cpus(),
                           "cpu_threads": cfg.compute.cpu_threads, "paths": {}, "errors": {},
                           "baseline": baseline.record() if baseline else {"ref": None, "how": HOW_OVERRIDES}}
    accuracies: dict[str, dict[str, float]] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PATHS}
    try:
        if baseline:
            add_worktree(baseline.commit, baseline.worktree)
        for repeat in range(max(1, s.repeats)):  # rounds of before, workers, after: a drift hits every path alike
            for name in PATHS:
                folder = work / name / str(repeat)
                command, options = path_command(name, run, folder, baseline, data_dir)
                measured = run_measured(command, folder / "build.log", s.timeout_s, **options)
                if measured["returncode"] != 0:
                    out["errors"][f"{name}[{repeat}]"] = f"exit code {measured['returncode']}"
                built = _built_accuracies(folder / "zoo", plan.jobs, measured["returncode"], f"{name}[{repeat}]", out)
                if repeat == 0:
                    accuracies[name] = built
                elif built != accuracies[name]:  # the same path on the same machine trains the same bytes
                    out["errors"][f"{name}[{repeat}]"] = "test accuracies differ from the first round's"
                runs[name].append(_path_figures(measured, built, out))
                shutil.rmtree(folder / "zoo", ignore_errors=True)  # the next round builds from scratch
    finally:
        if not s.keep_workdir:
            if baseline:
                remove_worktree(baseline.worktree)
            shutil.rmtree(work, ignore_errors=True)
    threads = int(cfg.compute.cpu_threads or torch.get_num_threads())
    out["matmul_job_threads"] = _matmul_gflops(3, threads)
    out["matmul_all_cores"] = _matmul_gflops(3, usable_cpus())
    out["paths"] = {name: _median_figures(path_runs) for name, path_runs in runs.items()}
    out["paths"]["before"]["how"] = out["baseline"]["how"]
    out["speedup"] = {name: out["paths"]["before"]["wall_seconds"] / out["paths"][name]["wall_seconds"]
                      for name in PATHS}
    out["speedup_per_round"] = {name: [b["wall_seconds"] / r["wall_seconds"] for b, r in zip(runs["before"], runs[name])]
                                for name in PATHS}
    out["accuracy"] = accuracy_figures(plan.jobs, accuracies)
    return out


def path_command(name: str, run: PerfRun, folder: Path, baseline: Baseline | None,
                 data_dir: str) -> tuple[list[str], dict[str, Any]]:
    """One path's `python -m bench zoo` command and `run_measured`'s options for it (cwd, env, placeholders).

    The baseline's `before` runs in its worktree, first on PYTHONPATH (ahead of the editable install's finder),
    with the old code's defaults: no `PATHS` overrides, and `paths.data_dir` absolute (it is relative to the cwd).
    """
    if name != "before" or baseline is None:
        return [sys.executable, "-m", "bench", "-q", "zoo", run.settings.recipe, *run.overrides, *scratch_paths(folder),
                *PATHS[name]], {}
    worktree = baseline.worktree
    recipe = str(worktree / baseline.recipe) if baseline.inside_repo else baseline.recipe
    python_path = os.pathsep.join(p for p in (str(worktree), os.environ.get("PYTHONPATH")) if p)
    return ([sys.executable, "-m", "bench", "-q", "zoo", recipe, *run.overrides, f"paths.data_dir={data_dir}",
             *scratch_paths(folder)],
            {"cwd": worktree, "env": {**os.environ, "PYTHONPATH": python_path}, "placeholders": {worktree: "<baseline>"}})


def check_baseline(ref: str, recipe: str, repo: Path = REPO) -> tuple[str, str, str, bool]:
    """`ref` as given, its full commit sha in the git checkout `repo`, and the recipe as the worktree reads it.

    Raises:
        ConfigError: `repo` is not a git checkout, `ref` is not one of its commits, or the recipe is not in it.
    """
    unset = "or leave perf.baseline_ref unset to emulate the old default with overrides"
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != repo.resolve():
        raise ConfigError(f"perf.baseline_ref={ref!r} needs the bench package in a git checkout, and {repo} is not one "
                          f"(an installed package, or no git): run fpbench from a clone of the repository, {unset}.")
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit is None:
        raise ConfigError(f"perf.baseline_ref={ref!r} is not a commit of the checkout {repo}: give a branch, tag or "
                          f"commit it has (git log --oneline; git fetch for one it lacks), {unset}.")
    file = builtin_recipe(recipe) if is_builtin_name(recipe) else None
    path = (file or Path(recipe)).resolve()
    if not path.is_relative_to(repo.resolve()):
        return ref, commit, recipe, False  # a recipe outside the repository: the old code reads it as given
    relative = path.relative_to(repo.resolve()).as_posix()
    if _git(repo, "cat-file", "-e", f"{commit}:{relative}") is None:
        raise ConfigError(f"perf.baseline_ref={ref!r} ({commit[:12]}) has no {relative}, the recipe perf.recipe names: "
                          f"give a revision that has it, or a recipe file outside the repository, {unset}.")
    return ref, commit, relative, True


def add_worktree(commit: str, folder: Path, repo: Path = REPO) -> None:
    """Check `commit` out, detached, in `folder` (a `git worktree` of `repo`)."""
    done = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(folder), commit],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git worktree add {folder} {commit} failed: {done.stderr.strip()}")


def remove_worktree(folder: Path, repo: Path = REPO) -> None:
    """Remove the worktree `folder` and git's record of it (`git worktree remove --force`, then `prune`)."""
    subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(folder)], capture_output=True, check=False)
    subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True, check=False)


def _git(repo: Path, *args: str) -> str | None:
    """`git -C repo <args>`'s output, stripped; None when it fails or git is not installed."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _built_accuracies(zoo_dir: Path, jobs: list[Job], returncode: int, where: str, out: dict[str, Any]) -> dict[str, float]:
    """The built models' test accuracies; an unreadable manifest or model ids other than the plan's go to `out["errors"]`
    (an older revision's code may name its models otherwise: recorded, not raised)."""
    try:
        built = _accuracies(zoo_dir)
    except ZooError as err:  # an older revision's manifest this code cannot read: recorded, the other paths still count
        out["errors"][f"{where} manifest"] = str(err)
        return {}
    planned = {job.model_id for job in jobs}
    missing, extra = sorted(planned - set(built)), sorted(set(built) - planned)
    if extra or (missing and returncode == 0):  # a failed build's missing models are its exit code's error already
        out["errors"][f"{where} model ids"] = (f"{len(missing)} of the plan's not built ({', '.join(missing[:5])}), "
                                               f"{len(extra)} not in the plan ({', '.join(extra[:5])})")
    return built


def _median_figures(path_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One path over its rounds: the median of each rate, and every round's own figures under `runs`."""
    def median(key: str) -> Any:
        values = [r[key] for r in path_runs if r[key] is not None]
        return statistics.median(values) if values else None

    keys = ("wall_seconds", "build_seconds", "models_per_hour", "images_per_second", "gflops", "build_gflops",
            "peak_rss_mb")
    return {**{key: median(key) for key in keys}, "models_built": min(r["models_built"] for r in path_runs),
            "returncode": max((r["returncode"] for r in path_runs), key=abs), "rounds": len(path_runs),
            "command": path_runs[0]["command"], "runs": path_runs}


def train_flops_per_image(job: Job, dm: Any) -> int:
    """Training FLOPs of one image through the job's architecture (3 x forward, 2 FLOPs a MAC; Conv2d and Linear)."""
    params = OmegaConf.to_container(job.arch_params) if OmegaConf.is_config(job.arch_params) else dict(job.arch_params)
    model = new_model(job.arch, params, dm, 0)
    return 6 * forward_macs(model, (dm.in_channels, *_image_hw(dm)))


def _accuracies(zoo_dir: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for manifest in zoo_dir.glob("*/manifest.jsonl"):
        out.update({model_id: r["test_acc"] for model_id, r in ZooStore(manifest.parent).records().items()})
    return out


def _path_figures(measured: dict[str, Any], accuracies: dict[str, float], totals: dict[str, Any]) -> dict[str, Any]:
    found = re.search(r"already built \(([\d.]+) s\)", "\n".join(measured["log_tail"]))
    wall = measured["wall_seconds"]
    build = float(found.group(1)) if found else None
    return {**measured, "models_built": len(accuracies), "build_seconds": build,
            "models_per_hour": len(accuracies) / wall * 3600,
            "images_per_second": totals["nominal_images"] / wall,
            "gflops": totals["train_flops"] / wall / 1e9,
            "build_gflops": totals["train_flops"] / build / 1e9 if build else None}


def accuracy_figures(jobs: list[Job], accuracies: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per-model test accuracies on every path, their differences from `before`, and the seed-to-seed noise."""
    before = accuracies.get("before", {})
    per_model = [{"model_id": job.model_id, "provenance": job.provenance,
                  **{name: accs.get(job.model_id) for name, accs in accuracies.items()}} for job in jobs]
    diffs = {name: [abs(accs[i] - before[i]) for i in accs if i in before] for name, accs in accuracies.items()
             if name != "before"}
    return {"per_model": per_model,
            "abs_diff_from_before": {name: _summary(values) for name, values in diffs.items()},
            "seed_noise": seed_noise(jobs, before)}


def seed_noise(jobs: list[Job], accuracies: dict[str, float]) -> dict[str, Any]:
    """|accuracy difference| between models of the zoo that differ only in their seed (same recipe otherwise)."""
    groups: dict[str, list[float]] = {}
    for job in jobs:
        if job.model_id in accuracies:
            recipe = SEED.sub(lambda m: "," if m.group(1) and m.group(2) else "", job.provenance)
            groups.setdefault(recipe, []).append(accuracies[job.model_id])
    pairs = [abs(a - b) for accs in groups.values() for a, b in itertools.combinations(accs, 2)]
    return {"groups": sum(len(accs) > 1 for accs in groups.values()), **_summary(pairs)}


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "max": None}
    return {"n": len(values), "mean": statistics.fmean(values), "median": statistics.median(values), "max": max(values)}
