"""Performance benchmarks: `fpbench perf [NAME ...] [key=value ...]` or `pytest -m perf`.

Each benchmark writes `<results_dir>/perf/<name>.json`: its figures (rates and ratios, not only
times), the machine (CPUs, torch threads and version, device, load average) and the command.
`perf.<key>=value` overrides set the sizes (`PerfConfig`); every other override goes to the recipe
the benchmarks load (`perf.recipe`, the quickstart). No benchmark asserts a time (STYLE rule 10).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench.config import ConfigError, load_recipe, to_dict
from bench.io import atomic_write_json
from bench.registry import Registry

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
GUARDS = ("random", "oracle_label")  # methods that test the loop; not benchmarked
ORDER = ("train_throughput", "generation", "verification", "adv_tra_batching", "quickstart", "executor_ray")
SCHEMA_VERSION = 1


@dataclass
class PerfConfig:
    """Benchmark sizes, set as `perf.<key>=value`."""

    recipe: str = str(REPO / "recipes" / "quickstart.yaml")  # data, source, methods and the end-to-end run
    smoke_recipe: str = str(REPO / "recipes" / "smoke.yaml")  # the zoo built by executor_ray
    smoke_overrides: list[str] = field(default_factory=list)  # extra overrides of executor_ray's builds
    train_images: int = 4096  # owner images trained on by train_throughput
    train_epochs: int = 3  # epochs of each timed fit
    repeats: int = 3  # train_throughput: timed fits of each kind (best and median reported); verification: rounds
    source_epochs: int = 2  # epochs of the perf zoo's source and pool models
    suspects: int = 8  # verification suspects: fine-tuned positives and SAST negatives, 1 epoch each
    methods: list[str] = field(default_factory=list)  # empty: every registered method except the guards
    workers: int = 2  # compute.workers of executor_ray's Ray build
    timeout_s: int = 3600  # per subprocess run (quickstart, each executor_ray build)
    keep_workdir: bool = False  # keep the temporary zoo and results of quickstart and executor_ray
    adv_tra_threads: list[int] = field(default_factory=list)  # adv_tra_batching: torch threads to measure at; []: all cores


@dataclass
class PerfRun:
    """One `run_perf` call: settings, recipe overrides, and what benchmarks share (the perf zoo)."""

    settings: PerfConfig
    overrides: list[str]
    results_dir: Path
    shared: dict[str, Any] = field(default_factory=dict)

    def recipe(self, *extra: str) -> DictConfig:
        return load_recipe(self.settings.recipe, [*self.overrides, *extra])


BENCHMARKS: Registry[Callable[[PerfRun], dict[str, Any]]] = Registry("benchmark")


def parse_overrides(overrides: list[str] | None) -> tuple[PerfConfig, list[str]]:
    """Split `perf.<key>=value` (validated against PerfConfig) from the recipe overrides."""
    perf_items, recipe_items = [], []
    for item in overrides or []:
        item = item[2:] if item.startswith("--") else item
        (perf_items if item.startswith("perf.") else recipe_items).append(item)
    schema = OmegaConf.structured(PerfConfig)
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist([i[len("perf."):] for i in perf_items]))
    except OmegaConfBaseException as err:
        valid = ", ".join(f"perf.{f.name}" for f in dataclasses.fields(PerfConfig))
        raise ConfigError(f"Bad benchmark setting in {perf_items}: {str(err).splitlines()[0]}. Valid: {valid}.") from None
    return OmegaConf.to_object(merged), recipe_items


def run_perf(names: list[str] | None, results_dir: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Path]:
    """Run the named benchmarks (default: all, in `ORDER`); write `<results_dir>/perf/<name>.json` each.

    Returns name -> JSON path. A benchmark that fails is written with status "failed" and its error;
    the others still run, then RuntimeError names the failures.

    Raises:
        ConfigError / RegistryError: a bad `perf.` setting or benchmark name (before any work).
    """
    given = list(names or [])  # argparse puts every positional in `names`: key=value items are overrides
    overrides = [*(n for n in given if "=" in n), *(overrides or [])]
    settings, recipe_overrides = parse_overrides(overrides)
    selected = [n for n in given if "=" not in n] or list(ORDER)
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


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPUs, threads, versions, device and how busy the machine was."""
    import pytorch_lightning as pl

    return {"cpu_count": os.cpu_count(), "cpus_usable": usable_cpus(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# -- (b) generation and (c) verification on the perf zoo -----------------------------------------
def _method_entries(run: PerfRun, cfg: DictConfig) -> list[dict[str, Any]]:
    """The methods to time, with the recipe's parameters where it configures them."""
    from bench.methods import METHODS

    names = run.settings.methods or [n for n in METHODS.names() if n not in GUARDS]
    configured = {entry["name"]: entry for entry in to_dict(cfg)["methods"]}
    for name in names:
        METHODS.get(name)
    return [configured.get(name, {"name": name}) for name in names]


def perf_zoo(run: PerfRun) -> dict[str, Any]:
    """`perf_<zoo.name>`: the recipe's data and source (trained `source_epochs`), cheap suspects and the
    methods' defender pools; built once under `paths.zoo_dir` and reused by later runs."""
    if "zoo" in run.shared:
        return run.shared["zoo"]
    from bench.evaluate import instantiate, resolve_device
    from bench.zoo.build import build_zoo

    s = run.settings
    base = run.recipe()
    n_positive, n_negative = s.suspects // 2, s.suspects - s.suspects // 2
    negatives = f"[{{kind: SAST, seed: {list(range(1, n_negative + 1))}, epochs: 1}}]" if n_negative else "[]"
    positives = f"[{{attack: ftll, seed: {list(range(n_positive))}, epochs: 1}}]" if n_positive else "[]"
    cfg = run.recipe(f"zoo.name=perf_{base.zoo.name}", f"zoo.source.epochs={s.source_epochs}",
                     f"zoo.negatives={negatives}", f"zoo.positives={positives}")
    methods = [instantiate(entry) for entry in _method_entries(run, cfg)]
    pool_specs = [spec for spec in (m.pool_spec() for m in methods) if spec is not None]
    start = time.perf_counter()
    report = build_zoo(cfg, pool_specs, progress=False)
    if report.failed:
        raise RuntimeError(f"perf zoo models failed: {report.failed}")
    device = resolve_device(cfg.eval.device)
    source = report.store.load_model(report.plan.source.model_id).to(device)
    run.shared["zoo"] = {"cfg": cfg, "report": report, "methods": methods, "device": device, "source": source,
                         "build_seconds": time.perf_counter() - start, "fingerprints": {}, "failed": {}}
    return run.shared["zoo"]


def _generate(method: Any, zoo: dict[str, Any]) -> tuple[Any, float]:
    from bench.evaluate import load_pools
    from bench.methods import GenerationContext

    dm = zoo["report"].datamodule
    pools = load_pools(method, zoo["cfg"], zoo["report"], zoo["device"])
    ctx = GenerationContext(datamodule=dm, seed=zoo["cfg"].seed, device=zoo["device"], num_classes=dm.num_classes,
                            pools=pools, progress=False)
    start = time.perf_counter()
    try:
        fingerprint = method.generate(zoo["source"], ctx)
    except Exception as err:  # remembered, so verification does not try again
        zoo["failed"][method.name] = f"{type(err).__name__}: {err}"
        raise
    seconds = time.perf_counter() - start
    zoo["fingerprints"][method.name] = fingerprint
    return fingerprint, seconds


def _count(fingerprint: Any) -> int | None:
    for key in ("n_fingerprints", "n_samples"):
        if isinstance(fingerprint.meta.get(key), int):
            return fingerprint.meta[key]
    inputs = fingerprint.tensors.get("inputs")
    return int(inputs.shape[0]) if inputs is not None else None


@BENCHMARKS.register("generation")
def generation(run: PerfRun) -> dict[str, Any]:
    """Fingerprints/s and gradient evaluations of every method's `generate` on the perf zoo's source."""
    from bench.zoo.build import recipe_threads

    zoo = perf_zoo(run)
    with recipe_threads(zoo["cfg"]) as threads:  # as `fpbench run` generates
        return _generation(zoo, threads)


def _generation(zoo: dict[str, Any], threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {"zoo": zoo["cfg"].zoo.name, "zoo_build_seconds": zoo["build_seconds"],
                           "device": str(zoo["device"]), "torch_threads": threads, "methods": {}, "errors": {}}
    for method in zoo["methods"]:
        try:
            fingerprint, seconds = _generate(method, zoo)
        except Exception as err:
            out["errors"][method.name] = f"{type(err).__name__}: {err}"
            continue
        count, grads = _count(fingerprint), fingerprint.meta.get("gradient_evaluations")
        out["methods"][method.name] = {
            "seconds": seconds, "fingerprints": count,
            "fingerprints_per_second": count / seconds if count and seconds > 0 else None,
            "gradient_evaluations": grads,
            "gradient_evaluations_per_second": grads / seconds if grads and seconds > 0 else None,
            "queries_per_suspect": fingerprint.meta.get("queries_per_suspect")}
    return out


@BENCHMARKS.register("verification")
def verification(run: PerfRun) -> dict[str, Any]:
    """Suspects/s and queries/s of every method's `measure` over the perf zoo's suspects (loaded once)."""
    from bench.zoo.build import recipe_threads

    zoo = perf_zoo(run)
    with recipe_threads(zoo["cfg"]) as threads:  # as `fpbench run` verifies
        return _verification(zoo, max(run.settings.repeats, 1), threads)


def _verification(zoo: dict[str, Any], rounds: int, threads: int) -> dict[str, Any]:
    import bench.methods  # noqa: F401  (before bench.oracle: importing bench.oracle first is circular)
    from bench.oracle import Oracle

    report, batch_size = zoo["report"], zoo["cfg"].eval.query_batch_size
    suspects = [report.store.load_model(job.model_id).to(zoo["device"]) for job in report.plan.by_role("positive", "negative")]
    out: dict[str, Any] = {"zoo": zoo["cfg"].zoo.name, "device": str(zoo["device"]), "torch_threads": threads,
                           "suspects": len(suspects), "rounds": rounds,
                           "query_batch_size": batch_size, "methods": {}, "errors": {}}
    for method in zoo["methods"]:
        if method.name in zoo["failed"]:
            out["errors"][method.name] = f"generation failed: {zoo['failed'][method.name]}"
            continue
        try:
            fingerprint = zoo["fingerprints"].get(method.name) or _generate(method, zoo)[0]
            queries, start = 0, time.perf_counter()
            for _ in range(rounds):
                for model in suspects:
                    oracle = Oracle(model, access=method.access, batch_size=batch_size)
                    method.measure(fingerprint, oracle)
                    queries += oracle.queries
            seconds = time.perf_counter() - start
        except Exception as err:
            out["errors"][method.name] = f"{type(err).__name__}: {err}"
            continue
        scored = len(suspects) * rounds
        out["methods"][method.name] = {"seconds": seconds, "queries": queries,
                                       "suspects_per_second": scored / seconds if seconds > 0 else None,
                                       "queries_per_second": queries / seconds if seconds > 0 else None,
                                       "queries_per_suspect": queries / max(scored, 1)}
    return out


from bench import perf_adv_tra, perf_subprocess, perf_train  # noqa: E402, F401  (register their benchmarks; they import BENCHMARKS)
