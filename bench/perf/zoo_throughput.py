"""Benchmark: the same zoo built by yesterday's default path and today's, in one run (issue "Zoo throughput", item 4).

Builds the recipe's zoo (the quickstart's by default) from scratch by three paths, each in its own
`python -m bench zoo` subprocess and folder, in `perf.repeats` rounds (before, workers, after, then again),
so that a drift of the machine's speed hits every path alike; rates are medians over the rounds,
with each round's own figures and speedup kept:

- `before`: one job at a time in the driver's process, contiguous weights (`compute.workers=1
  compute.trainer.memory_format=contiguous`): what `make quickstart` did before this change;
- `workers`: worker processes on every core (`compute.workers=null`), contiguous weights: the
  processes' share of the gain;
- `after`: worker processes and channels-last weights during fits (`compute.workers=null
  compute.trainer.memory_format=channels_last`): today's default.

and reports models per hour, nominal training images per second and the GFLOP/s they imply
beside a matmul on the same threads, and every model's test accuracy on each path with the
seed-to-seed noise of the zoo itself (models that differ only in their seed). Images are nominal:
epochs x the training split per fit; PGD's extra passes and extraction's labelling are not counted,
so the GFLOP/s figures are lower bounds. No timed assertion (docs/architecture.md, style rule 10).
"""

from __future__ import annotations

import itertools
import re
import shutil
import statistics
import sys
from typing import Any

import torch
from omegaconf import OmegaConf

from bench.evaluate import method_pool_specs
from bench.nets import new_model
from bench.perf.base import BENCHMARKS, PerfRun, in_default_run, usable_cpus
from bench.perf.processes import run_measured, scratch_paths, workdir
from bench.perf.zoo_profile import _image_hw, _matmul_gflops, forward_macs
from bench.zoo.build import prepare
from bench.zoo.plan_base import Job
from bench.zoo.store import ZooStore
from bench.zoo.tasks import nominal_images

PATHS = {
    "before": ["compute.workers=1", "compute.trainer.memory_format=contiguous"],
    "workers": ["compute.workers=null", "compute.trainer.memory_format=contiguous"],
    "after": ["compute.workers=null", "compute.trainer.memory_format=channels_last"],
}
SEED = re.compile(r"(,?)seed=\d+(,?)")


@in_default_run(80)
@BENCHMARKS.register("zoo_throughput")
def zoo_throughput(run: PerfRun) -> dict[str, Any]:
    """The recipe's zoo built from scratch by the `before`, `workers` and `after` paths: speed and accuracies."""
    s, work = run.settings, workdir("throughput")
    cfg = run.recipe()
    dm, plan, _ = prepare(cfg, method_pool_specs(cfg))  # what `fpbench zoo` builds: the zoo and its pools
    images = {job.model_id: nominal_images(job, dm.split_size) for job in plan.jobs}
    flops = {job.model_id: images[job.model_id] * train_flops_per_image(job, dm) for job in plan.jobs}
    out: dict[str, Any] = {"models": len(plan.jobs), "nominal_images": sum(images.values()),
                           "train_flops": sum(flops.values()), "usable_cpus": usable_cpus(),
                           "cpu_threads": cfg.compute.cpu_threads, "paths": {}, "errors": {}}
    accuracies: dict[str, dict[str, float]] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in PATHS}
    try:
        for repeat in range(max(1, s.repeats)):  # rounds of before, workers, after: a drift hits every path alike
            for name, overrides in PATHS.items():
                folder = work / name / str(repeat)
                command = [sys.executable, "-m", "bench", "-q", "zoo", s.recipe, *run.overrides, *scratch_paths(folder),
                           *overrides]
                measured = run_measured(command, folder / "build.log", s.timeout_s)
                if measured["returncode"] != 0:
                    out["errors"][f"{name}[{repeat}]"] = f"exit code {measured['returncode']}"
                built = _accuracies(folder / "zoo")
                if repeat == 0:
                    accuracies[name] = built
                elif built != accuracies[name]:  # the same path on the same machine trains the same bytes
                    out["errors"][f"{name}[{repeat}]"] = "test accuracies differ from the first round's"
                runs[name].append(_path_figures(measured, built, out))
                shutil.rmtree(folder / "zoo", ignore_errors=True)  # the next round builds from scratch
    finally:
        if not s.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    threads = int(cfg.compute.cpu_threads or torch.get_num_threads())
    out["matmul_job_threads"] = _matmul_gflops(3, threads)
    out["matmul_all_cores"] = _matmul_gflops(3, usable_cpus())
    out["paths"] = {name: _median_figures(path_runs) for name, path_runs in runs.items()}
    out["speedup"] = {name: out["paths"]["before"]["wall_seconds"] / out["paths"][name]["wall_seconds"]
                      for name in PATHS}
    out["speedup_per_round"] = {name: [b["wall_seconds"] / r["wall_seconds"] for b, r in zip(runs["before"], runs[name])]
                                for name in PATHS}
    out["accuracy"] = accuracy_figures(plan.jobs, accuracies)
    return out


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
