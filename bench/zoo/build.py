"""Building a zoo: run the planned jobs, skipping verified models, writing each record atomically."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from bench.config import ConfigError, ModelSpec
from bench.pools import PoolSpec
from bench.training import ClassifierModule, OptimizerConfig, ScheduleConfig, TrainerConfig, fit
from bench.zoo.executors import follow_rank_zero, is_rank_zero
from bench.zoo.plan import Job, ZooPlan, plan_zoo
from bench.zoo.store import ZooStore

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    plan: ZooPlan
    store: ZooStore
    datamodule: Any = None
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def data_info(dm: Any) -> dict[str, Any]:
    """What `load_model` needs to rebuild an architecture for this datamodule."""
    return {"name": dm.name, "in_channels": dm.in_channels, "num_classes": dm.num_classes,
            "image_size": dm.image_size, "mean": list(dm.mean), "std": list(dm.std)}


def zoo_root(cfg: DictConfig) -> Path:
    return Path(cfg.paths.zoo_dir) / cfg.zoo.name


def setup_datamodule(cfg: DictConfig) -> Any:
    """The recipe's datamodule with its splits made (`zoo.split_seed`)."""
    from datamodules import build_datamodule

    dm = build_datamodule(cfg.data, data_dir=cfg.paths.data_dir, seed=cfg.zoo.split_seed)
    dm.setup()
    return dm


def prepare(cfg: DictConfig, pool_specs: list[PoolSpec] | None = None) -> tuple[Any, ZooPlan, ZooStore]:
    """Set up the data and plan the zoo (cheap; all recipe errors surface here, before training)."""
    dm = setup_datamodule(cfg)
    plan = plan_zoo(cfg, dm.split_hashes(), pool_specs)
    return dm, plan, ZooStore(zoo_root(cfg))


def new_model(arch: str, arch_params: dict, dm: Any, seed: int) -> nn.Module:
    """A freshly initialised `arch` sized for the datamodule's images and classes."""
    from bench.nets import build_model

    return build_model(arch, in_channels=dm.in_channels, num_classes=dm.num_classes, image_size=dm.image_size,
                       mean=dm.mean, std=dm.std, params=dict(arch_params), seed=seed)


def run_job(job: Job, dm: Any, store: ZooStore, trainer_cfg: TrainerConfig, root_dir: str, progress: bool,
            logger: Any = False) -> tuple[nn.Module, dict[str, Any], float]:
    """Make one model; returns (model, attack info, train seconds). Reads the source from `store`."""
    if job.op == "train":
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelSpec), job.spec))
        model = new_model(spec.arch, spec.arch_params, dm, spec.seed)
        module = ClassifierModule(model, _as(OptimizerConfig, spec.optimizer), _as(ScheduleConfig, spec.schedule), spec.epochs)
        loader = dm.loader(spec.split, batch_size=spec.batch_size, shuffle=True, train=True, generator_seed=spec.seed)
        seconds = fit(module, loader, trainer_cfg, root_dir=root_dir, seed=spec.seed, logger=logger, progress=progress)
        return module.model, {}, seconds
    from bench.zoo.attacks import AttackContext, build_attack

    source_record = store.records()[job.parent]
    model = store.load_model(job.parent, source_record)
    ctx = AttackContext(datamodule=dm, trainer=trainer_cfg, root_dir=root_dir, progress=progress, logger=logger,
                        source_arch=source_record["arch"], source_arch_params=source_record["arch_params"])
    info: dict[str, Any] = {}
    seconds = 0.0
    for step in job.spec["chain"]:
        output = build_attack(step["attack"], step["params"]).apply(model, ctx)
        model = output.model
        seconds += output.train_seconds
        info[step["attack"]] = output.info
        ctx.source_arch, ctx.source_arch_params = job.arch, job.arch_params
    return model, info, seconds


@contextmanager
def recipe_threads(cfg: DictConfig) -> Iterator[int]:
    """Run the block at torch's intra-op thread count `compute.cpu_threads` (tiny CPU models train
    ~10x faster on one thread than on two), then give the caller back its own count, errors included.

    Yields:
        The thread count in force inside the block.
    """
    before = torch.get_num_threads()
    if cfg.compute.cpu_threads is not None:
        torch.set_num_threads(int(cfg.compute.cpu_threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _as(cls: type, value: Any) -> Any:
    return value if isinstance(value, cls) else cls(**value)


def build_zoo(cfg: DictConfig, pool_specs: list[PoolSpec] | None = None, progress: bool = True,
              logger_factory: Any = None, require_suspects: bool = False) -> BuildReport:
    """Build (or finish building) the recipe's zoo; models already built and verified are skipped.

    Trains at torch's intra-op thread count `compute.cpu_threads` when the recipe gives one; the
    caller's own count is back in force on return (`recipe_threads`).

    Args:
        cfg: a loaded recipe (`bench.config.load_recipe`).
        pool_specs: defender pools requested by the methods about to run.
        progress: show Lightning's progress bar for each fit.
        logger_factory: job -> Lightning logger (W&B), or None for no logger.
        require_suspects: fail before training unless there are positives and negatives to score.
    """
    with recipe_threads(cfg):
        return _build_zoo(cfg, pool_specs, progress, logger_factory, require_suspects)


def _build_zoo(cfg: DictConfig, pool_specs: list[PoolSpec] | None, progress: bool, logger_factory: Any,
               require_suspects: bool) -> BuildReport:
    start = time.perf_counter()
    dm, plan, store = prepare(cfg, pool_specs)
    if require_suspects and not (plan.by_role("positive") and plan.by_role("negative")):
        raise ConfigError(f"Zoo '{plan.name}' plans {len(plan.by_role('positive'))} positives and "
                          f"{len(plan.by_role('negative'))} negatives; evaluation needs at least one of each. "
                          "Add entries under zoo.positives and zoo.negatives.")
    report = BuildReport(plan=plan, store=store, datamodule=dm)
    trainer_cfg = OmegaConf.to_object(cfg.compute.trainer)
    root_dir = str(Path(cfg.paths.cache_dir) / "lightning")
    if not is_rank_zero():  # a DDP rank > 0 (ddp re-launch, torchrun, SLURM): train alongside rank 0, write nothing
        follow_rank_zero(plan, dm, store, trainer_cfg, root_dir, logger_factory)
        raise SystemExit(0)  # rank 0 alone writes the zoo and goes on (evaluation) by itself
    with store.lock():
        pending = store.unbuilt(plan.jobs)
        report.skipped = [job.model_id for job in plan.jobs if job not in pending]
        if pending and cfg.compute.executor == "ray":
            from bench.zoo.executors import run_ray

            run_ray(cfg, plan, pending, store, report)
            fill_source_agreement(dm, store, plan, report.built)  # tasks may finish before the source
        else:
            reference: torch.Tensor | None = None  # the source's test labels, read once
            for n, job in enumerate(pending, 1):
                log.info("[%d/%d] %s %s", n, len(pending), job.role, job.provenance)
                logger = logger_factory(job) if logger_factory else False
                model, info, seconds = run_job(job, dm, store, trainer_cfg, root_dir, progress, logger)
                if reference is None and job.role != "source":
                    reference = source_test_labels(dm, store, plan.source.model_id)
                store.add_record(finish_record(job, model, info, seconds, dm, store, plan, reference))
                report.built.append(job.model_id)
                if logger:
                    logger.experiment.finish()
    report.seconds = time.perf_counter() - start
    return report


def finish_record(job: Job, model: nn.Module, info: dict[str, Any], seconds: float, dm: Any, store: ZooStore,
                  plan: ZooPlan, source_labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Save the checkpoint and return the manifest record (test accuracy and source agreement measured here).

    Args:
        source_labels: the source's labels on the test split; None: read the source (`job.parent`)
            from the store if it is there, else `source_agreement` is null (`fill_source_agreement`
            fills it in once the source is built).
    """
    x_test, y_test = dm.tensors("test")
    labels = predicted_labels(model, x_test)
    if job.role == "source":
        source_labels = labels
    elif source_labels is None and job.parent is not None:
        source_labels = source_test_labels(dm, store, job.parent)
    record = job.record_base()
    record.update({
        "dataset": plan.dataset,
        "data": data_info(dm),
        "split_hashes": plan.split_hashes,
        "test_acc": int((labels == y_test).sum()) / max(len(y_test), 1),  # as `bench.training.accuracy`
        "source_agreement": agreement(labels, source_labels),
        "train_seconds": round(seconds, 3),
        "info": info,
    })
    record["sha256"] = store.save_model(job.model_id, model, {k: record[k] for k in ("model_id", "arch", "arch_params", "provenance", "data")})
    return record


@torch.no_grad()
def predicted_labels(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Top-1 labels of `model` on `x` (eval mode, mode restored), on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    labels = torch.cat([model(xb.to(device)).argmax(1).cpu() for xb in x.split(batch_size)]) if len(x) else \
        torch.zeros(0, dtype=torch.long)
    model.train(was_training)
    return labels


def agreement(labels: torch.Tensor, reference: torch.Tensor | None) -> float | None:
    """Fraction of samples where `labels` equal `reference` (None: no reference, or no samples)."""
    if reference is None or len(labels) == 0:
        return None
    return int((labels == reference).sum()) / len(labels)


def source_test_labels(dm: Any, store: ZooStore, source_id: str) -> torch.Tensor | None:
    """The stored source's labels on the test split; None while the source is not recorded yet."""
    record = store.records().get(source_id)
    if record is None or not store.checkpoint_path(source_id).is_file():
        return None
    return predicted_labels(store.load_model(source_id, record), dm.tensors("test")[0])


def fill_source_agreement(dm: Any, store: ZooStore, plan: ZooPlan, model_ids: list[str]) -> None:
    """Measure `source_agreement` for the records among `model_ids` that lack it (built before the source was)."""
    records = store.records()
    missing = [i for i in model_ids if i in records and records[i].get("source_agreement") is None]
    reference = source_test_labels(dm, store, plan.source.model_id) if missing else None
    if reference is None:
        return
    x_test = dm.tensors("test")[0]
    for model_id in missing:
        labels = predicted_labels(store.load_model(model_id, records[model_id]), x_test)
        records[model_id]["source_agreement"] = agreement(labels, reference)
    store.write_records(records)
