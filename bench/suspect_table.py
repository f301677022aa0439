"""What `fpbench run` prints beside its summary table: every suspect's score, and methods that separate nothing.

The per-suspect table has one row per scored suspect (its `label` or model id, role, attack or kind)
and one column per method, so a newcomer reads each model's score without mapping ids back through
the manifest. The separation lines say plainly when a method's scores do not tell the positives from
the negatives: an AUC at or below `WEAK_AUC`, or a negative scoring at least the median positive (a
threshold that catches half the positives flags it too). Both read the result dicts only.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.metrics import auc as roc_auc

WEAK_AUC = 0.6  # at or below: the scores barely beat a coin (0.5) on this zoo
COLUMN = 10  # width of a method's score column; longer names are cut to fit
NAME = 24  # width of the suspect column (a label or a 12-hex model id)
GROUP = 18  # width of the attack/kind column


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "~"


def _headings(results: list[dict[str, Any]]) -> list[str]:
    """One heading per result: the method's name, with its config prefix where two results share a name."""
    names = [r["method"]["name"] for r in results]
    out = []
    for name, result in zip(names, results):
        heading = name if names.count(name) == 1 else f"{name[:COLUMN - 5]}:{result['config_sha256'][:4]}"
        out.append(_cut(heading, COLUMN))
    return out


def suspect_name(row: dict[str, Any]) -> str:
    """What a per_model row is called: its `label` (a recipe's or an endpoint's), else its model id."""
    return str(row.get("label") or row["model_id"])


def suspect_table_lines(results: list[dict[str, Any]]) -> list[str]:
    """One row per suspect (in the first result's order, then any others), one score column per result.

    Args:
        results: result dicts of one run (`per_model` rows carry `model_id`, `role`, `group`, `score`).

    Returns:
        The table's lines, headed by a title line; empty when no result scored a suspect.
    """
    rows: dict[str, dict[str, Any]] = {}
    for result in results:
        for row in result.get("per_model") or []:
            rows.setdefault(row["model_id"], row)
    if not rows:
        return []
    rows = dict(sorted(rows.items(), key=lambda item: item[1]["role"] != "positive"))  # positives first, stable
    scores = [{row["model_id"]: row["score"] for row in r.get("per_model") or []} for r in results]
    head = "".join(f" {h:>{COLUMN}}" for h in _headings(results))
    lines = ["", "per suspect (score of each method; the result files' per_model has the rest):",
             f"{'suspect':<{NAME}} {'role':<8} {'attack/kind':<{GROUP}}{head}"]
    for model_id, row in rows.items():
        cells = "".join(f" {_score(s.get(model_id)):>{COLUMN}}" for s in scores)
        group = row.get("group") or row.get("attack") or row.get("kind") or ""
        lines.append(f"{_cut(suspect_name(row), NAME):<{NAME}} {row['role']:<8} {_cut(str(group), GROUP):<{GROUP}}{cells}")
    return lines


def _score(value: float | None) -> str:
    return "-" if value is None else ("n/a" if math.isnan(float(value)) else f"{float(value):.3f}")


def _split(result: dict[str, Any], key: str | None = None) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """(positives, negatives) as (score, suspect name); `key` reads that extra figure instead of the score."""
    pos, neg = [], []
    for row in result.get("per_model") or []:
        value = row["score"] if key is None else (row.get("extras") or {}).get(key)
        if value is None or math.isnan(float(value)):
            continue
        (pos if row["role"] == "positive" else neg).append((float(value), suspect_name(row)))
    return pos, neg


def separation_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per result whose scores do not separate positives from negatives, saying what it means.

    A result is flagged when its AUC is at most `WEAK_AUC`, or when its highest negative score reaches
    the median positive score. Where the method's config has a `score:` choice and another of the
    figures it records separates clearly, the line names the override that selects it.
    """
    lines = []
    for result in results:
        pos, neg = _split(result)
        if not pos or not neg:
            continue
        name, auc = result["method"]["name"], float(result["metrics"]["auc"])
        top, median = max(neg), statistics.median(score for score, _ in pos)
        if auc <= WEAK_AUC:
            line = (f"NO SEPARATION {name}: AUC {auc:.3f} (<= {WEAK_AUC}): its scores do not tell the positives from "
                    "the negatives on this zoo; a coin scores 0.5.")
        elif top[0] >= median:
            line = (f"TIES {name}: negative {top[1]} scores {top[0]:.3f}, at or above the median positive "
                    f"({median:.3f}): a threshold that flags half the positives flags this independent model too "
                    f"(AUC {auc:.3f}).")
        else:
            continue
        lines.append(line + _score_hint(result, auc))
    return lines


def _score_hint(result: dict[str, Any], auc: float) -> str:
    """" Try methods.<name>.score=<figure> ..." when another recorded figure is a valid `score` that separates."""
    config = (result["method"].get("config") or {})
    current = config.get("score")
    if not isinstance(current, str):
        return ""
    extras = {key for row in result.get("per_model") or [] for key in (row.get("extras") or {})}
    best: tuple[float, str] | None = None
    for key in sorted(extras - {current}):
        pos, neg = _split(result, key)
        if not pos or not neg or not _valid_score(result, key):
            continue
        other = roc_auc([s for s, _ in pos] + [s for s, _ in neg], [1] * len(pos) + [0] * len(neg))
        if other > max(auc + 0.1, WEAK_AUC) and (best is None or other > best[0]):
            best = (other, key)
    if best is None:
        return ""
    name = result["method"]["name"]
    return (f" Its `{best[1]}` figure separates these suspects (AUC {best[0]:.3f}): try "
            f"methods.{name}.score={best[1]} (verification only, the fingerprint is reused; docs/methods/{name}.md).")


def _valid_score(result: dict[str, Any], key: str) -> bool:
    """Whether the method accepts `score: key` (its config check decides; no method is named here)."""
    from bench.methods import instantiate  # optional: heavy (torch), only when a hint is looked for

    try:
        instantiate({"name": result["method"]["name"], **result["method"]["config"], "score": key})
    except Exception:  # any refusal: not a choice of this method's `score`
        return False
    return True
