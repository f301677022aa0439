"""Figures of the evasion frontier (`bench.report.frontier`): one frontier per method, one heatmap per zoo.

- `plot_frontier`: detection (mean over trials, bars from the lowest to the highest trial) against the
  accuracy drop, a line per family, the 0.5 evasion line dashed;
- `plot_evasion_heatmap`: methods x families, each cell the median evasion cost in points; a family
  where nothing evaded shows "none ≤ X" on a grey cell (a lower bound, not a cost).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.io import inside
from bench.report.frontier import EVADES_BELOW, FRONTIER_FPR, results_frontiers
from bench.report.plots import _colours, _figure, _save, _wrap

log = logging.getLogger(__name__)


def plot_frontier(label: str, frontier: Mapping[str, Any], path: str | Path) -> Path:
    """One method's frontier: a line per family through its configurations, ordered by accuracy drop."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    families = frontier["families"]
    for (name, family), colour in zip(families.items(), _colours(len(families)), strict=True):
        points = [p for p in family["points"] if p["accuracy_drop"] is not None]
        if not points:
            continue
        x = [p["accuracy_drop"] for p in points]
        y = [p["detection"] for p in points]
        low = [p["detection"] - p["detection_min"] for p in points]
        high = [p["detection_max"] - p["detection"] for p in points]
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, color=colour, label=name)
    ax.axhline(EVADES_BELOW, color="grey", linestyle="--", linewidth=1, label=f"evades below {EVADES_BELOW}")
    ax.set_xlabel("accuracy drop of the stolen model (points)")
    ax.set_ylabel(f"detection at the FPR {frontier['fpr']:g} threshold")
    ax.set_ylim(-0.05, 1.05)
    trials = frontier["trials"]
    ax.set_title(_wrap(f"{label}: evasion frontier ({trials} trial{'s' if trials != 1 else ''})", 60), fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_evasion_heatmap(frontiers: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Methods x families: the median evasion cost (points); grey "none ≤ X" where no configuration evaded."""
    import numpy as np

    methods = list(frontiers)
    families = sorted({name for f in frontiers.values() for name in f["families"]})
    values = np.full((len(methods), len(families)), np.nan)
    texts = [["" for _ in families] for _ in methods]
    for i, method in enumerate(methods):
        for j, name in enumerate(families):
            summary = frontiers[method]["families"].get(name)
            if summary is None:
                continue
            if summary["evasion_cost"] is not None:
                values[i, j] = summary["evasion_cost"]
                texts[i][j] = f"{summary['evasion_cost']:.1f}"
            elif summary["max_drop_reached"] is not None:
                texts[i][j] = f"none\n≤ {summary['max_drop_reached']:.1f}"
    fig = _figure(1.6 + 1.5 * max(len(families), 1), 1.2 + 0.45 * max(len(methods), 1))
    ax = fig.add_subplot()
    ax.set_facecolor("#dddddd")  # cells with no evading configuration stay grey
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    for i in range(len(methods)):
        for j in range(len(families)):
            ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=7,
                    color="white" if not np.isnan(values[i, j]) else "black")
    ax.set_xticks(range(len(families)), [_wrap(f, 14) for f in families], fontsize=8)
    ax.set_yticks(range(len(methods)), [_wrap(m, 40) for m in methods], fontsize=8)
    fig.colorbar(image, ax=ax, label="evasion cost (accuracy points)")
    ax.set_title(title or "evasion cost per family (median over trials)", fontsize=10)
    return _save(fig, path)


def file_name(label: str) -> str:
    """A row label as a file name: `cae[pool_seeds=1,xi=0.25]` -> `cae_pool_seeds=1_xi=0.25`."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label).strip("_") or "row"


def write_frontier_plots(results_dir: str | Path, fpr: float = FRONTIER_FPR) -> list[Path]:
    """`plots/<zoo>/evasion_cost.png` and `plots/<zoo>/frontier/<row>.png` for every zoo whose results
    record the suspects' test accuracies (older results do not: no accuracy drop, no frontier)."""
    root = Path(results_dir)
    written: list[Path] = []
    for zoo, frontiers in results_frontiers(root, fpr).items():
        drawable = {label: f for label, f in frontiers.items()
                    if any(p["accuracy_drop"] is not None for fam in f["families"].values() for p in fam["points"])}
        if not drawable:
            continue
        try:
            folder = inside(root / "plots", zoo)
        except ValueError as err:  # a hand-made result file: its plots would land outside the results tree
            log.warning("No frontier plots for zoo %r: %s", zoo, err)
            continue
        written.append(plot_evasion_heatmap(drawable, folder / "evasion_cost.png",
                                            f"{zoo}: evasion cost per family (median over trials, FPR {fpr:g})"))
        written += [plot_frontier(label, f, folder / "frontier" / f"{file_name(label)}.png")
                    for label, f in drawable.items()]
    return written
