"""Benchmark: the same zoo built by yesterday's default path and today's, in one run (issue "Zoo throughput", item 4).

Builds the recipe's zoo (the quickstart's by default) from scratch three times, each in its own
`python -m bench zoo` subprocess and folder:

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
from bench.perf.base import BENCHMARKS, PerfRun, usable_cpus
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
    try:
        for name, overrides in PATHS.items():
            command = [sys.executable, "-m", "bench", "-q", "zoo", s.recipe, *run.overrides, *scratch_paths(work / name),
                       *overrides]
            measured = run_measured(command, work / name / "build.log", s.timeout_s)
            if measured["returncode"] != 0:
                out["errors"][name] = f"exit code {measured['returncode']}"
            accuracies[name] = _accuracies(work / name / "zoo")
            out["paths"][name] = _path_figures(measured, accuracies[name], out)
    finally:
        if not s.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    threads = int(cfg.compute.cpu_threads or torch.get_num_threads())
    out["matmul_job_threads"] = _matmul_gflops(3, threads)
    out["matmul_all_cores"] = _matmul_gflops(3, usable_cpus())
    out["speedup"] = {name: out["paths"]["before"]["wall_seconds"] / out["paths"][name]["wall_seconds"]
                      for name in PATHS}
    out["accuracy"] = accuracy_figures(plan.jobs, accuracies)
    return out


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
