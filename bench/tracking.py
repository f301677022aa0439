"""Tracking: files on disk first, then Weights & Biases (offline by default, no account needed).

Every W&B file goes under `tracking.wandb.dir` (default: the cache dir); `mode: disabled` turns W&B
off entirely (tests), `online` is for users with an account. What is logged, and why: docs/tracking.md.

W&B never costs a result: every W&B call (opening a run, logging, artifacts, finishing) goes through
one guard. On any failure it logs one error naming what failed, falls back (online -> offline ->
disabled) for the rest of the process, and the work goes on; `sync_lines` says how to upload the
offline runs afterwards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.logger import DummyExperiment

from bench.config import to_dict
from bench.report import plot_roc, plot_scores_box
from bench.report.frontier import FRONTIER_FPR, method_frontier
from bench.report.frontier_plots import plot_frontier
from bench.report.model import Board
from bench.report.plots import has_accuracy, plot_score_vs_accuracy_drop
from bench.report.wandb_board import board_figures, board_frames, board_summary
from bench.tracking_state import (  # noqa: F401  (the process's W&B state, light to import; re-exported here)
    _STATE,
    MODES,
    effective_mode,
    fall_back,
    reset,
    sync_lines,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ONLINE_INIT_TIMEOUT_S = 20.0  # wandb.init's own default waits 90 s for an unreachable server; WANDB_INIT_TIMEOUT overrides


def wandb_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """Keyword arguments for `wandb.init` in the mode now in force, or None when W&B is disabled."""
    wb = cfg.tracking.wandb
    mode = effective_mode(wb.mode)
    if mode == "disabled":
        return None
    root = Path(wb.dir)
    root.mkdir(parents=True, exist_ok=True)
    # W&B also writes caches/config under these; keep them inside the configured folder.
    os.environ.setdefault("WANDB_CACHE_DIR", str(root / "wandb-cache"))
    os.environ.setdefault("WANDB_CONFIG_DIR", str(root / "wandb-config"))
    os.environ.setdefault("WANDB_DATA_DIR", str(root / "wandb-data"))
    os.environ.setdefault("WANDB_SILENT", "true")
    settings = {"mode": mode, "project": wb.project, "entity": wb.entity, "dir": str(root), "group": wb.group or cfg.zoo.name}
    if mode == "online" and "WANDB_INIT_TIMEOUT" not in os.environ:
        import wandb

        settings["settings"] = wandb.Settings(init_timeout=ONLINE_INIT_TIMEOUT_S)
    return settings


def with_fallback(what: str, cfg: DictConfig, body: Callable[[dict[str, Any]], T]) -> T | None:
    """``body(settings)`` through the guard: on any exception fall back (online -> offline -> disabled)
    and try once more in the new mode; None when W&B is (or ends up) disabled."""
    settings = wandb_settings(cfg)
    while settings is not None:
        try:
            out = body(settings)
        except Exception as err:  # any W&B failure (CommError, UsageError, timeouts, ...) costs only W&B
            fall_back(what, err, settings["mode"])
            settings = wandb_settings(cfg)  # strictly fewer W&B than before, so this ends
            continue
        if settings["mode"] == "offline" and settings["dir"] not in _STATE.offline_dirs:
            _STATE.offline_dirs.append(settings["dir"])
        return out
    return None


class GuardedRun:
    """A W&B run whose every method call goes through the guard: the first failure is logged and
    falls back, and the run's later calls do nothing (except `finish`, always tried)."""

    def __init__(self, run: Any, what: str, mode: str) -> None:
        self.run, self.what, self.mode, self.failed = run, what, mode, False

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.run, name)
        if not callable(value):
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.failed and name != "finish":
                return None
            try:
                return value(*args, **kwargs)
            except Exception as err:
                if not self.failed:
                    fall_back(f"{self.what} ({name})", err, self.mode)
                self.failed = True
                return None

        return guarded


class GuardedWandbLogger(WandbLogger):
    """`WandbLogger` whose run is a `GuardedRun` (module level: a spawned DDP rank unpickles it)."""

    def __init__(self, what: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._what, self._guarded_run = what, None

    @property
    def experiment(self) -> Any:
        run = WandbLogger.experiment.fget(self)  # rank > 0: Lightning's dummy, nothing to guard
        if isinstance(run, (DummyExperiment, GuardedRun)):
            return run
        if self._guarded_run is None or self._guarded_run.run is not run:
            self._guarded_run = GuardedRun(run, self._what, self._wandb_init.get("mode", "offline"))
        return self._guarded_run

    def log_hyperparams(self, params: Any) -> None:
        try:
            super().log_hyperparams(params)
        except Exception as err:
            fall_back(f"{self._what} (hyperparameters)", err, self._wandb_init.get("mode", "offline"))

    def __getstate__(self) -> dict[str, Any]:  # a spawned DDP rank re-attaches to the run itself
        state = super().__getstate__()
        state["_guarded_run"] = None
        return state


def training_logger_factory(cfg: DictConfig) -> Callable[[Any], Any] | None:
    """job -> a Lightning `WandbLogger` for that zoo model's training curve, False when W&B failed
    (None when disabled). The run is opened here, inside the guard, not later inside the fit."""
    if effective_mode(cfg.tracking.wandb.mode) == "disabled" or not cfg.tracking.wandb.log_zoo:
        return None

    def factory(job: Any) -> Any:
        what = f"logging zoo model {job.model_id}'s training"

        def open_logger(settings: dict[str, Any]) -> Any:
            kwargs = dict(settings)
            save_dir = kwargs.pop("dir")  # WandbLogger ignores `dir` unless save_dir is left at "."
            logger = GuardedWandbLogger(what, name=f"zoo/{job.role}/{job.model_id}", save_dir=save_dir, job_type="zoo",
                                             reinit="finish_previous", config={"job": job.record_base(), "recipe": to_dict(cfg)},
                                             **kwargs)
            _ = logger.experiment  # wandb.init now, where a failure falls back, not inside Lightning's fit
            return logger

        return with_fallback(what, cfg, open_logger) or False

    return factory


MODEL_ARTIFACT_KEYS = ("model_id", "role", "attack", "kind", "parent", "provenance", "sha256", "arch", "test_acc")


def model_artifact_name(model_id: str) -> str:
    """The W&B artifact name of a zoo model (one artifact collection per model id)."""
    return f"model-{model_id}"


def log_zoo_model(run: Any, record: dict[str, Any], checkpoint: Path) -> None:
    """Log one built zoo model as a W&B artifact of `run` (the run that trained it), with its lineage.

    The artifact (type `model`, named `model_artifact_name`) holds the manifest facts as metadata
    (`MODEL_ARTIFACT_KEYS` + `parent_artifact`) and *references* the checkpoint files (file:// URIs
    with checksums): the zoo directory stays the store of record, nothing is copied or uploaded. A
    derived model's run also declares its parent's artifact as input (`run.use_artifact`), which draws
    the lineage graph parent -> attack run -> model; W&B allows that only online, so offline runs
    carry the parent in the metadata alone.

    Args:
        run: an open `wandb` run (e.g. a `WandbLogger`'s `experiment`); a disabled run is skipped.
        record: the model's manifest record (`bench.zoo`).
        checkpoint: its `models/<id>.safetensors` (the `<id>.json` beside it is referenced too).
    """
    if getattr(run, "disabled", False) or getattr(run, "failed", False):  # a GuardedRun that failed already
        return
    try:
        _log_zoo_model(run, record, Path(checkpoint))
    except Exception as err:  # the model is in the manifest already; only its W&B artifact is lost
        fall_back(f"logging zoo model {record['model_id']} as an artifact", err,
                  "offline" if getattr(run, "offline", True) else "online")


def _log_zoo_model(run: Any, record: dict[str, Any], checkpoint: Path) -> None:
    import wandb

    metadata = {key: record.get(key) for key in MODEL_ARTIFACT_KEYS}
    parent = record.get("parent")
    metadata["parent_artifact"] = model_artifact_name(parent) if parent else None
    if parent and not getattr(run, "offline", True):
        try:
            run.use_artifact(f"{model_artifact_name(parent)}:latest", type="model")
        except Exception as err:  # e.g. the parent was built while W&B was off: the metadata still names it
            log.warning("W&B lineage: parent artifact %s of %s not found (%s); the parent stays in the metadata only.",
                        model_artifact_name(parent), record["model_id"], err)
    artifact = wandb.Artifact(name=model_artifact_name(record["model_id"]), type="model",
                              description=record.get("provenance"), metadata=metadata)
    for path in (checkpoint, checkpoint.with_suffix(".json")):
        if path.is_file():
            artifact.add_reference(path.resolve().as_uri(), name=path.name)
    run.log_artifact(artifact)


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


def roc_table(result: dict[str, Any]) -> tuple[list[str], list[list[float]]]:
    """The result's stored ROC points as W&B table columns and rows (one row per point, in order).

    The points are the ones the metrics were computed from (`metrics.roc`, float64, every point kept),
    so the interactive plot shows exactly the curve whose AUC and TPR@FPR the result reports.
    """
    roc = result["metrics"]["roc"]
    return ["fpr", "tpr"], [[float(f), float(t)] for f, t in zip(roc["fpr"], roc["tpr"], strict=True)]


def log_result(cfg: DictConfig, result: dict[str, Any], path: Path) -> str | None:
    """Log one result to W&B (after it is on disk): config, summary metrics, per-model table (with each
    suspect's test accuracy, source agreement and accuracy drop), the ROC as an interactive line plot
    of the stored points (`roc_curve`) and as an image, score and score-vs-accuracy-drop plots, and the
    result JSON as an artifact. Returns the run folder, or None."""
    name = f"{result['zoo']['name']}/{result['method']['name']}/{result['config_sha256'][:8]}-s{result['seed']}"
    return with_fallback(f"logging result {name}", cfg, lambda settings: _log_result(settings, name, result, path))


def _log_result(settings: dict[str, Any], name: str, result: dict[str, Any], path: Path) -> str:
    import wandb

    artifact = (f"result-{result['config_sha256'][:8]}-s{result['seed']}", "result", path)
    with _wandb_run(settings, name, "eval", config=result["config"], artifact=artifact) as run:
        metrics = result["metrics"]
        summary = {"auc": metrics["auc"], "n_positive": metrics["n_positive"], "n_negative": metrics["n_negative"],
                   "queries_per_suspect": result["queries_per_suspect"], **{f"timing/{k}": v for k, v in result["timing_s"].items()}}
        summary.update({f"tpr_at_fpr/{k}": v for k, v in metrics["tpr_at_fpr"].items()})
        for k, entry in (metrics.get("tpr_resolution") or {}).items():  # what the negatives certify (docs/statistics.md)
            summary.update({f"tpr_resolution/{k}/label": entry["label"], f"tpr_resolution/{k}/tpr": entry["tpr"],
                            f"tpr_resolution/{k}/fpr_upper": entry["fpr_upper"]})
        summary.update({f"ties/{k}": v for k, v in (metrics.get("ties") or {}).items()})
        summary.update({f"decision/{k}/{f}": d[f] for k, d in (metrics.get("decision") or {}).items() for f in ("tpr", "fpr")})
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
            frontier = method_frontier([result], FRONTIER_FPR)  # this trial's (docs/frontier.md)
            images["frontier"] = plot_frontier(name, frontier, plots_dir / "frontier.png")
            run.summary.update(frontier_summary(frontier))
        roc_columns, roc_rows = roc_table(result)
        roc_chart = wandb.plot.line(wandb.Table(columns=roc_columns, data=roc_rows), "fpr", "tpr",
                                    title=f"ROC {result['method']['name']} (AUC {metrics['auc']:.3f})")
        run.log({"per_model": table, "roc_curve": roc_chart, **{k: wandb.Image(str(v)) for k, v in images.items()}})
        run_dir = run.dir
    return run_dir  # after the block: the artifact is attached when it closes


def frontier_summary(frontier: dict[str, Any]) -> dict[str, float]:
    """W&B summary keys of one trial's frontier: `evasion_cost/<family>` (points) where a configuration
    evaded, else `evasion_none_up_to/<family>` (the largest drop the grid reached); `.../overall` likewise."""
    out: dict[str, float] = {}
    for name, summary in [*frontier["families"].items(), ("overall", frontier["overall"])]:
        if summary["evasion_cost"] is not None:
            out[f"evasion_cost/{name}"] = float(summary["evasion_cost"])
        elif summary["max_drop_reached"] is not None:
            out[f"evasion_none_up_to/{name}"] = float(summary["max_drop_reached"])
    return out


def log_sweep(cfg: DictConfig, name: str, csv: Path, plots: list[Path]) -> str | None:
    """Log a sweep's report (its CSV as a table, its heatmaps / line plots as images) as one W&B run
    in the sweep's group; the per-point runs are logged by `log_result`. Returns the run folder."""
    return with_fallback(f"logging sweep {name}", cfg, lambda settings: _log_sweep({**settings, "group": name}, name, csv, plots))


def _log_sweep(settings: dict[str, Any], name: str, csv: Path, plots: list[Path]) -> str:
    import pandas as pd
    import wandb

    with _wandb_run(settings, f"sweep/{name}", "sweep", artifact=(f"sweep-{name}", "sweep", csv)) as run:
        run.log({"points": wandb.Table(dataframe=pd.read_csv(csv)),
                 **{f"plots/{p.stem}": wandb.Image(str(p)) for p in plots}})
        run_dir = run.dir
    return run_dir


def leaderboard_tracking(mode: str, cache_dir: str | Path, project: str = "fpbench") -> DictConfig:
    """The tracking config of `fpbench leaderboard --wandb MODE` (no recipe there): W&B files under
    ``cache_dir`` as a run's would be, the runs grouped as ``leaderboard``."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"tracking": {"wandb": {"mode": mode, "project": project, "entity": None,
                                                    "group": "leaderboard", "dir": str(cache_dir)}},
                             "zoo": {"name": "leaderboard"}})  # fmt: skip


def log_board(cfg: DictConfig, board: Board, results_dir: str | Path) -> str | None:
    """Log a board as one W&B run (job type ``leaderboard``): the ``leaderboard`` and ``comparisons`` tables
    (raw fields: :mod:`bench.report.wandb_board`), the figures under ``plots/<zoo>/`` and the board's
    CSV as an artifact. Returns the run folder, or None when W&B is disabled or failed (guarded)."""
    root = Path(results_dir)
    name = f"leaderboard/{root.resolve().name}"
    return with_fallback(f"logging {name}", cfg, lambda settings: _log_board(settings, name, board, root))


def _log_board(settings: dict[str, Any], name: str, board: Board, root: Path) -> str:
    import wandb

    csv = root / "leaderboard.csv"
    artifact = ("leaderboard-" + root.resolve().name, "leaderboard", csv) if csv.is_file() else None
    with _wandb_run(settings, name, "leaderboard", config={"fpr_targets": board.fpr_targets, "budget": board.budget},
                    artifact=artifact) as run:
        run.summary.update(board_summary(board))
        tables = {key: wandb.Table(dataframe=frame) for key, frame in board_frames(board).items()}
        run.log({**tables, **{key: wandb.Image(str(path)) for key, path in board_figures(root).items()}})
        run_dir = run.dir
    return run_dir
