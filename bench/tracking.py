"""Tracking: files on disk first, then Weights & Biases (offline by default, no account needed).

Every W&B file goes under `tracking.wandb.dir` (default: the cache dir); `mode: disabled` turns W&B
off entirely (tests), `online` is for users with an account.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

        kwargs = dict(settings)
        save_dir = kwargs.pop("dir")  # WandbLogger ignores `dir` unless save_dir is left at "."
        return WandbLogger(name=f"zoo/{job.role}/{job.model_id}", save_dir=save_dir, job_type="zoo",
                           reinit="finish_previous", config={"job": job.record_base(), "recipe": to_dict(cfg)}, **kwargs)

    return factory


@contextmanager
def _wandb_run(settings: dict[str, Any], name: str, job_type: str, config: dict[str, Any] | None = None,
               artifact: tuple[str, str, Path] | None = None) -> Iterator[Any]:
    """One finished-for-sure W&B run; `artifact` = (name, type, file) is attached before it closes."""
    import wandb

    run = wandb.init(name=name, job_type=job_type, config=config, reinit="finish_previous", **settings)
    try:
        yield run
        if artifact is not None:
            art = wandb.Artifact(name=artifact[0], type=artifact[1])
            art.add_file(str(artifact[2]))
            run.log_artifact(art)
    finally:
        run.finish()


PER_MODEL_COLUMNS = ("model_id", "role", "group", "score", "queries", "test_acc", "source_agreement", "accuracy_drop")


def per_model_table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The W&B per-suspect table: columns and one row per scored suspect.

    Beside detection, each row says whether the suspect is still a useful model: its test accuracy,
    its label agreement with the source, and `accuracy_drop` = source test accuracy - its own
    (None where the zoo did not record them, e.g. results written before they were).

    Args:
        result: A result dict (`bench.results`).

    Returns:
        (columns, rows), rows in `per_model` order.
    """
    source_acc = result["zoo"].get("source_test_acc")
    rows = []
    for record in result["per_model"]:
        test_acc = record.get("test_acc")
        drop = source_acc - test_acc if source_acc is not None and test_acc is not None else None
        row = {**record, "test_acc": test_acc, "source_agreement": record.get("source_agreement"), "accuracy_drop": drop}
        rows.append([row[c] for c in PER_MODEL_COLUMNS])
    return list(PER_MODEL_COLUMNS), rows


def log_result(cfg: DictConfig, result: dict[str, Any], path: Path) -> str | None:
    """Log one result to W&B (after it is on disk): config, summary metrics, per-model table (with each
    suspect's test accuracy, source agreement and accuracy drop), ROC, score and score-vs-accuracy-drop
    plots, and the result JSON as an artifact. Returns the run folder, or None."""
    settings = wandb_settings(cfg)
    if settings is None:
        return None
    import wandb

    from bench.report import plot_roc, plot_scores_box
    from bench.report.plots import has_accuracy, plot_score_vs_accuracy_drop

    name = f"{result['zoo']['name']}/{result['method']['name']}/{result['config_sha256'][:8]}-s{result['seed']}"
    artifact = (f"result-{result['config_sha256'][:8]}-s{result['seed']}", "result", path)
    with _wandb_run(settings, name, "eval", config=result["config"], artifact=artifact) as run:
        metrics = result["metrics"]
        summary = {"auc": metrics["auc"], "n_positive": metrics["n_positive"], "n_negative": metrics["n_negative"],
                   "queries_per_suspect": result["queries_per_suspect"], **{f"timing/{k}": v for k, v in result["timing_s"].items()}}
        summary.update({f"tpr_at_fpr/{k}": v for k, v in metrics["tpr_at_fpr"].items()})
        summary.update({f"group/{g}": v["mean_score"] for g, v in metrics["groups"].items()})
        target = (result.get("fingerprint") or {}).get("generation_target")
        if target:  # did generation reach the method's own target (docs/methods/<name>.md)?
            summary.update({f"target/{k}": v for k, v in target.items()})
        run.summary.update(summary)
        columns, rows = per_model_table(result)
        table = wandb.Table(columns=columns, data=rows)
        plots_dir = Path(settings["dir"]) / "plots" / name.replace("/", "_")
        images = {"roc": plot_roc([result], plots_dir / "roc.png"), "scores": plot_scores_box([result], plots_dir / "scores.png")}
        if has_accuracy([result]):
            images["score_vs_accuracy_drop"] = plot_score_vs_accuracy_drop([result], plots_dir / "score_vs_accuracy_drop.png")
        run.log({"per_model": table, **{k: wandb.Image(str(v)) for k, v in images.items()}})
        run_dir = run.dir
    return run_dir  # after the block: the artifact is attached when it closes


def offline_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary metrics stored in an offline W&B run folder (`.../wandb/offline-run-*`).

    W&B >= 0.19 keeps offline runs in one binary `run-*.wandb` log and writes no summary JSON until
    `wandb sync`; this reads the summary items (protobuf `SummaryItem`: key = field 1, value_json =
    field 16) straight from that log, so an offline run can be checked without syncing it.
    """
    import json
    import re

    files = sorted(Path(run_dir).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"No run-*.wandb file in {run_dir}; is it an offline W&B run folder?")
    data = files[0].read_bytes()
    out: dict[str, Any] = {}
    for match in re.finditer(rb"\n([\x01-\x7f])", data):
        start, key_len = match.end(), match.group(1)[0]
        key, rest = data[start:start + key_len], start + key_len
        if data[rest:rest + 2] != b"\x82\x01" or rest + 3 > len(data):
            continue
        value_len = data[rest + 2]
        if value_len > 0x7F:
            continue
        try:
            out[key.decode()] = json.loads(data[rest + 3:rest + 3 + value_len])
        except (UnicodeDecodeError, ValueError):
            continue
    return out


def log_sweep(cfg: DictConfig, name: str, csv: Path, plots: list[Path]) -> str | None:
    """Log a sweep's report (its CSV as a table, its heatmaps / line plots as images) as one W&B run
    in the sweep's group; the per-point runs are logged by `log_result`. Returns the run folder."""
    settings = wandb_settings(cfg)
    if settings is None:
        return None
    import pandas as pd
    import wandb

    settings["group"] = name
    with _wandb_run(settings, f"sweep/{name}", "sweep", artifact=(f"sweep-{name}", "sweep", csv)) as run:
        run.log({"points": wandb.Table(dataframe=pd.read_csv(csv)),
                 **{f"plots/{p.stem}": wandb.Image(str(p)) for p in plots}})
        run_dir = run.dir
    return run_dir
