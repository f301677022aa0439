"""Benchmark: where one zoo job's time goes (issue "Zoo throughput", item 1; docs/zoo_throughput.md).

Profiles the recipe's source job (the quickstart's by default: Fashion-MNIST convnet, its epochs,
batch size, optimizer and `compute.cpu_threads`): data loading vs in-memory slicing, forward+backward,
optimizer steps, Lightning's overhead over a plain loop, the evaluation passes and checkpoint write of
`bench.zoo.jobs.finish_record`, process and Ray start-up, and the FLOP rate next to a matmul's.
Quick mode (the test suite) shrinks the job through the recipe: `data.splits.owner=512
data.splits.test=256 zoo.source.epochs=1 perf.repeats=1`. No timed assertion (docs/architecture.md, style rule 10).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from bench.config import ConfigError
from bench.nets import new_model
from bench.perf.base import BENCHMARKS, REPO, PerfRun, in_default_run, usable_cpus
from bench.perf.train_throughput import _plain_device, plain_fit
from bench.training import ClassifierModule, fit
from bench.zoo.build import recipe_threads
from bench.zoo.executors import ray_temp_dir
from bench.zoo.integrity import CHECK_SAMPLES, behaviour_record, model_outputs
from bench.zoo.jobs import setup_datamodule
from bench.zoo.store import ZooStore

MATMUL_SIZE = 2048  # the ceiling: a float32 matmul this size, FLOPs 2 * n^3
STARTUP = {"python": "pass", "import_torch": "import torch", "import_bench_cli": "import bench.cli"}
RAY_STARTUP = ("import time, sys, ray; t = time.perf_counter(); ray.init(num_cpus=1, include_dashboard=False, "
               "log_to_driver=False, _temp_dir=sys.argv[1]); ray.shutdown(); print(time.perf_counter() - t)")


@in_default_run(70)
@BENCHMARKS.register("zoo_profile")
def zoo_profile(run: PerfRun) -> dict[str, Any]:
    """Seconds and shares of one source job's wall time: data, fwd+bwd, optimizer, Lightning, eval, checkpoint."""
    repeats = max(1, run.settings.repeats)
    cfg = run.recipe()
    spec = OmegaConf.to_object(cfg.zoo.source)
    if spec.epochs < 1 or spec.weights:  # nothing to profile: a job that trains nothing
        raise ConfigError(f"zoo_profile profiles a training job; zoo.source has epochs={spec.epochs}, weights="
                          f"{spec.weights!r}. Fix: profile a recipe whose source trains (zoo.source.epochs>=1, no weights).")
    dm = setup_datamodule(cfg)
    trainer_cfg = OmegaConf.to_object(cfg.compute.trainer)
    trainer_cfg.enable_progress_bar = False
    device = _plain_device(trainer_cfg.accelerator)

    def module(epochs: int) -> ClassifierModule:
        model = new_model(spec.arch, spec.arch_params, dm, spec.seed)
        return ClassifierModule(model, spec.optimizer, spec.schedule, epochs)

    def loader() -> Any:  # the job's own loader (bench.zoo.jobs._make_model)
        return dm.loader(spec.split, batch_size=spec.batch_size, shuffle=True, train=True, generator_seed=spec.seed)

    with recipe_threads(cfg) as threads:
        data = _data_figures(dm, spec, loader, repeats)
        steps = _step_figures(module(1), data.pop("batches"), device, repeats)
        fits = _fit_figures(module, loader, trainer_cfg, str(Path(cfg.paths.cache_dir) / "lightning"), device, spec,
                            repeats)
        trained = fits.pop("model")
        finish = _finish_figures(trained, dm, repeats)
        flops = _flop_figures(trained, dm, steps, data["images"] * spec.epochs / fits["lightning_seconds"], repeats)
    all_cores = usable_cpus()
    flops["matmul_all_cores"] = _matmul_gflops(repeats, all_cores)  # what the idle cores could add
    out: dict[str, Any] = {
        "arch": spec.arch, "dataset": cfg.data.name, "images": data["images"], "epochs": spec.epochs,
        "batch_size": spec.batch_size, "optimizer": spec.optimizer.name, "torch_threads": threads,
        "cpus_usable": all_cores, "device": str(device), "repeats": repeats,
        "data": data, "steps": steps, "fits": fits, "finish": finish, "flops": flops,
        "startup": _startup_figures(cfg, repeats, run.settings.timeout_s)}
    out["breakdown"] = _breakdown(out)
    return out


def _best(work: Callable[[], Any], repeats: int, device: torch.device | None = None) -> tuple[float, list[float]]:
    """Best wall seconds of `repeats` calls of `work` (and all of them)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return min(seconds), [round(s, 4) for s in seconds]


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _data_figures(dm: Any, spec: Any, loader: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """One epoch through the job's DataLoader (per-sample items, default collation) vs the same batch
    sizes sliced from the split's in-memory tensors; also returns the loader's batches for `_step_figures`."""
    batches = list(loader())  # warm-up pass; its batches feed the fwd/bwd timing
    loader_s, loader_all = _best(lambda: [None for _ in loader()], repeats)
    x, y = dm.tensors(spec.split)
    generator = torch.Generator().manual_seed(spec.seed)

    def sliced() -> None:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), spec.batch_size):
            rows = order[start:start + spec.batch_size]
            x[rows], y[rows]

    tensor_s, tensor_all = _best(sliced, repeats)
    return {"images": len(x), "batches_per_epoch": len(batches), "loader_seconds_per_epoch": loader_s,
            "loader_seconds": loader_all, "tensor_slicing_seconds_per_epoch": tensor_s,
            "tensor_slicing_seconds": tensor_all, "collation_seconds_per_epoch": loader_s - tensor_s,
            "loader_to_slicing_ratio": loader_s / tensor_s if tensor_s > 0 else None,
            "loader_images_per_second": len(x) / loader_s, "batches": batches}


def _step_figures(module: ClassifierModule, batches: list[Any], device: torch.device, repeats: int) -> dict[str, Any]:
    """A plain loop's forward+backward and optimizer step over pre-built batches: seconds per epoch (best epoch)."""
    model = module.model.to(device).train()
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    batches = [(x.to(device), y.to(device)) for x, y in batches]
    epochs = []
    for _ in range(repeats + 1):  # the first epoch warms up (allocator, optimizer state)
        fwd_bwd = step = 0.0
        for x, y in batches:
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            _sync(device)
            middle = time.perf_counter()
            optimizer.step()
            _sync(device)
            fwd_bwd, step = fwd_bwd + middle - start, step + time.perf_counter() - middle
        epochs.append((fwd_bwd, step))
    fwd_bwd, step = min(epochs[1:], key=sum)
    model.cpu()
    images = sum(len(y) for _, y in batches)
    return {"forward_backward_seconds_per_epoch": fwd_bwd, "optimizer_seconds_per_epoch": step,
            "images_per_second": images / (fwd_bwd + step)}


def _fit_figures(module: Callable[[int], ClassifierModule], loader: Callable[[], Any], trainer_cfg: Any, root_dir: str,
                 device: torch.device, spec: Any, repeats: int) -> dict[str, Any]:
    """The job's Lightning fit (`bench.training.fit`) vs `plain_fit` on the same loader, model and schedule, at
    the job's epochs, interleaved (train_throughput's method); returns the last Lightning-trained model too."""
    fit(module(1), loader(), trainer_cfg, root_dir=root_dir, seed=spec.seed, progress=False)  # warm-up
    plain_fit(module(1), loader(), 1, device, spec.seed)
    timed: dict[str, list[float]] = {"lightning": [], "plain": []}
    trained = None
    for _ in range(repeats):
        lightning = module(spec.epochs)
        timed["lightning"].append(fit(lightning, loader(), trainer_cfg, root_dir=root_dir, seed=spec.seed,
                                      progress=False))
        timed["plain"].append(plain_fit(module(spec.epochs), loader(), spec.epochs, device, spec.seed))
        trained = lightning.model
    best = {kind: min(seconds) for kind, seconds in timed.items()}
    return {"lightning_seconds": best["lightning"], "plain_seconds": best["plain"],
            "lightning_overhead_seconds": best["lightning"] - best["plain"],
            "lightning_to_plain_ratio": best["lightning"] / best["plain"],
            "all_seconds": {kind: [round(s, 4) for s in seconds] for kind, seconds in timed.items()}, "model": trained}


def _finish_figures(model: nn.Module, dm: Any, repeats: int) -> dict[str, Any]:
    """`finish_record`'s measured calls: one pass over the test split (labels and margins), the behaviour
    record's encoding, the checkpoint write."""
    x_test, _ = dm.tensors("test")
    labels_s, _ = _best(lambda: model_outputs(model, x_test), repeats)
    labels, margins = model_outputs(model, x_test)
    check_s, _ = _best(lambda: behaviour_record(labels, margins), repeats)
    with tempfile.TemporaryDirectory(prefix="fpbench-perf-zoo_profile-") as root:
        store = ZooStore(root)
        meta = {"model_id": "profile", "arch": "profile"}
        save_s, _ = _best(lambda: store.save_model("profile", model, meta), repeats)
        checkpoint_bytes = store.checkpoint_path("profile").stat().st_size
    return {"test_images": len(x_test), "test_outputs_seconds": labels_s, "behaviour_record_seconds": check_s,
            "behaviour_record_inputs": min(len(x_test), CHECK_SAMPLES),
            "evaluation_seconds": labels_s + check_s, "checkpoint_seconds": save_s, "checkpoint_bytes": checkpoint_bytes}


def _flop_figures(model: nn.Module, dm: Any, steps: dict[str, Any], job_images_per_second: float,
                  repeats: int) -> dict[str, Any]:
    """FLOPs per training image (3 x forward, 2 FLOPs a MAC; Conv2d and Linear only) and the rates reached."""
    macs = forward_macs(model, (dm.in_channels, *_image_hw(dm)))
    per_image = 3 * 2 * macs
    return {"forward_macs_per_image": macs, "train_flops_per_image": per_image,
            "step_gflops": per_image * steps["images_per_second"] / 1e9,  # fwd+bwd+step on pre-built batches
            "job_images_per_second": job_images_per_second, "job_gflops": per_image * job_images_per_second / 1e9,
            "matmul_size": MATMUL_SIZE, "matmul": _matmul_gflops(repeats, torch.get_num_threads())}


def _image_hw(dm: Any) -> tuple[int, int]:
    size = dm.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def forward_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one image of `shape` (C,H,W), in Conv2d and Linear layers."""
    total = 0

    def count(layer: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kernel = layer.kernel_size[0] * layer.kernel_size[1]
            total += output.numel() * (layer.in_channels // layer.groups) * kernel
        else:
            total += output.numel() * layer.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def _matmul_gflops(repeats: int, threads: int) -> dict[str, Any]:
    """GFLOP/s of a float32 MATMUL_SIZE^2 matmul at `threads` torch threads (best of max(repeats, 3))."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
        a @ b  # warm-up
        seconds, _ = _best(lambda: a @ b, max(repeats, 3))
    finally:
        torch.set_num_threads(before)
    return {"threads": threads, "seconds": seconds, "gflops": 2 * MATMUL_SIZE**3 / seconds / 1e9}


def _startup_figures(cfg: Any, repeats: int, timeout_s: float) -> dict[str, Any]:
    """Wall seconds of a fresh interpreter that only imports (best of repeats), and of a local Ray start if installed."""
    out: dict[str, Any] = {}
    for name, code in STARTUP.items():
        command = [sys.executable, "-c", code]
        best, _ = _best(lambda command=command: subprocess.run(command, cwd=REPO, check=True, capture_output=True,
                                                               timeout=timeout_s), repeats)
        out[name] = {"command": f"python -c '{code}'", "seconds": best}
    if importlib.util.find_spec("ray") is None:
        out["ray"] = {"measured": False, "reason": "Ray is not installed (pip install -e '.[ray]')"}
        return out
    temp_dir = ray_temp_dir(cfg.paths.cache_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RAY_STARTUP, str(temp_dir)], cwd=REPO, check=True, capture_output=True,
                          text=True, timeout=timeout_s)
    out["ray"] = {"measured": True, "command": "python -c 'import ray; ray.init(num_cpus=1); ray.shutdown()'",
                  "init_and_shutdown_seconds": float(done.stdout.strip().splitlines()[-1]),
                  "process_seconds": time.perf_counter() - start}
    return out


def _breakdown(out: dict[str, Any]) -> dict[str, Any]:
    """The job's wall time (Lightning fit + `finish_record`'s evaluation and checkpoint) split into parts:
    seconds and shares. Per-epoch parts are scaled by the epochs; `plain_loop_rest` is what the plain loop
    spends beyond them (loss bookkeeping, scheduler, moving the model; noise can make it negative)."""
    data, steps, fits, finish, epochs = out["data"], out["steps"], out["fits"], out["finish"], out["epochs"]
    parts = {
        "data_loading": data["loader_seconds_per_epoch"] * epochs,
        "forward_backward": steps["forward_backward_seconds_per_epoch"] * epochs,
        "optimizer": steps["optimizer_seconds_per_epoch"] * epochs,
    }
    parts["plain_loop_rest"] = fits["plain_seconds"] - sum(parts.values())
    parts["lightning_overhead"] = fits["lightning_overhead_seconds"]
    parts["evaluation"] = finish["evaluation_seconds"]
    parts["checkpoint"] = finish["checkpoint_seconds"]
    job = fits["lightning_seconds"] + finish["evaluation_seconds"] + finish["checkpoint_seconds"]
    startup = out["startup"]["import_bench_cli"]["seconds"]
    return {"job_seconds": job, "parts": {k: {"seconds": v, "share": v / job} for k, v in parts.items()},
            "collation_seconds": data["collation_seconds_per_epoch"] * epochs,
            "collation_share": data["collation_seconds_per_epoch"] * epochs / job,
            "startup_seconds_per_process": startup, "startup_to_job_ratio": startup / job,
            "idle_cores": max(out["cpus_usable"] - out["torch_threads"], 0)}
