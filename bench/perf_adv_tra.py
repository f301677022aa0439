"""Benchmark: ADV-TRA's batched generation against the same code run one base sample at a time.

Both runs go through `AdvTra.generate`; only `batch_size` differs (None: batched, 1: sequential),
so the ratio measures batching alone. Wired to `pytest -m perf` and `fpbench perf`; no timed
assertion anywhere (STYLE rule 10).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from bench.methods.adv_tra import AdvTra, AdvTraConfig
from bench.methods.base import GenerationContext


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
    batched = _timed_generate(source, ctx, AdvTraConfig(n_fingerprints=n_fingerprints, batch_size=batch_size, **config))
    sequential_count = sequential_fingerprints if sequential_fingerprints is not None else n_fingerprints
    sequential = _timed_generate(source, ctx, AdvTraConfig(n_fingerprints=sequential_count, batch_size=1, **config))
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
