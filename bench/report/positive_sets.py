"""Positive sets: the leaderboard's ``positives`` views of a result (``all`` and ``paper``).

The ADV-TRA paper's Table 2 counts as positives the fine-tuning attacks (FTLL, FTAL, RTLL, RTAL),
pruning and adversarial training; model extraction is a separate experiment there. A result whose
positives mix those families with others (extraction, quantization, chains with such a step) gets
a second view, ``paper``: the same result restricted to its negatives and its Table 2 positives,
with its metrics recomputed by :func:`bench.metrics.compute_metrics` with the result's own FPR
targets and bootstrap settings (as the evaluation loop computes them). Rules and reasons:
``docs/leaderboard.md``, section "Positive sets".

Light on purpose (numpy only): :data:`PAPER_TABLE2_ATTACKS` names the attacks by their registry keys,
without importing the attack code; a test checks that each is a registered attack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bench.metrics import BootstrapConfig, compute_metrics

ALL, PAPER = "all", "paper"  # the values of the leaderboard's `positives` column
VIEWS = (ALL, PAPER)  # their order in the leaderboard (within a zoo and bench)
VIEW_NOTES = {
    ALL: "every positive (with extraction etc.)",
    PAPER: "only the ADV-TRA paper's Table 2 attack families (fine-tuning, pruning, adversarial training)",
}
# Registry names of the attacks in the paper's Table 2; a published table, so the set is fixed.
PAPER_TABLE2_ATTACKS = frozenset({"ftll", "ftal", "rtll", "rtal", "prune", "adv_train"})


def split_label(label: str) -> tuple[str, ...]:
    """The attack names of an automatic positive label: ``prune(rate=0.4)+ftll`` -> ``("prune", "ftll")``.

    The zoo labels a positive by its steps joined with ``+``, each ``name`` or ``name(key=value,...)``;
    a ``+`` inside parentheses (``eps=1e+16``) belongs to a value and does not split.
    """
    names, depth, start = [], 0, 0
    for i, char in enumerate(label + "+"):
        depth += (char == "(") - (char == ")")
        if char == "+" and depth <= 0:
            names.append(label[start:i].split("(", 1)[0].strip())
            start = i + 1
    return tuple(names)


def custom_labels(config: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Attack names behind each ``label:`` given in the result config's ``zoo.positives``.

    A recipe may name a positives entry (``label: strong_prune``); the result's per-model ``attack``
    is then that label, and its attacks are read from the entry (``attack:`` or ``chain:``, a
    name or a list of names per step).
    """
    zoo = config.get("zoo")
    entries = zoo.get("positives") if isinstance(zoo, Mapping) else None
    out: dict[str, tuple[str, ...]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("label"), str):
            continue
        steps = entry["chain"] if isinstance(entry.get("chain"), list) else [entry]
        names: list[str] = []
        for step in steps:
            attack = step.get("attack") if isinstance(step, Mapping) else None
            names += [str(a) for a in attack] if isinstance(attack, list) else [str(attack)]
        out[entry["label"]] = tuple(names)
    return out


def is_paper_positive(attack: str | None, labels: Mapping[str, tuple[str, ...]] | None = None) -> bool:
    """Whether a positive labelled ``attack`` comes from Table 2 attacks only (every step of a chain).

    Args:
        attack: The per-model ``attack`` label (None: unknown, not a paper positive).
        labels: :func:`custom_labels` of the result's config.

    Returns:
        True when every step is one of :data:`PAPER_TABLE2_ATTACKS`.
    """
    if not attack:
        return False
    names = (labels or {}).get(attack) or split_label(attack)
    return all(name in PAPER_TABLE2_ATTACKS for name in names)


def _bootstrap(config: Mapping[str, Any]) -> BootstrapConfig:
    """The result's ``eval.bootstrap`` (the loop's CI settings); defaults where absent."""
    evaluation = config.get("eval")
    boot = evaluation.get("bootstrap") if isinstance(evaluation, Mapping) else None
    boot = boot if isinstance(boot, Mapping) else {}
    default = BootstrapConfig()
    return BootstrapConfig(n=int(boot.get("n", default.n)), confidence=float(boot.get("confidence", default.confidence)),
                           seed=int(boot.get("seed", default.seed)))  # fmt: skip


def restrict(result: Mapping[str, Any], keep: list[dict[str, Any]], ci: bool = True) -> dict[str, Any]:
    """A shallow copy of ``result`` whose suspects are ``keep`` and whose metrics are recomputed on them.

    Metrics come from :func:`bench.metrics.compute_metrics` with the FPR targets the result stores and
    its ``eval.bootstrap`` settings, and per-model extras averaged per group, as the loop computes them;
    ``queries_per_suspect`` is the mean over ``keep``. ``ci=False`` leaves the bootstrap CI out (the
    leaderboard shows a CI over suspects only for single-trial rows).
    """
    targets = sorted(float(key) for key in result["metrics"]["tpr_at_fpr"])
    extra_keys = sorted({key for record in keep for key in record.get("extras") or {}})
    out = dict(result)
    out["per_model"] = keep
    out["metrics"] = compute_metrics(
        [r["score"] for r in keep], [1 if r["role"] == "positive" else 0 for r in keep], [r["group"] for r in keep],
        fpr_targets=targets, bootstrap=_bootstrap(result["config"]) if ci else BootstrapConfig(n=0),
        extras={k: [(r.get("extras") or {}).get(k, math.nan) for r in keep] for k in extra_keys},
    )  # fmt: skip
    out["queries_per_suspect"] = sum(r["queries"] for r in keep) / len(keep)
    return out


def paper_view(result: Mapping[str, Any], ci: bool = True) -> dict[str, Any] | None:
    """The ``paper`` view of a result: its negatives and Table 2 positives, metrics recomputed.

    Returns:
        None when the view would equal the result (every positive is a Table 2 one), or cannot be
        scored (no Table 2 positive, or no negative).
    """
    labels = custom_labels(result["config"])
    records = result["per_model"]
    paper = [r["role"] == "positive" and is_paper_positive(r.get("attack"), labels) for r in records]
    n_positive = sum(r["role"] == "positive" for r in records)
    n_paper = sum(paper)
    has_negative = any(r["role"] == "negative" for r in records)
    if n_paper == 0 or n_paper == n_positive or not has_negative:
        return None
    return restrict(result, [r for r, is_paper in zip(records, paper) if is_paper or r["role"] == "negative"], ci)


def views(result: Mapping[str, Any], ci: bool = True) -> list[tuple[str, Mapping[str, Any]]]:
    """``[("all", result)]``, plus ``("paper", view)`` when :func:`paper_view` derives one (``ci``: see
    :func:`restrict`)."""
    derived = paper_view(result, ci)
    return [(ALL, result)] if derived is None else [(ALL, result), (PAPER, derived)]


def view_order(view: str) -> int:
    """Sort position of a view (``all`` first); an unknown view sorts last."""
    return VIEWS.index(view) if view in VIEWS else len(VIEWS)
