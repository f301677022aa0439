"""Benchmark: how fast the command line answers, each command in a fresh interpreter.

Times `python -c "import torch"` (the floor every command that reads a recipe pays), `--version`,
`--help`, `list methods`, `show <perf.recipe>` and a validation error (`run <perf.recipe>
zoo.source.epochs=abc`), `perf.repeats` times each, interleaved so that a busy spell of the machine
falls on every command alike. Targets (issue 29): `--help` and `--version` under 1 s; a validation
error within 1 s of `import torch`. Which modules a command may import is a test
(`tests/test_cli_imports.py`); this only measures.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

from bench.perf.base import BENCHMARKS, PerfRun, portable_argv

TARGET_QUICK_S = 1.0  # --help and --version
TARGET_ERROR_OVER_TORCH_S = 1.0  # a validation error, beyond the median `import torch`
WARMUP_RUNS = 1  # untimed runs of each command first: the first reads torch's files from disk


def commands(recipe: str) -> dict[str, tuple[list[str], int]]:
    """Name -> (command, the exit code it must end with)."""
    fpbench = [sys.executable, "-m", "bench"]
    return {"import_torch": ([sys.executable, "-c", "import torch"], 0),
            "version": ([*fpbench, "--version"], 0),
            "help": ([*fpbench, "--help"], 0),
            "list_methods": ([*fpbench, "list", "methods"], 0),
            "show": ([*fpbench, "show", recipe], 0),
            "validation_error": ([*fpbench, "run", recipe, "zoo.source.epochs=abc"], 2)}


def _timed(command: list[str], timeout_s: float) -> tuple[float, int]:
    """Wall seconds and exit code of `command` (output discarded)."""
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s, check=False)
    return time.perf_counter() - start, done.returncode


@BENCHMARKS.register("cli_start")
def cli_start(run: PerfRun) -> dict[str, Any]:
    """Seconds from start to exit of `fpbench --version`, `--help`, `list`, `show` and a validation error, in
    fresh interpreters, next to `python -c "import torch"` (median and min of `perf.repeats` runs)."""
    todo = commands(run.settings.recipe)
    repeats = max(int(run.settings.repeats), 1)
    seconds: dict[str, list[float]] = {name: [] for name in todo}
    errors: dict[str, str] = {}
    for round_ in range(WARMUP_RUNS + repeats):
        for name, (command, expected) in todo.items():
            took, code = _timed(command, run.settings.timeout_s)
            if code != expected:
                errors[name] = f"exit code {code}, expected {expected}"
            if round_ >= WARMUP_RUNS:
                seconds[name].append(round(took, 4))
    figures: dict[str, Any] = {name: {"median_s": statistics.median(times), "min_s": min(times), "runs_s": times,
                                      "command": " ".join(portable_argv(["python", *todo[name][0][1:]]))}
                               for name, times in seconds.items()}
    torch_s = figures["import_torch"]["median_s"]
    over_torch = figures["validation_error"]["median_s"] - torch_s
    figures["summary"] = {
        "repeats": repeats, "validation_error_over_import_torch_s": round(over_torch, 4),
        "show_over_import_torch_s": round(figures["show"]["median_s"] - torch_s, 4),
        "quick_within_target": max(figures["help"]["median_s"], figures["version"]["median_s"]) < TARGET_QUICK_S,
        "error_within_target": over_torch < TARGET_ERROR_OVER_TORCH_S,
        "targets_s": {"help_and_version": TARGET_QUICK_S, "validation_error_over_import_torch": TARGET_ERROR_OVER_TORCH_S}}
    if errors:
        figures["errors"] = errors
    return figures
