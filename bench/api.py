"""The Python API: the few calls a script needs, the same functions the command line uses.

    import bench
    cfg = bench.load_recipe("recipes/smoke.yaml", ["paths.zoo_dir=/tmp/zoo"])
    zoo = bench.build_zoo(cfg)                                # train (or reuse) the zoo
    fp = bench.fingerprint("akh", cfg, zoo=zoo)               # fingerprint the zoo's source
    print(bench.verify(fp, suspect_model)["score"])           # score one suspect model
    results, scores = bench.benchmark(cfg)                    # the whole benchmark + a per-suspect DataFrame

docs/byo.md ("Python API") lists every call; docs/examples/digits_end_to_end.py runs them on digits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig
from torch import nn

from bench import API
from bench.config import load_recipe
from bench.evaluate import instantiate, load_pools, method_pool_specs, resolve_device, run_benchmark
from bench.fingerprint_import import build_imported, write_imported
from bench.methods.base import Fingerprint, FingerprintMethod, GenerationContext
from bench.oracle import Oracle
from bench.report.variants import variant_label
from bench.verification import DEFAULT_FPR, LoadedFingerprint, load_fingerprint, score_suspect
from bench.zoo.build import BuildReport, recipe_threads
from bench.zoo.build import build_zoo as _build_zoo
from bench.zoo.jobs import setup_datamodule
from datamodules import build_datamodule

__all__ = list(API)  # the names `bench` exposes lazily (bench/__init__.py)

SCORE_COLUMNS = ("method", "variant", "config_sha256", "model_id", "role", "group", "attack", "kind", "score",
                 "queries", "result")


def build_zoo(cfg: DictConfig, progress: bool = False) -> BuildReport:
    """Build (or reuse) the recipe's zoo, with the defender pools its methods ask for.

    Args:
        cfg: a recipe from `load_recipe`.
        progress: show progress bars.

    Returns:
        The `BuildReport`: `.plan` (source, positives, negatives, pools), `.store` (models on disk,
        `.store.load_model(id)`), `.datamodule`.
    """
    with recipe_threads(cfg):
        return _build_zoo(cfg, method_pool_specs(cfg), progress=progress)


def _method(method: str | dict[str, Any] | FingerprintMethod) -> tuple[FingerprintMethod, dict[str, Any]]:
    if isinstance(method, FingerprintMethod):
        return method, {"name": method.name, **method.config_dict()}
    entry = {"name": method} if isinstance(method, str) else dict(method)
    return instantiate(entry), entry


def fingerprint(method: str | dict[str, Any] | FingerprintMethod, cfg: DictConfig, source: nn.Module | None = None,
                seed: int | None = None, zoo: BuildReport | None = None, progress: bool = False) -> Fingerprint:
    """Generate one fingerprint of a source model (not cached; `Fingerprint.save(folder)` keeps it).

    Args:
        method: a registered name ("akh"), an entry (`{"name": "adv_tra", "n_fingerprints": 10}`) or a method.
        cfg: the recipe: its data gives the owner's samples, its `eval.device` the device.
        source: the white-box source model; None: the zoo's source (`zoo` required).
        seed: the fingerprint seed; None: the recipe's `seed`.
        zoo: the built zoo; needed for `source=None` and for methods with defender pools (CAE, UAP).
        progress: show progress bars.

    Raises:
        ValueError: neither `source` nor `zoo`, or a pooled method without `zoo`.
    """
    runner, _ = _method(method)
    if source is None and zoo is None:
        raise ValueError("fingerprint() needs the source model: pass source=model, or zoo=build_zoo(cfg) to use its source.")
    if runner.pool_spec() is not None and zoo is None:
        raise ValueError(f"{runner.name} needs defender pools from the zoo: pass zoo=build_zoo(cfg).")
    device = resolve_device(cfg.eval.device)
    datamodule = zoo.datamodule if zoo is not None and zoo.datamodule is not None else setup_datamodule(cfg)
    if source is None:
        assert zoo is not None  # one of the two, checked above
        source = zoo.store.load_model(zoo.plan.source.model_id)
    source = source.to(device)
    ctx = GenerationContext(datamodule=datamodule, seed=int(cfg.seed if seed is None else seed), device=device,
                            num_classes=datamodule.num_classes, progress=progress)
    with recipe_threads(cfg):
        ctx.pools = load_pools(runner, cfg, zoo, device) if zoo is not None else None
        return runner.generate(source, ctx)


def verify(fp: Fingerprint | LoadedFingerprint | str | os.PathLike, suspect: nn.Module | Oracle,
           method: str | dict[str, Any] | FingerprintMethod | None = None, fpr: float = DEFAULT_FPR,
           cache_dir: str | os.PathLike = ".cache/fpbench", batch_size: int = 1024) -> dict[str, Any]:
    """Score one suspect with a fingerprint; decide at the calibrated threshold when a result supplies one.

    Args:
        fp: a `Fingerprint`, a result JSON path (its cached fingerprint, config and negatives), or a
            cached fingerprint folder.
        suspect: a model, or an `Oracle` (its query count goes on from where it is).
        method: the scoring method's name/entry/instance; None: the result's config, else the
            fingerprint's method at its defaults.
        fpr: the FPR target of the calibrated threshold (`bench.verification.calibrated_threshold`).
        cache_dir: where a result's fingerprint is cached (the run's `paths.cache_dir`).
        batch_size: largest query batch.

    Returns:
        `{"method", "score", "figures", "queries", "threshold", "decision"}`: `decision` is "derived" or
        "independent" (None without a result), `threshold` the calibration record (n_negative, fpr_target, ...).
    """
    loaded: LoadedFingerprint | None = None
    if isinstance(fp, Fingerprint):
        fingerprint_ = fp
    else:
        loaded = fp if isinstance(fp, LoadedFingerprint) else load_fingerprint(fp, cache_dir)
        fingerprint_ = loaded.fingerprint
    if method is not None or loaded is None:
        runner, _ = _method(method if method is not None else fingerprint_.method)
    else:
        runner = loaded.method
    oracle = suspect if isinstance(suspect, Oracle) else Oracle(suspect, access=runner.access, batch_size=batch_size)
    return score_suspect(runner, fingerprint_, oracle, loaded.result if loaded is not None else None, fpr)


def benchmark(cfg: DictConfig | str | os.PathLike, overrides: list[str] | None = None,
             progress: bool = False) -> tuple[dict[str, dict[str, Any]], pd.DataFrame]:
    """Run the benchmark (`fpbench run` for one trial): zoo, fingerprints, every suspect, result files.

    Named `benchmark`, not `evaluate`: `bench.evaluate` is the loop's module, and a submodule, once
    imported, hides a package attribute of the same name.

    Args:
        cfg: a recipe from `load_recipe`, or a recipe path (then `overrides` apply).
        overrides: key=value overrides for a recipe path.
        progress: show progress bars.

    Returns:
        `(results, scores)`: result dicts by result file path, and one DataFrame row per (result,
        suspect) with columns `SCORE_COLUMNS`.

    Raises:
        RuntimeError: a method failed (the others' results are written; the message names it).
    """
    if not isinstance(cfg, DictConfig):
        cfg = load_recipe(cfg if isinstance(cfg, str) else Path(cfg), overrides)
    outcome = run_benchmark(cfg, progress=progress)
    if outcome.failed:
        raise RuntimeError(f"methods failed: {outcome.failed}; results written: {list(outcome.results)}")
    return outcome.results, scores_frame(outcome.results)


def scores_frame(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (result, suspect): method, its variant label, config hash, suspect, role, group, score, queries."""
    rows = []
    for path, result in results.items():
        name, config = result["method"]["name"], result["method"].get("config") or {}
        variant = variant_label(name, config, result["config_sha256"][:8])
        for record in result["per_model"]:
            rows.append({"method": name, "variant": variant, "config_sha256": result["config_sha256"],
                         **{k: record.get(k) for k in ("model_id", "role", "group", "attack", "kind", "score",
                                                       "queries")}, "result": path})
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def import_fingerprint(cfg: DictConfig, method: str, inputs: str | os.PathLike,
                       labels: str | os.PathLike) -> tuple[str, Path]:
    """Check external arrays against the method's format and the recipe's data; store them in the cache.

    Returns:
        `(import_id, folder)`: score it with the method entry `{name: <method>, fingerprint: <import_id>}`.

    Raises:
        bench.fingerprint_import.FingerprintImportError: a bad file or array (nothing is written).
    """
    dm = build_datamodule(cfg.data, data_dir=cfg.paths.data_dir, seed=cfg.zoo.split_seed)  # attributes only
    import_id, fp = build_imported(method, inputs, labels, (dm.in_channels, dm.image_size, dm.image_size),
                                   int(dm.num_classes))
    return import_id, write_imported(cfg.paths.cache_dir, import_id, fp)
