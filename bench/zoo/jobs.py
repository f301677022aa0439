"""One zoo job's work: make the model (train it, or apply an attack chain to its parent) and
write its checkpoint and manifest record.

The local build (`bench.zoo.build`), the Ray tasks (`bench.zoo.executors`) and the DDP ranks that
follow rank 0 (`bench.zoo.ddp`) all call these functions; none of them imports another executor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from bench.io import inside
from bench.model_spec import ModelSpec
from bench.nets import new_model
from bench.training import (
    ClassifierModule,
    NonFiniteTrainingError,
    OptimizerConfig,
    ScheduleConfig,
    TrainerConfig,
    check_finite_model,
    fit,
    predicted_labels,
)
from bench.zoo.attacks import AttackContext, build_attack
from bench.zoo.external import apply_pretrained, import_entry, load_external
from bench.zoo.integrity import behaviour_record, model_outputs
from bench.zoo.plan_base import Job, ZooPlan
from bench.zoo.store import ZooStore
from datamodules import build_datamodule


def data_info(dm: Any) -> dict[str, Any]:
    """What `load_model` needs to rebuild an architecture for this datamodule."""
    return {"name": dm.name, "in_channels": dm.in_channels, "num_classes": dm.num_classes,
            "image_size": dm.image_size, "mean": list(dm.mean), "std": list(dm.std)}


def zoo_root(cfg: DictConfig) -> Path:
    return inside(cfg.paths.zoo_dir, cfg.zoo.name)  # a ValueError if the name would leave zoo_dir


def setup_datamodule(cfg: DictConfig) -> Any:
    """The recipe's datamodule with its splits made (`zoo.split_seed`)."""
    dm = build_datamodule(cfg.data, data_dir=cfg.paths.data_dir, seed=cfg.zoo.split_seed)
    dm.setup()
    return dm


def run_job(job: Job, dm: Any, store: ZooStore, trainer_cfg: TrainerConfig, root_dir: str, progress: bool,
            logger: Any = False) -> tuple[nn.Module, dict[str, Any], float]:
    """Make one model; returns (model, attack info, train seconds). Reads the source from `store`.

    Raises:
        NonFiniteTrainingError: a training loss or the model's weights are inf or nan; the message names
            the job's role, model id and provenance. Nothing is saved or recorded for it.
    """
    try:
        model, info, seconds = _make_model(job, dm, store, trainer_cfg, root_dir, progress, logger)
        check_finite_model(model)
    except NonFiniteTrainingError as err:
        fix = ("the weights file holds them: export it again" if job.op == "import" else
               "training diverged: give this model a lower lr (or another optimizer or schedule)")
        raise NonFiniteTrainingError(f"{job.role} {job.model_id} ({job.provenance}): {err}. It is not saved and the "
                                     f"manifest does not record it. Fix: {fix}, then build again.") from None
    return model, info, seconds


def _make_model(job: Job, dm: Any, store: ZooStore, trainer_cfg: TrainerConfig, root_dir: str, progress: bool,
                logger: Any) -> tuple[nn.Module, dict[str, Any], float]:
    """`run_job`'s work: import, train from scratch, or apply the attack chain to the stored parent."""
    if job.op == "import":  # nothing is trained: the checked weights become the zoo's model
        return load_external(import_entry(job), dm, None, f"{job.role} '{job.external['weights']}'",
                             job.external["sha256"]), {}, 0.0
    if job.op == "train":
        spec = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelSpec), job.spec))
        model = new_model(spec.arch, spec.arch_params, dm, spec.seed)
        apply_pretrained(model, job, dm)  # a no-op unless the spec starts from published weights
        module = ClassifierModule(model, _as(OptimizerConfig, spec.optimizer), _as(ScheduleConfig, spec.schedule), spec.epochs)
        # An overlap negative's training set: its split's size, `overlap` of it owner samples, drawn from its seed
        mix = None if job.overlap is None else dm.owner_mix_indices(spec.split, job.overlap, spec.seed)
        loader = dm.loader(spec.split, batch_size=spec.batch_size, shuffle=True, train=True, generator_seed=spec.seed,
                           indices=mix)
        seconds = fit(module, loader, trainer_cfg, root_dir=root_dir, seed=spec.seed, logger=logger, progress=progress)
        return module.model, {}, seconds
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


def _as(cls: type, value: Any) -> Any:
    return value if isinstance(value, cls) else cls(**value)


def finish_record(job: Job, model: nn.Module, info: dict[str, Any], seconds: float, dm: Any, store: ZooStore,
                  plan: ZooPlan, source_labels: torch.Tensor | None = None, source_id: str | None = None) -> dict[str, Any]:
    """Save the checkpoint and return the manifest record (test accuracy and source agreement measured here).

    Args:
        source_labels: the source's labels on the test split; None: read the source (`job.parent`, or
            `source_id` for a job without a parent) from the store if it is there, else `source_agreement`
            is null (`fill_source_agreement` fills it in once the source is built).
        source_id: the zoo's source model id, for a job without a parent (a negative, a pool reference).
    """
    check_finite_model(model, f"{job.role} {job.model_id} ({job.provenance})")  # never record a diverged model
    x_test, y_test = dm.tensors("test")
    labels, margins = model_outputs(model, x_test)  # one pass: the test accuracy and the behaviour record
    if job.role == "source":
        source_labels = labels
    elif source_labels is None and (job.parent or source_id) is not None:
        source_labels = source_test_labels(dm, store, job.parent or source_id, x_test)
    record = job.record_base()
    record.update({
        "dataset": plan.dataset,
        "data": data_info(dm),
        "split_hashes": plan.split_hashes,
        "test_acc": int((labels == y_test).sum()) / max(len(y_test), 1),  # `accuracy`, from the labels at hand
        "source_agreement": agreement(labels, source_labels),
        "check": behaviour_record(labels, margins),  # re-measured before the model is scored (bench.zoo.integrity)
        "train_seconds": round(seconds, 3),
        "info": info,
    })
    meta = {k: record[k] for k in ("model_id", "arch", "arch_params", "provenance", "data")}
    record["sha256"] = store.save_model(job.model_id, model, meta)
    return record


def agreement(labels: torch.Tensor, reference: torch.Tensor | None) -> float | None:
    """Fraction of samples where `labels` equal `reference` (None: no reference, or no samples)."""
    if reference is None or len(labels) == 0:
        return None
    return int((labels == reference).sum()) / len(labels)


def source_test_labels(dm: Any, store: ZooStore, source_id: str, x_test: torch.Tensor | None = None) -> torch.Tensor | None:
    """The stored source's labels on the test split (`x_test` when the caller has it); None while the
    source is not recorded yet."""
    record = store.records().get(source_id)
    if record is None or not store.checkpoint_path(source_id).is_file():
        return None
    return predicted_labels(store.load_model(source_id, record), dm.tensors("test")[0] if x_test is None else x_test)


def fill_source_agreement(dm: Any, store: ZooStore, plan: ZooPlan, model_ids: list[str]) -> None:
    """Measure `source_agreement` for the records among `model_ids` that lack it (built before the source was)."""
    records = store.records()
    missing = [i for i in model_ids if i in records and records[i].get("source_agreement") is None]
    if not missing:
        return
    x_test = dm.tensors("test")[0]
    reference = source_test_labels(dm, store, plan.source.model_id, x_test)
    if reference is None:
        return
    for model_id in missing:
        labels = predicted_labels(store.load_model(model_id, records[model_id]), x_test)
        records[model_id]["source_agreement"] = agreement(labels, reference)
    store.write_records(records)
