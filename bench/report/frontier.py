"""The evasion frontier (issue "Threat models, not a mixture", item 3): detection against utility, per family.

For one method's result files (one per trial), every positive configuration (the suspects of one
attack config, i.e. one ``group``, seeds pooled) becomes a point: its **accuracy drop** (the source's
test accuracy minus the positives', in points, mean over the configuration's seeds) and its
**detection**, the share of its positives scoring strictly above the threshold calibrated on that
trial's negatives at ``fpr`` (:func:`bench.stats.columns.calibrated_threshold`, the rule
`fpbench verify` decides by). Per family:

- the **frontier**: the points sorted by accuracy drop, detection as mean (min, max) over trials;
- the **evasion cost**: per trial, the smallest accuracy drop among the family's configurations whose
  positives evade (detection < 0.5); over trials its median and range. When no configuration evades
  in a trial, the cost is "none found up to X points", X the family's largest drop there: a lower
  bound, never a number the grid did not reach.

The overall evasion cost of a trial is the minimum over its families. Families come from each
positive's ``family`` (written by the evaluation loop since the threat models were recorded as data);
an older result's positives get theirs from their attack label through :data:`FAMILY_OF_ATTACK`,
which a test keeps equal to the attack classes' ``family``. Light on purpose (numpy only), like the
rest of the report layer. Reading and limits: docs/frontier.md.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.budgets import DEFAULT_BUDGET
from bench.io import atomic_write_text
from bench.report.positive_sets import split_label
from bench.report.trials import row_key, unique_trials
from bench.report.variants import method_config, variant_label
from bench.results import iter_results
from bench.stats.columns import calibrated_threshold, certifies

FRONTIER_FPR = 0.01  # the "calibrated 1 % FPR threshold"
EVADES_BELOW = 0.5  # a configuration evades when fewer than half of its positives are detected
# The attack classes' `family` (bench/zoo/attacks), for results written before positives carried it.
FAMILY_OF_ATTACK = {"ftll": "fine-tuning", "ftal": "fine-tuning", "rtll": "fine-tuning", "rtal": "fine-tuning",
                    "prune": "pruning", "adv_train": "adversarial training", "extract": "extraction",
                    "quantize": "quantisation", "ftsmooth": "adaptive"}


@dataclass
class Point:
    """One positive configuration in one trial."""

    group: str
    family: str
    strength: dict[str, Any] | None
    n: int
    accuracy_drop: float | None  # points; None when the result lacks test accuracies
    detection: float


@dataclass
class FamilyFrontier:
    """One family of one method over its trials."""

    family: str
    points: list[dict[str, Any]] = field(default_factory=list)  # per group: drop, detection mean/min/max, trials
    costs: list[float | None] = field(default_factory=list)  # per trial: evasion cost in points, None = none found
    reached: list[float | None] = field(default_factory=list)  # per trial: the family's largest accuracy drop


def family_of(record: Mapping[str, Any]) -> str:
    """A positive's family: its own ``family``, else from its attack label's steps (" + " between families)."""
    if record.get("family"):
        return str(record["family"])
    names = split_label(str(record.get("attack") or record.get("group") or ""))
    families = [FAMILY_OF_ATTACK.get(name, "other") for name in names] or ["other"]
    return " + ".join(dict.fromkeys(families))


def score_at(record: Mapping[str, Any], result: Mapping[str, Any], budget: int | None) -> float | None:
    """A suspect's score as a verifier limited to ``budget`` queries per suspect would see it: the main score
    when ``budget`` is None or the whole fingerprint fits it, else its ``budget_scores`` entry (None: not
    measured at that budget; docs/metrics.md, "Scores against query budget")."""
    if budget is None or float(result.get("queries_per_suspect") or 0.0) <= budget:
        return float(record["score"])
    value = (record.get("budget_scores") or {}).get(str(budget))
    return None if value is None else float(value)


def trial_points(result: Mapping[str, Any], fpr: float, budget: int | None = None) -> list[Point] | None:
    """Every positive configuration of one result file as a point of its family's frontier; with ``budget``,
    scored at that many queries per suspect (:func:`score_at`). None when a suspect has no score there."""
    per_model = result["per_model"]
    scores = [score_at(r, result, budget) for r in per_model]
    if None in scores:
        return None
    per_model = [{**r, "score": s} for r, s in zip(per_model, scores, strict=True)]
    negatives = [float(r["score"]) for r in per_model if r["role"] == "negative"]
    threshold = calibrated_threshold(negatives, fpr)
    source_acc = (result.get("zoo") or {}).get("source_test_acc")
    configs: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in per_model:
        if record["role"] == "positive":
            configs.setdefault((str(record["group"]), _strength_key(record)), []).append(record)
    points = []
    for group, records in _configurations(configs).items():
        accs = [float(r["test_acc"]) for r in records if r.get("test_acc") is not None]
        drop = (None if source_acc is None or len(accs) < len(records)
                else 100 * (float(source_acc) - statistics.fmean(accs)))
        points.append(Point(group=group, family=family_of(records[0]), strength=records[0].get("strength"),
                            n=len(records), accuracy_drop=drop,
                            detection=sum(float(r["score"]) > threshold for r in records) / len(records)))
    return points


def _strength_key(record: Mapping[str, Any]) -> str:
    return json.dumps(record.get("strength"), sort_keys=True, default=str)


def _configurations(configs: Mapping[tuple[str, str], list[Mapping[str, Any]]]) -> dict[str, list[Mapping[str, Any]]]:
    """One entry per attack configuration, named by its group label. A zoo labels an expanded recipe entry by
    the keys the entry varies, so two entries that differ in a fixed key (e.g. `extract` with and without
    `arch: lenet`) share a label; their strengths tell them apart, and the label gets the keys whose values
    differ among them (`extract(labels_kind=soft) [arch=lenet]`, `[arch=None]`: the source's)."""
    by_label: dict[str, list[str]] = {}
    for label, strength in configs:
        by_label.setdefault(label, []).append(strength)
    out: dict[str, list[Mapping[str, Any]]] = {}
    for (label, strength), records in configs.items():
        if len(by_label[label]) == 1:
            out[label] = records
            continue
        mine = json.loads(strength) or {}
        others = [json.loads(s) or {} for s in by_label[label]]
        differ = [k for k in sorted(mine) if len({json.dumps(o.get(k), default=str) for o in others}) > 1]
        out[f"{label} [{','.join(f'{k}={mine[k]}' for k in differ)}]"] = records
    return out


ResultFiles = Sequence[tuple[str, Mapping[str, Any]]]  # (path relative to the results dir, result)


def read_files(results_dir: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """The results tree's valid result files (`iter_results`) as (relative path, result) pairs."""
    root = Path(results_dir)
    return [(path.relative_to(root).as_posix(), result) for path, result in iter_results(root)]


def results_frontiers(results_dir: str | Path, fpr: float = 0.01, zoo: str | None = None,
                      files: ResultFiles | None = None, budget: int | None = None) -> dict[str, dict[str, Any]]:
    """Every row of the results tree (method and config, trials pooled, `all` positives) as a frontier, per zoo.

    Args:
        files: the tree's result files when the caller has read them (`build_board` has); None: read them.
        budget: score every suspect at this many queries per suspect (:func:`score_at`); None: the whole
            fingerprint.

    Returns:
        ``{zoo name: {row label: method_frontier(...)}}``, rows in the order of their labels.
    """
    files = read_files(results_dir) if files is None else files
    rows: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for _, result in unique_trials(files):
        if zoo is None or result["zoo"]["name"] == zoo:
            rows.setdefault(row_key(result), []).append(result)
    out: dict[str, dict[str, Any]] = {}
    for key, results in rows.items():
        method = results[0]["method"]["name"]
        label = variant_label(method, method_config(results[0]), key[3][:8])
        out.setdefault(key[0], {})[label] = method_frontier(results, fpr, budget)
    return {name: dict(sorted(found.items())) for name, found in sorted(out.items())}


def frontier_document(results_dir: str | Path, fpr: float = FRONTIER_FPR, zoo: str | None = None,
                      files: ResultFiles | None = None, budget: int = DEFAULT_BUDGET) -> str:
    """`frontier.md`: per zoo, the evasion costs of every row, each row's frontier points, and the costs at a
    matched ``budget`` of queries per suspect."""
    files = read_files(results_dir) if files is None else files  # read once for both tables
    frontiers = results_frontiers(results_dir, fpr, zoo, files)
    parts = ["# Evasion frontier", "",
             "Generated by `fpbench leaderboard` from the result files (definitions: docs/frontier.md in the fpbench "
             "repository); do not edit by hand."]
    at_budget = results_frontiers(results_dir, fpr, zoo, files, budget)
    for name, rows in frontiers.items():
        parts += ["", f"## {name}", "", frontier_markdown(rows).rstrip("\n").replace("\n### ", "\n#### ")]
        parts += ["", f"### At a matched budget of {budget} queries per suspect", "",
                  cost_table(at_budget.get(name, {})).rstrip("\n")]
    if not frontiers:
        parts += ["", "No result files."]
    return "\n".join(parts) + "\n"


def write_frontier(results_dir: str | Path, fpr: float = FRONTIER_FPR, files: ResultFiles | None = None) -> Path:
    """Write `<results_dir>/frontier.md` (`frontier_document`) atomically; returns its path."""
    path = Path(results_dir) / "frontier.md"
    atomic_write_text(path, frontier_document(results_dir, fpr, files=files))
    return path


def evasion_cost(points: Sequence[Point]) -> tuple[float | None, float | None]:
    """(the smallest accuracy drop among evading points or None, the largest drop reached or None without
    accuracies) of one family, one trial."""
    drops = [p.accuracy_drop for p in points if p.accuracy_drop is not None]
    evading = [p.accuracy_drop for p in points if p.accuracy_drop is not None and p.detection < EVADES_BELOW]
    return (min(evading) if evading else None), (max(drops) if drops else None)


def method_frontier(results: Sequence[Mapping[str, Any]], fpr: float = 0.01, budget: int | None = None) -> dict[str, Any]:
    """One method's frontier over its trials: families, their points and evasion costs, and the overall cost.

    With ``budget``, every suspect is scored at that many queries (:func:`score_at`); when a trial has no
    scores there the frontier is empty and ``measured`` is False (its cells read "not measured")."""
    families: dict[str, FamilyFrontier] = {}
    collected: dict[tuple[str, str], list[Point]] = {}
    per_trial: list[dict[str, tuple[float | None, float | None]]] = []
    n_negative = []
    found = [trial_points(result, fpr, budget) for result in results]
    trial_sets = [points for points in found if points is not None]
    if len(trial_sets) < len(found):
        return {"fpr": fpr, "budget": budget, "measured": False, "trials": len(results), "n_negative": [],
                "certified": True, "families": {}, "overall": {**_cost_summary([], []), "measured": False}}
    for result, trial_set in zip(results, trial_sets, strict=True):
        n_negative.append(sum(r["role"] == "negative" for r in result["per_model"]))
        by_family: dict[str, list[Point]] = {}
        for point in trial_set:
            by_family.setdefault(point.family, []).append(point)
            collected.setdefault((point.family, point.group), []).append(point)
        per_trial.append({name: evasion_cost(found) for name, found in by_family.items()})
        for name, (cost, reached) in per_trial[-1].items():
            family = families.setdefault(name, FamilyFrontier(name))
            family.costs.append(cost)
            family.reached.append(reached)
    for (name, group), points in collected.items():
        detections = [p.detection for p in points]
        drops = [p.accuracy_drop for p in points if p.accuracy_drop is not None]
        families[name].points.append({
            "group": group, "strength": points[0].strength, "trials": len(points), "n": sum(p.n for p in points),
            "accuracy_drop": statistics.fmean(drops) if drops else None,
            "detection": statistics.fmean(detections), "detection_min": min(detections),
            "detection_max": max(detections)})
    for family in families.values():
        family.points.sort(key=lambda p: (p["accuracy_drop"] is None, p["accuracy_drop"] or 0.0))
    overall = [_overall(trial) for trial in per_trial]
    return {"fpr": fpr, "budget": budget, "measured": True, "trials": len(results), "n_negative": n_negative,
            "certified": all(certifies(fpr, n) for n in n_negative),
            "families": {name: _family_summary(f) for name, f in sorted(families.items())},
            "overall": _cost_summary([c for c, _ in overall], [r for _, r in overall])}


def _overall(trial: Mapping[str, tuple[float | None, float | None]]) -> tuple[float | None, float | None]:
    costs = [cost for cost, _ in trial.values() if cost is not None]
    reached = [r for _, r in trial.values() if r is not None]
    return (min(costs) if costs else None), (max(reached) if reached else None)


def _family_summary(family: FamilyFrontier) -> dict[str, Any]:
    return {"points": family.points, **_cost_summary(family.costs, family.reached)}


def _cost_summary(costs: Sequence[float | None], reached: Sequence[float | None]) -> dict[str, Any]:
    """Evasion cost over trials: median and range of the trials where something evaded, and how many did."""
    found = [c for c in costs if c is not None]
    known = [r for r in reached if r is not None]
    return {"evasion_cost": statistics.median(found) if found else None,
            "evasion_cost_range": [min(found), max(found)] if found else None,
            "trials_evaded": len(found), "trials": len(costs),
            "max_drop_reached": max(known) if known else None, "per_trial": list(costs)}


def cost_text(summary: Mapping[str, Any]) -> str:
    """A cell: `3.1 pt [2.0, 4.2]`, `3.1 pt (3 of 5 trials)` when some trials found none, `none up to 9.3 pt`,
    or `not measured` (no scores at the budget asked for)."""
    if summary.get("measured") is False:
        return "not measured"
    if summary["evasion_cost"] is None:
        reached = summary["max_drop_reached"]
        return "none up to ?" if reached is None else f"none up to {reached:.1f} pt"
    low, high = summary["evasion_cost_range"]
    text = f"{summary['evasion_cost']:.1f} pt"
    if summary["trials"] > 1 and high > low:
        text += f" [{low:.1f}, {high:.1f}]"
    if summary["trials_evaded"] < summary["trials"]:
        text += f" ({summary['trials_evaded']} of {summary['trials']} trials)"
    return text


def frontier_markdown(frontiers: Mapping[str, Mapping[str, Any]]) -> str:
    """Methods x families table of evasion costs, then each method's frontier points."""
    if not frontiers:
        return "No results to draw a frontier from.\n"
    lines = [cost_table(frontiers).rstrip("\n")]
    for method, f in frontiers.items():
        lines += ["", f"### {method}", "", "| family | configuration | accuracy drop (pt) | detection mean [min, max] | "
                  "positives (all trials) |", "|---|---|---:|---|---:|"]
        for name, family in f["families"].items():
            for p in family["points"]:
                drop = "" if p["accuracy_drop"] is None else f"{p['accuracy_drop']:.1f}"
                lines.append(f"| {name} | {p['group']} | {drop} | {p['detection']:.2f} [{p['detection_min']:.2f}, "
                             f"{p['detection_max']:.2f}] | {p['n']} |")
    return "\n".join(lines) + "\n"


def cost_table(frontiers: Mapping[str, Mapping[str, Any]]) -> str:
    """The methods x families table of evasion costs (overall first) and, when the negatives cannot certify
    the FPR, which rows that concerns; the ``table=frontier`` block of README.md and docs shows it."""
    if not frontiers:
        return "No results to draw a frontier from.\n"
    families = sorted({name for f in frontiers.values() for name in f["families"]})
    any_f = next(iter(frontiers.values()))
    budget = any_f.get("budget")
    scored = (f" Every suspect scored as a verifier limited to {budget} queries per suspect would score it (a method "
              "whose whole fingerprint fits keeps its score; `not measured`: no scores at that budget)."
              if budget is not None else "")
    lines = [f"Evasion cost: the smallest accuracy drop (points) at which a family's positives evade (detection "
             f"< {EVADES_BELOW} at the threshold calibrated for FPR {any_f['fpr']:g} on each trial's negatives); "
             f"median [range] over trials.{scored}", "",
             "| method | overall | " + " | ".join(families) + " |", "|---" * (len(families) + 2) + "|"]
    for method, f in frontiers.items():
        cells = [cost_text(f["families"][name]) if name in f["families"] else "" for name in families]
        lines.append(f"| {method} | {cost_text(f['overall'])} | " + " | ".join(cells) + " |")
    uncertified = [m for m, f in frontiers.items() if f["measured"] and not f["certified"]]
    if uncertified:
        lines += ["", f"Too few negatives to certify FPR {any_f['fpr']:g} at 95 % for: {', '.join(uncertified)} "
                      f"(negatives per trial: {sorted({n for m in uncertified for n in frontiers[m]['n_negative']})}); "
                      "the threshold is then the highest negative score."]
    return "\n".join(lines) + "\n"
