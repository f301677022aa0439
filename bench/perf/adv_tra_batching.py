"""Benchmark: ADV-TRA's batched generation against the same code run one base sample at a time.

Both runs go through `AdvTra.generate`; only `batch_size` differs (None: batched, 1: sequential),
so the ratio measures batching alone. `fpbench perf adv_tra_batching` runs it on the recipe's
source (the quickstart's by default); `pytest -m perf` also runs it on a digits model. No timed
assertion anywhere (docs/architecture.md, style rule 10).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from bench.evaluate import resolve_device
from bench.methods.adv_tra import AdvTra, AdvTraConfig
from bench.methods.base import GenerationContext
from bench.perf.base import BENCHMARKS, PerfRun, in_default_run, usable_cpus
from bench.zoo.build import build_zoo

TARGET_RATIO = 20.0  # issue 5: batched >= 20x the fingerprints/s of one at a time, 100 fingerprints, 2 CPU cores


class TensorSplits:
    """A datamodule stand-in: every split is the given tensors (what GenerationContext needs)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def tensors(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[:limit], self.y[:limit]


def _timed_generate(source: nn.Module, ctx: GenerationContext, config: AdvTraConfig) -> dict[str, Any]:
    started = time.perf_counter()
    fp = AdvTra(config).generate(source, ctx)
    seconds = time.perf_counter() - started
    produced = int(fp.meta["n_fingerprints"])
    return {
        "fingerprints": produced,
        "seconds": seconds,
        "fingerprints_per_second": produced / seconds,
        "candidates_per_second": int(fp.meta["candidates_tried"]) / seconds,
        "success_rate": fp.meta["success_rate"],
        "candidates_tried": fp.meta["candidates_tried"],
        "gradient_evaluations": fp.meta["gradient_evaluations"],
    }


def compare_batched_vs_sequential(
    source: nn.Module,
    x: torch.Tensor,
    n_fingerprints: int,
    *,
    y: torch.Tensor | None = None,
    sequential_fingerprints: int | None = None,
    batch_size: int | None = None,
    num_classes: int | None = None,
    fingerprint_seed: int = 0,
    progress: bool = False,
    batched_repeats: int = 1,
    **config: Any,
) -> dict[str, Any]:
    """Fingerprints per second of batched vs one-at-a-time generation on the same source and data.

    Args:
        source: the source model (its device is used).
        x: owner images [N, C, H, W] in [0,1]; candidates are drawn from their start.
        n_fingerprints: fingerprints requested from the batched run.
        y: true labels of `x` (excluded from the target classes); None: the source's predictions.
        sequential_fingerprints: fingerprints requested from the sequential run (None: the same
            n_fingerprints); a rate is a rate, so a smaller count keeps a slow baseline short.
        num_classes: classes of the task; None: the source's output width.
        fingerprint_seed: the GenerationContext seed.
        progress: show progress bars.
        batched_repeats: batched runs, the first half before the sequential run and the rest after
            it, so that both sample the same stretch of a shared machine's load; the median by time
            is reported (all times are listed, in the order run). The sequential run is done once:
            it is long, and its time is already a sum over candidates.
        batch_size: the batched run's `batch_size` (None: all candidates at once).
        **config: any other `AdvTraConfig` field (not `n_fingerprints`).

    Returns:
        {"batched": {...}, "sequential": {...}, "ratio": batched fps / sequential fps,
        "candidate_ratio": the same per candidate tried, "device", "threads"}; each run records
        fingerprints, seconds, fingerprints_per_second, candidates_per_second, success_rate,
        candidates_tried and gradient_evaluations.
    """
    if "n_fingerprints" in config:
        raise ValueError("compare_batched_vs_sequential takes n_fingerprints (and sequential_fingerprints) as "
                         "arguments, not as config.")
    device = next(source.parameters()).device
    x = x.to(device)
    was_training = source.training
    source.eval()
    try:
        with torch.no_grad():
            logits = torch.cat([source(chunk) for chunk in x.split(1024)])
    finally:
        source.train(was_training)
    labels = y.to(device) if y is not None else logits.argmax(1)
    ctx = GenerationContext(datamodule=TensorSplits(x, labels), seed=fingerprint_seed, device=device,
                            num_classes=int(num_classes or logits.shape[1]), progress=progress)
    repeats = max(batched_repeats, 1)
    batched_config = AdvTraConfig(n_fingerprints=n_fingerprints, batch_size=batch_size, **config)
    runs = [_timed_generate(source, ctx, batched_config) for _ in range((repeats + 1) // 2)]
    sequential_count = sequential_fingerprints if sequential_fingerprints is not None else n_fingerprints
    sequential = _timed_generate(source, ctx, AdvTraConfig(n_fingerprints=sequential_count, batch_size=1, **config))
    runs += [_timed_generate(source, ctx, batched_config) for _ in range(repeats // 2)]
    batched = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    batched["all_seconds"] = [r["seconds"] for r in runs]
    return {
        "batched": batched,
        "sequential": sequential,
        "ratio": batched["fingerprints_per_second"] / sequential["fingerprints_per_second"],
        # per candidate tried: the same ratio without the luck of which candidates succeed, and
        # without the batched run's extra candidates (it advances all of them; sequential stops at N)
        "candidate_ratio": batched["candidates_per_second"] / sequential["candidates_per_second"],
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


@in_default_run(40)
@BENCHMARKS.register("adv_tra_batching")
def adv_tra_batching(run: PerfRun) -> dict[str, Any]:
    """ADV-TRA batched vs one at a time on the recipe's source, with the recipe's adv_tra config.

    The source comes from the recipe's zoo (trained first if that zoo lacks it, and then kept
    there). Both runs request `n_fingerprints` from the same candidates in the same order, so they
    do the same work; `perf.adv_tra_threads` lists the torch thread counts to measure at (empty:
    every usable core). The batched run is repeated `perf.repeats` times (median reported).
    """
    cfg = run.recipe("zoo.positives=[]", "zoo.negatives=[]")
    entries = [dict(entry) for entry in cfg.methods if entry.get("name") == "adv_tra"]
    config = {k: v for k, v in (entries[0] if entries else {}).items() if k not in ("name", "batch_size")}
    n_fingerprints = int(config.pop("n_fingerprints", AdvTraConfig.n_fingerprints))
    threads_before = torch.get_num_threads()  # the loop below sets each thread count measured
    try:
        report = build_zoo(cfg, [], progress=False)
        device = resolve_device(cfg.eval.device)
        source = report.store.load_model(report.plan.source.model_id).to(device)
        probe = AdvTraConfig(n_fingerprints=n_fingerprints, **config)
        x, y = report.datamodule.tensors("owner", probe.owner_pool or probe.candidate_count())
        out: dict[str, Any] = {"source": report.plan.source.model_id, "zoo": cfg.zoo.name, "device": str(device),
                               "n_fingerprints": n_fingerprints, "config": config, "target_ratio": TARGET_RATIO,
                               "runs": []}
        for threads in run.settings.adv_tra_threads or [usable_cpus()]:
            torch.set_num_threads(int(threads))
            out["runs"].append(compare_batched_vs_sequential(
                source, x, n_fingerprints, y=y, num_classes=report.datamodule.num_classes, fingerprint_seed=int(cfg.seed),
                batched_repeats=run.settings.repeats, **config))
    finally:
        torch.set_num_threads(threads_before)
    out["ratio"] = out["runs"][-1]["ratio"]  # at the last thread count (default: all usable cores)
    out["meets_target"] = out["ratio"] >= TARGET_RATIO
    # One sample gains little from threads (and may lose to their overhead): against the fastest
    # one-at-a-time run over the thread counts measured, the pool's advantage is smaller.
    fastest = max(run_["sequential"]["fingerprints_per_second"] for run_ in out["runs"])
    for run_ in out["runs"]:
        run_["ratio_vs_fastest_sequential"] = run_["batched"]["fingerprints_per_second"] / fastest
    return out
