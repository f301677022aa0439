"""Sweep report: a CSV of every (point, trial) and plots on the swept axes.

Two swept keys give heatmaps of AUC and of the TPR at the smallest FPR target the results carry
(``eval.fpr_targets``; T1%F by default, labelled by what the negatives certify: `tpr_label`) (mean over
trials; the paper's Fig. 11 is AUC over brake factor x length); one swept key gives line plots of the
same two figures with a 95% band over trials (Fig. 10). One swept key with non-numeric values (a
deployment sweep over `zoo.deploy`) gives one heatmap of every method against the values per figure
(AUC and every FPR target), in the sweep file's order, and, when the rows carry the deployed positives'
utility, AUC against that utility.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.io import atomic_write_text
from bench.metrics import format_fpr, fpr_label
from bench.report.plots import _figure, _save
from bench.stats import certifies


def metrics(frame: pd.DataFrame, every_target: bool = False) -> list[tuple[str, str]]:
    """``(column, label)`` of the plotted figures: AUC and the TPR at the smallest FPR target present
    (`every_target`: at every target present, e.g. T1%F and T10%F)."""
    present = frame.dropna(axis=1, how="all").columns  # a target only other methods' results carry is skipped
    targets = sorted(float(c.removeprefix("tpr@")) for c in present if str(c).startswith("tpr@"))
    n_negative = int(frame["n_negative"].min()) if "n_negative" in present else None
    tpr = [(f"tpr@{format_fpr(t)}", tpr_label(t, n_negative)) for t in (targets if every_target else targets[:1])]
    return [("auc", "AUC"), *tpr]


def tpr_label(fpr_target: float, n_negative: int | None) -> str:
    """What a plotted `tpr_at_fpr` figure may be called (docs/statistics.md): `T1%F` when the negatives
    certify the target (or their count is unknown: rows written before it was recorded), `TPR@0FP` when
    the target allows no false positive on them, else the bound it is read at, marked uncertified."""
    if n_negative is None or certifies(fpr_target, n_negative):
        return fpr_label(fpr_target)
    if math.floor(fpr_target * n_negative + 1e-9) == 0:
        return "TPR@0FP"
    return f"TPR@FPR≤{fpr_target:g} (uncertified, n−={n_negative})"


def _axis(frame: pd.DataFrame, key: str) -> str:
    """Plot ADV-TRA's half_length on the paper's axis (samples per trajectory) when it is known."""
    if key.endswith("half_length") and "trajectory_length" in frame:
        return "trajectory_length"
    return key


def _heatmap(frame: pd.DataFrame, x: str, y: str, metric: str, title: str, path: Path, variant: str,
             columns: list[Any] | None = None) -> Path:
    """Mean `metric` over trials on a y x x grid; `columns` fixes the order of x (default: sorted)."""
    table = frame.groupby([y, x])[metric].mean().unstack(x).sort_index()
    table = table[columns] if columns is not None else table.sort_index(axis=1)
    fig = _figure(1.2 + 0.9 * table.shape[1], 1.0 + 0.6 * table.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(table.to_numpy(dtype=float), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(table.shape[1]), [f"{v:g}" if isinstance(v, float) else str(v) for v in table.columns],
                  rotation=0 if columns is None else 40, ha="center" if columns is None else "right")
    ax.set_yticks(range(table.shape[0]), [f"{v:g}" if isinstance(v, float) else str(v) for v in table.index])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label=title)
    ax.set_title(f"{variant}: {title} (mean over trials)")
    return _save(fig, path)


def _lines(frame: pd.DataFrame, x: str, path: Path, variant: str) -> Path:
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    for metric, title in metrics(frame):
        if metric not in frame:
            continue
        stats = frame.groupby(x)[metric].agg(["mean", "std", "count"]).sort_index()
        half = 1.96 * stats["std"].fillna(0.0) / np.sqrt(stats["count"])
        xs = stats.index.to_numpy(dtype=float)
        ax.plot(xs, stats["mean"], marker="o", label=title)
        ax.fill_between(xs, (stats["mean"] - half).clip(0, 1), (stats["mean"] + half).clip(0, 1), alpha=0.2)
    ax.set_xlabel(x)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("metric (mean, 95% band over trials)")
    ax.set_title(variant)
    ax.legend()
    return _save(fig, path)


def _utility(frame: pd.DataFrame, x: str, path: Path) -> Path:
    """Detection (AUC) against the deployed positives' clean test accuracy, one line per method, a point per value of `x`."""
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    for variant, part in frame.groupby("variant"):
        stats = part.groupby(x, sort=False)[["utility_positives", "auc"]].mean().sort_values("utility_positives")
        ax.plot(stats["utility_positives"], stats["auc"], marker="o", label=str(variant))
    ax.set_xlabel("positives' test accuracy through the deployment (mean)")
    ax.set_ylabel("AUC (mean over trials)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("detection against utility, one point per deployment")
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_sweep_report(name: str, keys: list[str], rows: list[dict[str, Any]], out_dir: str | Path) -> tuple[Path, list[Path]]:
    """Write `<out_dir>/points.csv` and the plots that fit the number of swept keys."""
    out = Path(out_dir)
    frame = pd.DataFrame(rows)
    if "variant" not in frame:  # rows written before variants were recorded: one variant per method
        frame["variant"] = frame["method"]
    frame = frame.sort_values(["variant", "point", "trial"]).reset_index(drop=True)
    csv = out / "points.csv"
    atomic_write_text(csv, frame.to_csv(index=False, float_format="%.6g"))
    plots: list[Path] = []
    if len(keys) == 1 and not pd.api.types.is_numeric_dtype(frame[keys[0]]):  # e.g. zoo.deploy: one heatmap of all methods
        order = list(dict.fromkeys(frame.sort_values("point")[keys[0]]))  # the sweep file's order
        for metric, title in metrics(frame, every_target=True):
            plots.append(_heatmap(frame, keys[0], "variant", metric, title, out / f"methods_{metric.replace('@', '_at_')}"
                                  "_heatmap.png", "methods", columns=order))
        if "utility_positives" in frame:
            plots.append(_utility(frame, keys[0], out / "detection_vs_utility.png"))
        return csv, plots
    for variant, part in frame.groupby("variant"):
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(variant)).strip("_")  # adv_tra[score=agreement] -> adv_tra_score_agreement
        if len(keys) == 2:
            x, y = _axis(part, keys[0]), _axis(part, keys[1])
            for metric, title in metrics(part):
                plots.append(_heatmap(part, x, y, metric, title, out / f"{stem}_{metric.replace('@', '_at_')}_heatmap.png",
                                      str(variant)))  # fmt: skip
        elif len(keys) == 1:
            plots.append(_lines(part, _axis(part, keys[0]), out / f"{stem}_lines.png", str(variant)))
    return csv, plots
