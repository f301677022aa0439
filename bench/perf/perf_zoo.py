"""The perf zoo shared by the `generation` and `verification` benchmarks: the recipe's data and
source, cheap suspects and the methods' defender pools, built once and reused."""

from __future__ import annotations

import time
from typing import Any

from omegaconf import DictConfig

from bench.config import to_dict
from bench.evaluate import instantiate, load_pools, resolve_device
from bench.methods import METHODS, GenerationContext
from bench.perf.base import GUARDS, PerfRun
from bench.zoo.build import build_zoo


def method_entries(run: PerfRun, cfg: DictConfig) -> list[dict[str, Any]]:
    """The methods to time, with the recipe's parameters where it configures them."""
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
    s = run.settings
    base = run.recipe()
    n_positive, n_negative = s.suspects // 2, s.suspects - s.suspects // 2
    negatives = f"[{{kind: SAST, seed: {list(range(1, n_negative + 1))}, epochs: 1}}]" if n_negative else "[]"
    positives = f"[{{attack: ftll, seed: {list(range(n_positive))}, epochs: 1}}]" if n_positive else "[]"
    cfg = run.recipe(f"zoo.name=perf_{base.zoo.name}", f"zoo.source.epochs={s.source_epochs}",
                     f"zoo.negatives={negatives}", f"zoo.positives={positives}")
    methods = [instantiate(entry) for entry in method_entries(run, cfg)]
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


def generate(method: Any, zoo: dict[str, Any]) -> tuple[Any, float]:
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


def fingerprint_count(fingerprint: Any) -> int | None:
    for key in ("n_fingerprints", "n_samples"):
        if isinstance(fingerprint.meta.get(key), int):
            return fingerprint.meta[key]
    inputs = fingerprint.tensors.get("inputs")
    return int(inputs.shape[0]) if inputs is not None else None
