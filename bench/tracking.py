"""Tracking: files on disk first, then Weights & Biases (offline by default, no account needed).

Every W&B file goes under `tracking.wandb.dir` (default: the cache dir); `mode: disabled` turns W&B
off entirely (tests), `online` is for users with an account. What is logged, and why: docs/tracking.md.

W&B never costs a result: every W&B call (opening a run, logging, artifacts, finishing) goes through
one guard. On any failure it logs one error naming what failed, falls back (online -> offline ->
disabled) for the rest of the process, and the work goes on; `sync_lines` says how to upload the
offline runs afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

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
from bench.wandb_runs import (  # noqa: F401  (W&B runs without the report layer; re-exported here)
    MODEL_ARTIFACT_KEYS,
    ONLINE_INIT_TIMEOUT_S,
    GuardedRun,
    GuardedWandbLogger,
    _wandb_run,
    log_zoo_model,
    model_artifact_name,
    training_logger_factory,
    wandb_settings,
    with_fallback,
)

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
                   "queries_per_suspect": result["queries_per_suspect"],
                   **{f"timing/{k}": v for k, v in result["timing_s"].items()}}
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
