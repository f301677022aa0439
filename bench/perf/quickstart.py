"""Benchmark (d): `fpbench run <perf.recipe>` from scratch (zoo + every method) in a subprocess."""

from __future__ import annotations

import shutil
import sys
from typing import Any

from bench.perf.base import BENCHMARKS, PerfRun, in_default_run
from bench.perf.processes import run_measured, scratch_paths, workdir

TARGET_QUICKSTART_S = 600.0  # the quickstart (zoo + all methods) in 10 minutes on 2 CPU cores


@in_default_run(50)
@BENCHMARKS.register("quickstart")
def quickstart(run: PerfRun) -> dict[str, Any]:
    """`fpbench run <perf.recipe>` from scratch (zoo + every method) in a subprocess: wall time and peak memory."""
    work = workdir("quickstart")
    try:
        command = [sys.executable, "-m", "bench", "run", run.settings.recipe, *run.overrides, *scratch_paths(work)]
        out = run_measured(command, work / "run.log", run.settings.timeout_s)
    finally:
        if not run.settings.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    out.update(target_seconds=TARGET_QUICKSTART_S, within_target=out["wall_seconds"] <= TARGET_QUICKSTART_S,
               workdir=str(work) if run.settings.keep_workdir else None)
    if out["returncode"] != 0:
        out["errors"] = {"run": f"exit code {out['returncode']}" + (" (timed out)" if out["timed_out"] else "")}
    return out
