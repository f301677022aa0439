"""The benchmark suite's machinery: settings (`PerfConfig`), the registry `BENCHMARKS`, `run_perf`
and the JSON record each benchmark writes (`<results_dir>/perf/<name>.json`).

Each benchmark is a module of `bench.perf` that registers one function here; importing
`bench.perf` imports them all (`import_submodules`), so the registry is complete. A benchmark that
`fpbench perf` runs with no names says so itself, with its position: `@in_default_run(<position>)`.
No benchmark asserts a time (docs/architecture.md, style rule 10).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench.config import ConfigError, load_recipe
from bench.entry_config import build_config
from bench.io import atomic_write_json
from bench.provenance import usable_cpus
from bench.registry import Registry

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]  # the repository: bench/perf/base.py -> ../../..
GUARDS = ("random", "oracle_label")  # methods that test the loop; not benchmarked
SCHEMA_VERSION = 1


@dataclass
class PerfConfig:
    """Benchmark sizes, set as `perf.<key>=value`."""

    recipe: str = str(REPO / "recipes" / "quickstart.yaml")  # data, source, methods and the end-to-end run
    smoke_recipe: str = str(REPO / "recipes" / "smoke.yaml")  # the zoo built by executor_ray
    smoke_overrides: list[str] = field(default_factory=list)  # extra overrides of executor_ray's builds
    train_images: int = 4096  # owner images trained on by train_throughput
    train_epochs: int = 3  # epochs of each timed fit
    repeats: int = 3  # train_throughput: timed fits of each kind (best and median reported); verification, zoo_throughput: rounds
    source_epochs: int = 2  # epochs of the perf zoo's source and pool models
    suspects: int = 8  # verification suspects: fine-tuned positives and SAST negatives, 1 epoch each
    methods: list[str] = field(default_factory=list)  # empty: every registered method except the guards
    workers: int = 2  # compute.workers of executor_ray's Ray build
    timeout_s: int = 3600  # per subprocess run (quickstart, each executor_ray build)
    keep_workdir: bool = False  # keep the temporary zoo and results of quickstart and executor_ray
    adv_tra_threads: list[int] = field(default_factory=list)  # adv_tra_batching: torch threads to measure at; []: all cores
    # zoo_throughput: build the `before` path with the code of this git revision (a worktree of this checkout);
    # None: emulate it with overrides
    baseline_ref: str | None = None


@dataclass
class PerfRun:
    """One `run_perf` call: settings, recipe overrides, and what benchmarks share (the perf zoo)."""

    settings: PerfConfig
    overrides: list[str]
    results_dir: Path
    shared: dict[str, Any] = field(default_factory=dict)

    def recipe(self, *extra: str) -> DictConfig:
        return load_recipe(self.settings.recipe, [*self.overrides, *extra])


Benchmark = Callable[[PerfRun], dict[str, Any]]
BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
DEFAULT_RUN_ATTR = "default_run_position"  # set by `in_default_run`; absent: run only when named


def in_default_run(position: int) -> Callable[[Benchmark], Benchmark]:
    """Decorator: `fpbench perf` with no names runs this benchmark, ordered by `position` (ascending).

    A benchmark without it is opt-in: it runs only when named (`fpbench perf <name>`).

    Args:
        position: where it runs in the default order; the built-ins use multiples of 10.
    """
    def mark(benchmark: Benchmark) -> Benchmark:
        setattr(benchmark, DEFAULT_RUN_ATTR, position)
        return benchmark

    return mark


def default_order() -> list[str]:
    """The benchmarks `fpbench perf` runs with no names: those marked `in_default_run`, by position then name."""
    positions = {name: getattr(BENCHMARKS.get(name), DEFAULT_RUN_ATTR, None) for name in BENCHMARKS.names()}
    return sorted((name for name, position in positions.items() if position is not None),
                  key=lambda name: (positions[name], name))


TEXT_SETTINGS = {f.name for f in fields(PerfConfig) if f.type in ("str", "str | None")}  # kept as typed


def parse_overrides(overrides: list[str] | None) -> tuple[PerfConfig, list[str]]:
    """Split `perf.<key>=value` (validated against PerfConfig) from the recipe overrides."""
    perf_items, recipe_items = [], []
    for item in overrides or []:
        item = item[2:] if item.startswith("--") else item
        (perf_items if item.startswith("perf.") else recipe_items).append(item)
    try:
        given = OmegaConf.from_dotlist([i[len("perf."):] for i in perf_items])
    except OmegaConfBaseException as err:
        raise ConfigError(f"Bad benchmark setting in {perf_items}: {str(err).splitlines()[0]}; write perf.<key>=value.") from None
    for key, text in (i[len("perf."):].split("=", 1) for i in perf_items if "=" in i):
        if key in TEXT_SETTINGS and text not in ("null", "~"):  # as typed: YAML reads 0123456 as the octal int 42798
            given[key] = text
    return build_config(PerfConfig, given, where="the benchmark settings (perf.<key>=value)", name="perf"), recipe_items


def run_perf(names: list[str] | None, results_dir: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Path]:
    """Run the named benchmarks (default: `default_order()`); write `<results_dir>/perf/<name>.json` each.

    Returns name -> JSON path. A benchmark that fails is written with status "failed" and its error;
    the others still run, then RuntimeError names the failures.

    Raises:
        ConfigError / RegistryError: a bad `perf.` setting or benchmark name (before any work).
    """
    given = list(names or [])  # argparse puts every positional in `names`: key=value items are overrides
    overrides = [*(n for n in given if "=" in n), *(overrides or [])]
    settings, recipe_overrides = parse_overrides(overrides)
    selected = [n for n in given if "=" not in n] or default_order()
    for name in selected:
        BENCHMARKS.get(name)
    run = PerfRun(settings=settings, overrides=recipe_overrides, results_dir=Path(results_dir))
    paths, failed = {}, []
    for name in selected:
        record = _run_one(name, run, overrides)
        paths[name] = Path(results_dir) / "perf" / f"{name}.json"
        atomic_write_json(paths[name], record)
        log.info("perf %s: %s -> %s", name, record["status"], paths[name])
        if record["status"] == "failed":
            failed.append(f"{name} ({record['error']})")
    if failed:
        raise RuntimeError(f"benchmark(s) failed: {'; '.join(failed)}. Details in {Path(results_dir) / 'perf'}.")
    return paths


def _relative(word: str) -> str:
    """An absolute path inside the repository (alone or as `key=path`) made relative to it; else `word`."""
    key, sep, value = word.rpartition("=") if "=" in word else ("", "", word)
    if not Path(value).is_absolute():
        return word
    try:
        return f"{key}{sep}{Path(value).resolve().relative_to(REPO.resolve()).as_posix()}"
    except ValueError:
        return word


def portable_argv(argv: list[str]) -> list[str]:
    """The command line as recorded: the program by its name, paths inside the repository relative to it."""
    return [Path(argv[0]).name, *map(_relative, argv[1:])] if argv else []


def portable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as recorded: recipe paths relative to the repository."""
    return {k: _relative(v) if k.endswith("recipe") and isinstance(v, str) else v for k, v in settings.items()}


def _run_one(name: str, run: PerfRun, overrides: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "name": name, "status": "ok",
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["fpbench", "perf", name, *overrides]), "argv": portable_argv(sys.argv),
        "settings": portable_settings(dataclasses.asdict(run.settings)), "overrides": run.overrides,
        "machine": machine_info()}
    start = time.perf_counter()
    try:
        figures = BENCHMARKS.get(name)(run)
    except Exception as err:  # recorded; the other benchmarks still run
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        figures = {}
    if figures.get("skipped"):
        record.update(status="skipped", reason=figures.pop("skipped"))
    elif figures.get("errors"):
        record.update(status="failed", error=f"{len(figures['errors'])} part(s) failed: {figures['errors']}")
    record["figures"] = figures
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPUs, threads, versions, device and how busy the machine was."""
    return {"cpu_count": os.cpu_count(), "cpus_usable": usable_cpus(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
