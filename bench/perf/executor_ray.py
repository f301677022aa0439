"""Benchmark (e): the smoke zoo built from scratch with `executor=ray workers=N` vs `local`, in subprocesses."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from bench.perf.base import BENCHMARKS, PerfRun, in_default_run
from bench.perf.processes import run_measured, scratch_paths, workdir
from bench.zoo.store import ZooStore


@in_default_run(60)
@BENCHMARKS.register("executor_ray")
def executor_ray(run: PerfRun) -> dict[str, Any]:
    """The smoke zoo built from scratch with `executor=ray workers=N` vs `local` (subprocesses): the ratio."""
    if importlib.util.find_spec("ray") is None:
        return {"skipped": "Ray is not installed: pip install -e '.[ray]' (in the fpbench checkout)"}
    s, work, out = run.settings, workdir("executor"), {"workers": run.settings.workers, "errors": {}}
    try:
        for executor in ("local", "ray"):
            command = [sys.executable, "-m", "bench", "-q", "zoo", s.smoke_recipe, *s.smoke_overrides,
                       *scratch_paths(work / executor),
                       f"compute.executor={executor}", f"compute.workers={s.workers}"]
            out[executor] = run_measured(command, work / executor / "build.log", s.timeout_s)
            found = re.search(r"already built \(([\d.]+) s\)", "\n".join(out[executor]["log_tail"]))
            out[executor]["build_seconds"] = float(found.group(1)) if found else None  # build_zoo's own time
            if out[executor]["returncode"] != 0:
                out["errors"][executor] = f"exit code {out[executor]['returncode']}"
        records = {e: _manifest(work / e / "zoo") for e in ("local", "ray")}
    finally:
        if not s.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    local_s, ray_s = out["local"]["wall_seconds"], out["ray"]["wall_seconds"]
    common = set(records["local"]) & set(records["ray"])
    out.update(models=len(records["ray"]), same_ids=set(records["local"]) == set(records["ray"]),
               max_test_acc_diff=max((abs(records["local"][i] - records["ray"][i]) for i in common), default=None),
               speedup_ray_vs_local=local_s / ray_s, ratio_ray_to_local_time=ray_s / local_s)
    if out["local"]["build_seconds"] and out["ray"]["build_seconds"]:  # without interpreter start-up
        out["speedup_ray_vs_local_build"] = out["local"]["build_seconds"] / out["ray"]["build_seconds"]
    return out


def _manifest(zoo_dir: Path) -> dict[str, float]:
    """model_id -> test accuracy of the one zoo under `zoo_dir`."""
    out: dict[str, float] = {}
    for manifest in zoo_dir.glob("*/manifest.jsonl"):
        out.update({model_id: r["test_acc"] for model_id, r in ZooStore(manifest.parent).records().items()})
    return out
