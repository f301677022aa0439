"""Tracking: files on disk first, then Weights & Biases (offline by default, no account needed).

Every W&B file goes under `tracking.wandb.dir` (default: the cache dir); `mode: disabled` turns W&B
off entirely (tests), `online` is for users with an account.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bench.config import to_dict

log = logging.getLogger(__name__)


def wandb_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """Keyword arguments for `wandb.init`, or None when W&B is disabled."""
    wb = cfg.tracking.wandb
    if wb.mode == "disabled":
        return None
    root = Path(wb.dir)
    root.mkdir(parents=True, exist_ok=True)
    # W&B also writes caches/config under these; keep them inside the configured folder.
    os.environ.setdefault("WANDB_CACHE_DIR", str(root / "wandb-cache"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(root / "wandb-config"))
    os.environ.setdefault("WANDB_DATA_DIR", str(root / "wandb-data"))
    os.environ.setdefault("WANDB_SILENT", "true")
    return {"mode": wb.mode, "project": wb.project, "entity": wb.entity, "dir": str(root),
            "group": wb.group or cfg.zoo.name}


def training_logger_factory(cfg: DictConfig) -> Callable[[Any], Any] | None:
    """job -> a Lightning `WandbLogger` for that zoo model's training curve (None when disabled)."""
    settings = wandb_settings(cfg)
    if settings is None or not cfg.tracking.wandb.log_zoo:
        return None

    def factory(job: Any) -> Any:
        from pytorch_lightning.loggers import WandbLogger

        return WandbLogger(name=f"zoo/{job.role}/{job.model_id}", job_type="zoo", reinit="finish_previous",
                           config={"job": job.record_base(), "recipe": to_dict(cfg)}, **settings)

    return factory


def log_result(cfg: DictConfig, result: dict[str, Any], path: Path) -> str | None:
    """Log one result to W&B (after it is on disk): config, summary metrics, per-model table,
    ROC and score plots, and the result JSON as an artifact. Returns the run folder, or None."""
    settings = wandb_settings(cfg)
    if settings is None:
        return None
    import wandb

    from bench.report import plot_roc, plot_scores_box

    name = f"{result['zoo']['name']}/{result['method']['name']}/{result['config_sha256'][:8]}-s{result['seed']}"
    run = wandb.init(name=name, job_type="eval", config=result["config"], reinit="finish_previous", **settings)
    try:
        metrics = result["metrics"]
        summary = {"auc": metrics["auc"], "n_positive": metrics["n_positive"], "n_negative": metrics["n_negative"],
                   "queries_per_suspect": result["queries_per_suspect"], **{f"timing/{k}": v for k, v in result["timing_s"].items()}}
        summary.update({f"tpr_at_fpr/{k}": v for k, v in metrics["tpr_at_fpr"].items()})
        summary.update({f"group/{g}": v["mean_score"] for g, v in metrics["groups"].items()})
        run.summary.update(summary)
        columns = ["model_id", "role", "group", "score", "queries"]
        table = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in result["per_model"]])
        plots_dir = Path(settings["dir"]) / "plots" / name.replace("/", "_")
        images = {"roc": plot_roc([result], plots_dir / "roc.png"), "scores": plot_scores_box([result], plots_dir / "scores.png")}
        run.log({"per_model": table, **{k: wandb.Image(str(v)) for k, v in images.items()}})
        artifact = wandb.Artifact(name=f"result-{result['config_sha256'][:8]}-s{result['seed']}", type="result")
        artifact.add_file(str(path))
        run.log_artifact(artifact)
        return run.dir
    finally:
        run.finish()
