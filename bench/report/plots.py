"""Plots of result files: ROC curves, positive/negative score boxes, per-group mean-score heatmap,
score against accuracy drop (utility beside detection).

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never through
pyplot, so nothing global changes (no backend switch, no open-figure registry, nothing shown).
Matplotlib keeps a font cache in its config folder: when ``MPLCONFIGDIR`` is unset, the first plot
sets it to ``<tmp>/fpbench-matplotlib-<user>`` so a read-only or shared home is never written to;
a value the user set is respected.
"""

from __future__ import annotations

import getpass
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.io import inside
from bench.report.trials import row_key
from bench.report.variants import method_config, variant_label
from bench.results import iter_results

NEGATIVE_KINDS = ("SAST", "SADT", "DAST", "DADT")

log = logging.getLogger(__name__)


def _figure(width: float, height: float) -> Any:
    if "MPLCONFIGDIR" not in os.environ:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "user"
        os.environ["MPLCONFIGDIR"] = str(Path(tempfile.gettempdir()) / f"fpbench-matplotlib-{user}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png", metadata={"Software": None})
    return target


def _run_key(result: dict[str, Any]) -> tuple[str, str]:
    """One legend entry per leaderboard row: (method, "<version>-<sha256 of the config without trial seeds>")."""
    _, method, version, config, _ = row_key(result)  # plots show every positive: the `all` view
    return method, f"{version}-{config}"


def _labels(results: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Legend label per row, as on the leaderboard: the method named by what its config changes from the
    method's defaults (``adv_tra[score=agreement]``); the config id is added where a label repeats."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for result in sorted(results, key=lambda r: (*_run_key(r), r["seed"])):
        first.setdefault(_run_key(result), result)
    names = {key: variant_label(key[0], method_config(r), key[1].split("-")[-1][:8]) for key, r in first.items()}
    repeats = defaultdict(int)
    for name in names.values():
        repeats[name] += 1
    return {key: _wrap(name if repeats[name] == 1 else f"{name} [{key[1].split('-')[-1][:8]}]")
            for key, name in names.items()}  # fmt: skip


def _wrap(label: str, width: int = 36) -> str:
    """Break a long variant label after commas so legends and tick labels stay narrow."""
    lines = [""]
    for part in label.split(","):
        if lines[-1] and len(lines[-1]) + len(part) + 1 > width:
            lines[-1] += ","
            lines.append("  " + part)
        else:
            lines[-1] += ("," if lines[-1] else "") + part
    return "\n".join(lines)


def _by_run(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for result in sorted(results, key=lambda r: (*_run_key(r), r["seed"])):
        runs[_run_key(result)].append(result)
    return dict(sorted(runs.items()))


def plot_roc(results: list[dict[str, Any]], path: str | Path) -> Path:
    """ROC curves of all results (one zoo) on one figure; one colour per method config.

    Args:
        results: Result dicts of one zoo; every seed is drawn, the legend shows the mean AUC.
        path: PNG file to write.

    Returns:
        ``path`` as a ``Path``.
    """
    fig = _figure(6, 5)
    ax = fig.add_subplot()
    labels = _labels(results)
    colours = _colours(len(labels))
    for colour, (key, runs) in zip(colours, _by_run(results).items()):
        mean_auc = float(np.mean([r["metrics"]["auc"] for r in runs]))
        suffix = f", {len(runs)} trials" if len(runs) > 1 else ""
        for i, run in enumerate(runs):
            roc = run["metrics"]["roc"]
            label = f"{labels[key]} (AUC {mean_auc:.3f}{suffix})" if i == 0 else None
            ax.plot(roc["fpr"], roc["tpr"], color=colour, alpha=1.0 if i == 0 else 0.45, label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate", ylabel="true-positive rate")
    ax.set_title(_title("ROC", results))
    if labels:
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_scores_box(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Box plot of positive vs negative suspect scores per method config (all seeds pooled).

    Args:
        results: Result dicts of one zoo.
        path: PNG file to write.

    Returns:
        ``path`` as a ``Path``.
    """
    labels = _labels(results)
    runs = _by_run(results)
    fig = _figure(max(4.0, 1.4 * len(runs) + 1.5), 4.5)
    ax = fig.add_subplot()
    for offset, role, colour in ((-0.2, "positive", "tab:red"), (0.2, "negative", "tab:blue")):
        data = [[m["score"] for r in group for m in r["per_model"] if m["role"] == role] for group in runs.values()]
        positions = [i + offset for i in range(len(data))]
        kept = [(p, d) for p, d in zip(positions, data) if d]
        if kept:
            box = ax.boxplot([d for _, d in kept], positions=[p for p, _ in kept], widths=0.35, patch_artist=True)
            for patch in box["boxes"]:
                patch.set(facecolor=colour, alpha=0.5)
        ax.plot([], [], color=colour, linewidth=8, alpha=0.5, label=f"{role}s")
    ax.set_xticks(range(len(runs)), [labels[k] for k in runs], rotation=20, ha="right")
    ax.set_ylabel("score (higher = more likely derived)")
    ax.set_title(_title("Scores", results))
    ax.legend(fontsize="small")
    return _save(fig, path)


def _group_columns(results: list[dict[str, Any]]) -> list[str]:
    positive = sorted({m["group"] for r in results for m in r["per_model"] if m["role"] == "positive"})
    negative = {m["group"] for r in results for m in r["per_model"] if m["role"] == "negative"}
    known = [k for k in NEGATIVE_KINDS if k in negative]
    return positive + known + sorted(negative - set(known))


def plot_group_heatmap(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Mean score per attack (positives) and kind (negatives): rows = method configs, values shown.

    Colours are scaled per row (methods' scores live on different scales); the annotated numbers are
    the raw means over all seeds' suspects of that group.

    Args:
        results: Result dicts of one zoo.
        path: PNG file to write.

    Returns:
        ``path`` as a ``Path``.
    """
    labels = _labels(results)
    runs = _by_run(results)
    columns = _group_columns(results)
    values = np.full((len(runs), len(columns)), np.nan)
    for i, group in enumerate(runs.values()):
        for j, column in enumerate(columns):
            scores = [m["score"] for r in group for m in r["per_model"] if m["group"] == column]
            if scores:
                values[i, j] = float(np.mean(scores))
    low = np.nanmin(values, axis=1, keepdims=True) if values.size else values
    span = (np.nanmax(values, axis=1, keepdims=True) - low) if values.size else values
    scaled = np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.5)
    fig = _figure(max(4.0, 0.8 * len(columns) + 2.5), max(2.5, 0.6 * len(runs) + 1.5))
    ax = fig.add_subplot()
    ax.imshow(np.ma.masked_invalid(scaled), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="small",
                    color="black" if scaled[i, j] > 0.6 else "white")  # fmt: skip
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(runs)), [labels[k] for k in runs])
    ax.set_title(_title("Mean score per group (colour scaled per row)", results))
    return _save(fig, path)


def _accuracy_drops(result: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    """(per_model record, source test accuracy - the suspect's) for the suspects with a recorded accuracy."""
    source_acc = result["zoo"].get("source_test_acc")
    if source_acc is None:
        return []
    return [(m, source_acc - m["test_acc"]) for m in result["per_model"] if m.get("test_acc") is not None]


def plot_score_vs_accuracy_drop(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Utility beside detection: per method config, each suspect's score against its accuracy drop.

    x = the source's test accuracy - the suspect's (right: a less useful model), y = the score.
    Positives are coloured by attack, negatives grey, every trial's suspects pooled. A positive low
    on the y axis and near x = 0 evades detection while staying as useful as the source.

    Args:
        results: Result dicts of one zoo; suspects without a recorded test accuracy are left out.
        path: PNG file to write.

    Returns:
        ``path`` as a ``Path``.
    """
    labels = _labels(results)
    runs = _by_run(results)
    attacks = sorted({m["group"] for r in results for m in r["per_model"] if m["role"] == "positive"})
    colour_of = dict(zip(attacks, _colours(len(attacks))))
    columns = min(3, max(1, len(runs)))
    rows = max(1, -(-len(runs) // columns))
    fig = _figure(4.0 * columns + 1.8, 3.4 * rows)
    for index, (key, group) in enumerate(runs.items()):
        ax = fig.add_subplot(rows, columns, index + 1)
        points = [point for result in group for point in _accuracy_drops(result)]
        negatives = [(drop, m["score"]) for m, drop in points if m["role"] == "negative"]
        if negatives:
            ax.scatter(*zip(*negatives), color="grey", marker="x", alpha=0.7, label="negatives")
        for attack in attacks:
            mine = [(drop, m["score"]) for m, drop in points if m["role"] == "positive" and m["group"] == attack]
            if mine:
                ax.scatter(*zip(*mine), color=colour_of[attack], alpha=0.8, label=attack)
        if not points:
            ax.text(0.5, 0.5, "no suspect test accuracy recorded", ha="center", va="center", transform=ax.transAxes)
        ax.axvline(0.0, color="grey", linestyle=":", linewidth=1)
        ax.set(title=labels[key], xlabel="accuracy drop vs source", ylabel="score")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="grey", marker="x", linestyle="", label="negatives")]
    handles += [Line2D([], [], color=colour_of[a], marker="o", linestyle="", label=a) for a in attacks]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", title="suspects")
    fig.suptitle(_title("Score vs accuracy drop", results))
    return _save(fig, path)


def budget_curve(runs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(queries per suspect, AUC) of one method config's budgets, means over its trials, by budget; budgets
    the whole fingerprint fits collapse onto one point, and no-query points (the guards) are left out."""
    by_budget: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        for entry in run.get("budgets") or []:
            if "auc" in entry:
                by_budget[entry["budget"]].append((float(entry["queries_per_suspect"]), float(entry["auc"])))
    points = {(round(float(np.mean([q for q, _ in v])), 6), float(np.mean([a for _, a in v]))) for v in by_budget.values()}
    return sorted(p for p in points if p[0] > 0)


def plot_budget_auc(results: list[dict[str, Any]], path: str | Path) -> Path:
    """AUC against queries per suspect (log x), one line per method config (docs/metrics.md, query budgets)."""
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    labels = _labels(results)
    for colour, (key, runs) in zip(_colours(len(labels)), _by_run(results).items()):
        points = budget_curve(runs)
        if points:
            ax.plot([q for q, _ in points], [a for _, a in points], marker="o", color=colour, label=labels[key])
    ax.set_xscale("log")
    ax.set(ylim=(-0.01, 1.01), xlabel="queries per suspect (log scale)", ylabel="AUC")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_title(_title("AUC against query budget", results))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def has_accuracy(results: list[dict[str, Any]]) -> bool:
    """True when some suspect of some result has a recorded test accuracy (and the source has one)."""
    return any(_accuracy_drops(result) for result in results)


def _title(what: str, results: list[dict[str, Any]]) -> str:
    zoos = sorted({r["zoo"]["name"] for r in results})
    return f"{what}: {', '.join(zoos)}" if zoos else what


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def write_plots(results_dir: str | Path) -> list[Path]:
    """Write ``plots/<zoo>/{roc,scores_box,groups_heatmap}.png`` for every zoo with result files,
    ``score_vs_accuracy_drop.png`` where suspects' test accuracies are recorded, and ``budget_auc.png``
    where results carry scores against query budget.

    Args:
        results_dir: Root of the results tree.

    Returns:
        The written paths, sorted by zoo then plot.

    Raises:
        ResultError: If a result file does not validate.
    """
    root = Path(results_dir)
    by_zoo: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, result in iter_results(root):
        by_zoo[result["zoo"]["name"]].append(result)
    written: list[Path] = []
    for zoo in sorted(by_zoo):
        try:
            folder = inside(root / "plots", zoo)
        except ValueError as err:  # a hand-made result file: its plots would land outside the results tree
            log.warning("No plots for zoo %r: %s", zoo, err)
            continue
        written.append(plot_roc(by_zoo[zoo], folder / "roc.png"))
        written.append(plot_scores_box(by_zoo[zoo], folder / "scores_box.png"))
        written.append(plot_group_heatmap(by_zoo[zoo], folder / "groups_heatmap.png"))
        if has_accuracy(by_zoo[zoo]):  # results written before suspects' accuracies were recorded have none
            written.append(plot_score_vs_accuracy_drop(by_zoo[zoo], folder / "score_vs_accuracy_drop.png"))
        if any(r.get("budgets") for r in by_zoo[zoo]):  # results written with eval.budgets
            written.append(plot_budget_auc(by_zoo[zoo], folder / "budget_auc.png"))
    return written
