"""Benchmarks run in subprocesses: (d) the quickstart end to end, (e) Ray vs the local executor.

Registered in `bench.perf.BENCHMARKS` when `bench.perf` is imported; see that module for the suite.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.perf import BENCHMARKS, PerfRun, portable_argv

TARGET_QUICKSTART_S = 600.0  # the quickstart (zoo + all methods) in 10 minutes on 2 CPU cores


# -- (d) the quickstart end to end and (e) Ray vs local, each in a subprocess ---------------------
def run_measured(command: list[str], log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run `command` (output to `log_path`); wall seconds, peak RSS (MB) of its largest process, exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        timed_out = False
        while True:  # os.wait4 gives this child's own rusage (getrusage would mix in earlier children)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout_s:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    tail = log_path.read_text(errors="replace").splitlines()[-25:]
    return {"wall_seconds": seconds, "peak_rss_mb": usage.ru_maxrss / scale, "returncode": proc.returncode,
            "timed_out": timed_out, "command": portable_command(command, log_path.parent), "log_tail": tail}


def portable_command(command: list[str], workdir: Path) -> str:
    """The command as recorded: `python` for this interpreter, repository paths relative, the temporary
    work folder as `<workdir>` (records never hold this machine's paths)."""
    words = ["python" if word == sys.executable else word.replace(str(workdir), "<workdir>") for word in command]
    return " ".join(portable_argv(["python", *words[1:]]))


def _workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"fpbench-perf-{name}-"))


def _paths(root: Path) -> list[str]:
    return [f"paths.zoo_dir={root / 'zoo'}", f"paths.results_dir={root / 'results'}", f"paths.cache_dir={root / 'cache'}",
            "compute.trainer.enable_progress_bar=false", "eval.progress=false"]


@BENCHMARKS.register("quickstart")
def quickstart(run: PerfRun) -> dict[str, Any]:
    """`fpbench run <perf.recipe>` from scratch (zoo + every method) in a subprocess: wall time and peak memory."""
    work = _workdir("quickstart")
    try:
        command = [sys.executable, "-m", "bench", "run", run.settings.recipe, *run.overrides, *_paths(work)]
        out = run_measured(command, work / "run.log", run.settings.timeout_s)
    finally:
        if not run.settings.keep_workdir:
            shutil.rmtree(work, ignore_errors=True)
    out.update(target_seconds=TARGET_QUICKSTART_S, within_target=out["wall_seconds"] <= TARGET_QUICKSTART_S,
               workdir=str(work) if run.settings.keep_workdir else None)
    if out["returncode"] != 0:
        out["errors"] = {"run": f"exit code {out['returncode']}" + (" (timed out)" if out["timed_out"] else "")}
    return out


@BENCHMARKS.register("executor_ray")
def executor_ray(run: PerfRun) -> dict[str, Any]:
    """The smoke zoo built from scratch with `executor=ray workers=N` vs `local` (subprocesses): the ratio."""
    if importlib.util.find_spec("ray") is None:
        return {"skipped": "Ray is not installed: pip install 'fpbench[ray]'"}
    s, work, out = run.settings, _workdir("executor"), {"workers": run.settings.workers, "errors": {}}
    try:
        for executor in ("local", "ray"):
            command = [sys.executable, "-m", "bench", "-q", "zoo", s.smoke_recipe, *s.smoke_overrides, *_paths(work / executor),
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
    from bench.zoo.store import ZooStore

    out: dict[str, float] = {}
    for manifest in zoo_dir.glob("*/manifest.jsonl"):
        out.update({model_id: r["test_acc"] for model_id, r in ZooStore(manifest.parent).records().items()})
    return out
