"""Benchmark (c): suspects/s and queries/s of every method's `measure` over the perf zoo's suspects."""

from __future__ import annotations

import time
from typing import Any

from bench.oracle import Oracle
from bench.perf.base import BENCHMARKS, PerfRun, in_default_run
from bench.perf.perf_zoo import generate, perf_zoo
from bench.zoo.build import recipe_threads


@in_default_run(30)
@BENCHMARKS.register("verification")
def verification(run: PerfRun) -> dict[str, Any]:
    """Suspects/s and queries/s of every method's `measure` over the perf zoo's suspects (loaded once)."""
    zoo = perf_zoo(run)
    with recipe_threads(zoo["cfg"]) as threads:  # as `fpbench run` verifies
        return _verification(zoo, max(run.settings.repeats, 1), threads)


def _verification(zoo: dict[str, Any], rounds: int, threads: int) -> dict[str, Any]:
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
            fingerprint = zoo["fingerprints"].get(method.name) or generate(method, zoo)[0]
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
