"""Benchmark: training throughput of the zoo's Lightning path against a plain PyTorch loop.

Same model, data, loader, optimizer, schedule and weight layout (`compute.trainer.memory_format`) for
both; the fits are interleaved so that a load change on a busy machine hits both. Registered in
`bench.perf.BENCHMARKS` when `bench.perf` is imported; see `bench.perf.base` for the suite. No timed
assertion anywhere (docs/architecture.md, style rule 10).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from bench.nets import new_model
from bench.perf.base import BENCHMARKS, PerfRun, in_default_run
from bench.training import MEMORY_FORMATS, ClassifierModule, fit
from bench.zoo.build import recipe_threads
from bench.zoo.jobs import setup_datamodule

TARGET_LIGHTNING_RATIO = 1.2  # Lightning's time per epoch within 1.2x the plain loop's


@in_default_run(10)
@BENCHMARKS.register("train_throughput")
def train_throughput(run: PerfRun) -> dict[str, Any]:
    """Images/s of the zoo's Lightning path (`ClassifierModule` + `fit`) vs a plain PyTorch loop, same model and data."""
    s = run.settings
    cfg = run.recipe(f"data.splits.owner={s.train_images}")
    dm, spec = setup_datamodule(cfg), OmegaConf.to_object(cfg.zoo.source)
    trainer_cfg = OmegaConf.to_object(cfg.compute.trainer)
    trainer_cfg.enable_progress_bar = False
    device = _plain_device(trainer_cfg.accelerator)
    root_dir = str(Path(cfg.paths.cache_dir) / "lightning")

    def loader() -> Any:  # the zoo's own loader: same batch size, shuffling and workers for both
        return dm.loader(spec.split, batch_size=spec.batch_size, shuffle=True, train=True, generator_seed=spec.seed)

    def lightning(epochs: int) -> float:
        module = ClassifierModule(new_model(spec.arch, spec.arch_params, dm, spec.seed), spec.optimizer, spec.schedule,
                                  epochs)
        return fit(module, loader(), trainer_cfg, root_dir=root_dir, seed=spec.seed, progress=False)

    def plain(epochs: int) -> float:
        module = ClassifierModule(new_model(spec.arch, spec.arch_params, dm, spec.seed), spec.optimizer, spec.schedule,
                                  epochs)
        module.model.to(memory_format=MEMORY_FORMATS[trainer_cfg.memory_format])  # the layout `fit` trains in
        return plain_fit(module, loader(), epochs, device, spec.seed)

    fits = {"lightning": lightning, "plain": plain}
    timed: dict[str, list[float]] = {kind: [] for kind in fits}
    with recipe_threads(cfg) as threads:  # as a zoo build does, for both loops
        lightning(1), plain(1)  # warm-up: imports, allocator, thread pools
        for _ in range(s.repeats):  # interleaved, so a load change on a busy machine hits both
            for kind, run_fit in fits.items():
                timed[kind].append(run_fit(s.train_epochs))
    images = dm.split_size(spec.split)
    out: dict[str, Any] = {"arch": spec.arch, "dataset": cfg.data.name, "images": images, "epochs": s.train_epochs,
                           "batch_size": spec.batch_size, "repeats": s.repeats, "plain_device": str(device),
                           "precision": trainer_cfg.precision, "torch_threads": threads}
    for kind in fits:
        out[kind] = _epoch_figures(timed[kind], s.train_epochs, images)
    lightning_s, plain_s = out["lightning"], out["plain"]
    out["ratio_time_per_epoch"] = lightning_s["seconds_per_epoch"] / plain_s["seconds_per_epoch"]
    out["ratio_time_per_epoch_median"] = lightning_s["seconds_per_epoch_median"] / plain_s["seconds_per_epoch_median"]
    out["target_ratio"] = TARGET_LIGHTNING_RATIO
    out["within_target"] = out["ratio_time_per_epoch"] <= TARGET_LIGHTNING_RATIO
    return out


def _epoch_figures(seconds: list[float], epochs: int, images: int) -> dict[str, Any]:
    """Time per epoch of an N-epoch fit (the whole fit / N, per-fit overhead included: what a zoo model
    costs), from the best of the repeats (least disturbed by other load) and from their median."""
    per_epoch = min(seconds) / epochs
    return {"seconds": [round(x, 4) for x in seconds], "seconds_per_epoch": per_epoch,
            "seconds_per_epoch_median": statistics.median(seconds) / epochs, "images_per_second": images / per_epoch}


def plain_fit(module: Any, loader: Any, epochs: int, device: torch.device, seed: int) -> float:
    """The baseline: the module's own optimizer and schedule in a hand-written loop; returns wall seconds.

    Per-epoch loss and accuracy are accumulated on the device, as the module's `self.log` does.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = module.model.to(device).train()
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
    loss_sum = torch.zeros((), device=device)
    for _ in range(epochs):
        loss_sum.zero_()
        correct = torch.zeros((), device=device, dtype=torch.long)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == y).sum()
        if scheduler is not None:
            scheduler.step()
    float(loss_sum)  # waits for the device
    model.cpu().eval()
    return time.perf_counter() - start


def _plain_device(accelerator: str) -> torch.device:
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")
