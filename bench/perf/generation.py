"""Benchmark (b): fingerprints/s and gradient evaluations of every method's `generate` on the perf zoo's source."""

from __future__ import annotations

from typing import Any

from bench.perf.base import BENCHMARKS, PerfRun, in_default_run
from bench.perf.perf_zoo import fingerprint_count, generate, perf_zoo
from bench.zoo.build import recipe_threads


@in_default_run(20)
@BENCHMARKS.register("generation")
def generation(run: PerfRun) -> dict[str, Any]:
    """Fingerprints/s and gradient evaluations of every method's `generate` on the perf zoo's source."""
    zoo = perf_zoo(run)
    with recipe_threads(zoo["cfg"]) as threads:  # as `fpbench run` generates
        return _generation(zoo, threads)


def _generation(zoo: dict[str, Any], threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {"zoo": zoo["cfg"].zoo.name, "zoo_build_seconds": zoo["build_seconds"],
                           "device": str(zoo["device"]), "torch_threads": threads, "methods": {}, "errors": {}}
    for method in zoo["methods"]:
        try:
            fingerprint, seconds = generate(method, zoo)
        except Exception as err:
            out["errors"][method.name] = f"{type(err).__name__}: {err}"
            continue
        count, grads = fingerprint_count(fingerprint), fingerprint.meta.get("gradient_evaluations")
        out["methods"][method.name] = {
            "seconds": seconds, "fingerprints": count,
            "fingerprints_per_second": count / seconds if count and seconds > 0 else None,
            "gradient_evaluations": grads,
            "gradient_evaluations_per_second": grads / seconds if grads and seconds > 0 else None,
            "queries_per_suspect": fingerprint.meta.get("queries_per_suspect")}
    return out
