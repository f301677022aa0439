"""Scores against query budget (docs/metrics.md, "Scores against query budget").

Each method's fingerprint is also verified as a verifier limited to `b` queries per suspect would
verify it, for every `b` in `eval.budgets`: `FingerprintMethod.at_budget` keeps a seeded subset of the
fingerprint's items (drawn once per method and budget, the same subset for every suspect), and the
suspect is queried through a fresh `Oracle`, so the main score and its query count are untouched. A
budget at or above the whole fingerprint's cost reuses the main score (nothing is queried twice).

The result file gets `budgets`: one entry per budget (`auc`, `aruc`, `tpr_at_fpr`, the queries the
subset really cost) or `{budget, subsampled: false, reason}`, then the entry `"all"` (the main metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.checks import check
from bench.metrics import BootstrapConfig, compute_metrics

if TYPE_CHECKING:  # bench.results imports this module: no torch at import time
    from bench.methods.base import Fingerprint, FingerprintMethod
    from bench.oracle import Oracle

log = logging.getLogger(__name__)

DEFAULT_BUDGETS = (10, 30, 100, 300, 1000)  # eval.budgets default: queries per suspect (issue #18, item 6)
ALL = "all"  # the entry of the whole fingerprint (the main result)
DEFAULT_BUDGET = 100  # queries per suspect of the leaderboard's matched-budget column AUC@<b> (docs/metrics.md)


def check_budgets(budgets: Sequence[Any], where: str = "eval.budgets") -> None:
    """`eval.budgets`: positive whole numbers, each once (empty: no budget scoring)."""
    for budget in budgets:
        check(where, list(budgets), isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1,
              f"a list of positive whole numbers of queries per suspect, e.g. [10, 30, 100, 300, 1000] "
              f"(got {budget!r}); the whole fingerprint is always measured as the main result, so leave 'all' out, "
              "and use [] for no budget scoring")
    check(where, list(budgets), len(set(budgets)) == len(budgets), "a list that names each budget once")


@dataclass
class BudgetPlan:
    """One budget of one method: the fingerprint a verifier limited to `budget` queries would use.

    Attributes:
        budget: queries per suspect allowed.
        fingerprint: the subset (the whole fingerprint when it fits; None when none can be made).
        reason: why no fingerprint fits the budget (None when one does).
        whole: the whole fingerprint fits the budget (`fingerprint` is it; the main score serves).
    """

    budget: int
    fingerprint: Fingerprint | None
    reason: str | None = None
    whole: bool = False  # the whole fingerprint fits the budget: the main score serves


def plan_budgets(method: FingerprintMethod, fp: Fingerprint, budgets: Sequence[int], seed: int) -> list[BudgetPlan]:
    """Subsample the fingerprint once per budget (ascending); a budget it cannot meet says why."""
    plans = []
    for budget in sorted(int(b) for b in budgets):
        try:
            subset = method.at_budget(fp, budget, seed)
        except Exception as err:  # a method's faulty subsampling must not cost its main result
            log.error("%s: subsampling to %d queries failed: %s: %s", method.name, budget, type(err).__name__, err)
            plans.append(BudgetPlan(budget, None, f"subsampling failed: {type(err).__name__}: {err}"))
            continue
        plans.append(BudgetPlan(budget, subset, None if subset is not None else _reason(method, fp, budget),
                                whole=subset is fp))
    unscored = [plan for plan in plans if plan.fingerprint is None and not plan.reason.startswith("subsampling failed")]
    if unscored:  # one line per method (its largest such budget's reason); each budget's is in the result file
        log.info("%s: no score at %s queries per suspect: %s (each budget's reason: `budgets` in the result file)",
                 method.name, ", ".join(str(plan.budget) for plan in unscored), unscored[-1].reason)
    return plans


def _reason(method: FingerprintMethod, fp: Fingerprint, budget: int) -> str:
    fit = method.budget_fit(fp, budget)
    if fit is None:
        return (f"{method.name} cannot be subsampled (its fingerprint is not a set of items); the whole "
                f"fingerprint costs {int(fp.meta.get('queries_per_suspect', 0))} queries per suspect")
    items, per_item, count = fit
    return (f"{budget} queries fit {count} of its {items} items ({per_item} queries each), fewer "
            f"than the {method.min_budget_items} the method needs")


def score_at_budgets(method: FingerprintMethod, plans: Sequence[BudgetPlan], main_score: float, main_queries: int,
                     fresh_oracle: Callable[[], Oracle]) -> tuple[dict[str, float], dict[str, int], float]:
    """One suspect's score and queries at each budget, and the seconds spent querying for them.

    A budget the whole fingerprint fits reuses the main score and queries; a subset is scored through
    `fresh_oracle()`, whose count is the subset's real cost; a budget without a fingerprint is left out.
    """
    scores: dict[str, float] = {}
    queries: dict[str, int] = {}
    started = time.perf_counter()
    for plan in plans:
        if plan.fingerprint is None:
            continue
        if plan.whole:
            scores[str(plan.budget)], queries[str(plan.budget)] = float(main_score), int(main_queries)
            continue
        oracle = fresh_oracle()
        scores[str(plan.budget)] = float(method.measure(plan.fingerprint, oracle)["score"])
        queries[str(plan.budget)] = int(oracle.queries)
    return scores, queries, time.perf_counter() - started


def budget_descriptors(method: FingerprintMethod, main: Fingerprint, plans: Sequence[BudgetPlan]) -> list[dict[str, Any]]:
    """What the result records of each budget before its metrics (`bench.results.make_result` adds them)."""
    out: list[dict[str, Any]] = []
    for plan in plans:
        if plan.fingerprint is None:
            out.append({"budget": plan.budget, "subsampled": False, "reason": plan.reason})
            continue
        out.append({"budget": plan.budget, "subsampled": not plan.whole, "items": method.budget_items(plan.fingerprint)})
    out.append({"budget": ALL, "subsampled": False, "items": method.budget_items(main)})
    return out


def budget_entries(records: Sequence[dict[str, Any]], descriptors: Sequence[dict[str, Any]], metrics: dict[str, Any],
                   queries_per_suspect: float, fpr_targets: Sequence[float]) -> list[dict[str, Any]]:
    """The result's `budgets`: each descriptor with its metrics over the suspects' `budget_scores`.

    Args:
        records: the result's per_model rows (with `budget_scores` and `budget_queries`).
        descriptors: from :func:`budget_descriptors`.
        metrics: the result's main metrics (the entry "all").
        queries_per_suspect: the result's main queries per suspect.
        fpr_targets: the FPR targets of `tpr_at_fpr`.
    """
    labels = [1 if r["role"] == "positive" else 0 for r in records]
    entries = []
    for descriptor in descriptors:
        entry = dict(descriptor)
        if "reason" in entry:
            entries.append(entry)
            continue
        if entry["budget"] == ALL:
            figures, cost = metrics, queries_per_suspect
        else:
            key = str(entry["budget"])
            figures = compute_metrics([r["budget_scores"][key] for r in records], labels, None,
                                      fpr_targets=fpr_targets, bootstrap=BootstrapConfig(n=0))
            cost = sum(r["budget_queries"][key] for r in records) / max(len(records), 1)
        entry.update(queries_per_suspect=cost, auc=figures["auc"], aruc=figures["aruc"],
                     tpr_at_fpr=dict(figures["tpr_at_fpr"]))
        entries.append(entry)
    return entries


def validate_budget_entries(entries: Any, records: Sequence[dict[str, Any]]) -> str | None:
    """The first problem of a result's optional `budgets` (None: sound); the caller names the file."""
    if not isinstance(entries, list):
        return f"field 'budgets' must be a list, got {type(entries).__name__}"
    for i, entry in enumerate(entries):
        where = f"budgets[{i}]"
        if not isinstance(entry, dict):
            return f"field '{where}' must be an object"
        budget = entry.get("budget")
        if budget != ALL and not (isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1):
            return f"field '{where}.budget' must be a positive integer or \"all\", got {budget!r:.40}"
        if not isinstance(entry.get("subsampled"), bool):
            return f"field '{where}.subsampled' must be true or false"
        if "reason" in entry:
            if not isinstance(entry["reason"], str) or entry["subsampled"]:
                return f"field '{where}.reason' must be a string, in an entry with subsampled false"
            continue
        for key in ("queries_per_suspect", "auc", "aruc"):
            if not _is_finite_number(entry.get(key)):
                return f"field '{where}.{key}' must be a finite number, got {entry.get(key)!r:.40}"
        tprs = entry.get("tpr_at_fpr")
        if not isinstance(tprs, dict) or not all(_is_finite_number(v) for v in tprs.values()):
            return f"field '{where}.tpr_at_fpr' must be an object of finite numbers"
        if entry.get("items") is not None and not isinstance(entry["items"], int):
            return f"field '{where}.items' must be an integer or null"
        if budget != ALL and any(str(budget) not in (r.get("budget_scores") or {}) for r in records):
            return f"field '{where}': a suspect in per_model has no budget_scores[{str(budget)!r}]"
    return None


def _is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")


def check_budget_entries(result: dict[str, Any]) -> list[str]:
    """Recompute each measured budget's metrics from per_model; list what the stored entries get wrong."""
    entries = result.get("budgets") or []
    problems: list[str] = []
    if entries and "aruc" not in result["metrics"]:
        return ["budgets are recorded but metrics.aruc is missing; re-run the evaluation."]
    fresh = budget_entries(result["per_model"], entries, result["metrics"], result["queries_per_suspect"],
                           [float(k) for k in result["metrics"]["tpr_at_fpr"]])
    for stored, want in zip(entries, fresh):
        pairs = [(key, stored.get(key), want[key]) for key in ("queries_per_suspect", "auc", "aruc") if key in want]
        pairs += [(f"tpr_at_fpr[{k}]", (stored.get("tpr_at_fpr") or {}).get(k), v)
                  for k, v in (want.get("tpr_at_fpr") or {}).items()]
        for key, have, value in pairs:
            if have is None or abs(float(have) - float(value)) > 1e-9:
                problems.append(f"budgets[{stored['budget']!r}].{key} is {have!r} but per_model gives {value!r}.")
    return problems
