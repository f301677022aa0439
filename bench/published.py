"""The published benchmark: where it is, never overwriting it silently, and comparing a run with it.

`results/` of the repository holds the published benchmark; a user's runs go to
``paths.results_dir`` (``local_results/`` by default). Two things follow:

- A run that writes into the published folder keeps every published result whose numbers differ
  from the new ones, unless ``paths.overwrite_published=true`` (:func:`overwrite_decision`).
- After a run, each of its results is set beside the published results of the *same benchmark*:
  the same resolved config except the trial seeds (``seed`` and ``zoo.source.seed``, what a sweep's
  trials vary) and the same method version (:func:`compare_with_published`). With two or more
  published trials a number is "within" when it lies in mean ± 2 sd across them; with one trial,
  when it lies in that result's bootstrap CI (``metrics.ci``), and the comparison says it is one trial.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.io import inside, sha256_json
from bench.metrics import format_fpr, isclose
from bench.results import ResultError, read_result
from bench.stats import certifies, tpr_column
from bench.trial_keys import strip_trial_keys

log = logging.getLogger(__name__)

METRICS = (("AUC", None), ("T1%F", format_fpr(0.01)), ("T10%F", format_fpr(0.1)))  # (label, tpr_at_fpr key)
RUN_ONLY_EVAL_KEYS = ("progress", "device", "query_batch_size")  # how verification runs, not what it measures


def _checkout_results(folder: Path) -> Path | None:
    """``folder/results`` when ``folder`` looks like an fpbench checkout (it has ``recipes/`` and ``results/``)."""
    return folder / "results" if (folder / "results").is_dir() and (folder / "recipes").is_dir() else None


def default_published_dir(recipe: str | Path | None = None) -> Path | None:
    """``results/`` of the fpbench checkout this package runs from, else of the checkout holding ``recipe``.

    Returns:
        The folder, or ``None`` (an installed package run on a recipe outside any checkout).
    """
    found = _checkout_results(Path(__file__).resolve().parent.parent)
    if found is None and recipe is not None:
        found = next((r for r in map(_checkout_results, Path(recipe).resolve().parents) if r is not None), None)
    return found


def published_dir(cfg: Any, recipe: str | Path | None = None) -> Path | None:
    """The published benchmark folder: ``paths.published_dir``, else :func:`default_published_dir`."""
    configured = cfg.paths.get("published_dir")
    return Path(configured) if configured else default_published_dir(recipe)


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def writes_published(cfg: Any) -> bool:
    """Whether ``paths.results_dir`` is (inside) the published benchmark folder."""
    folder = published_dir(cfg)
    return folder is not None and _inside(Path(cfg.paths.results_dir), folder)


def number_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two results' numbers: metrics, per-suspect scores and query counts.

    Informational fields (``created``, ``timing_s``, ``versions``, ``git``, ``hardware``) and the
    bootstrap intervals are not numbers of the benchmark and are ignored.

    Returns:
        One readable item per difference (empty: the same numbers).
    """
    diffs: list[str] = []
    for label, key in METRICS:
        a, b = _metric(old, key), _metric(new, key)
        if not (math.isnan(a) and math.isnan(b)) and not isclose(a, b):
            diffs.append(f"{label} {a:.4f} -> {b:.4f}")
    for key in ("n_positive", "n_negative"):
        if old["metrics"][key] != new["metrics"][key]:
            diffs.append(f"{key} {old['metrics'][key]} -> {new['metrics'][key]}")
    before = {r["model_id"]: (r["score"], r["queries"]) for r in old["per_model"]}
    after = {r["model_id"]: (r["score"], r["queries"]) for r in new["per_model"]}
    if set(before) != set(after):
        diffs.append(f"suspects differ ({len(set(before) ^ set(after))} model ids in only one of them)")
    else:
        changed = [m for m in before if not isclose(before[m][0], after[m][0]) or before[m][1] != after[m][1]]
        if changed:
            diffs.append(f"{len(changed)} of {len(before)} suspect scores/query counts")
    return diffs


def overwrite_decision(cfg: Any, path: Path, result: dict[str, Any]) -> tuple[str, str]:
    """Whether ``result`` may be written to ``path``: ``("write", "")``, ``("keep", why)`` or ``("refuse", why)``.

    Outside the published folder, for a new file, or with ``paths.overwrite_published=true``: write.
    Over a published result with the same numbers: keep the published file byte for byte (only
    timestamps, timings and provenance would change). Over one whose numbers differ, or that
    cannot be read: refuse, with the reason and both ways out.
    """
    folder = published_dir(cfg)
    if cfg.paths.get("overwrite_published") or folder is None or not path.is_file() or not _inside(path, folder):
        return "write", ""
    try:
        diffs = number_differences(read_result(path), result)
    except (ResultError, OSError) as err:
        diffs = [f"the published file cannot be read ({err})"]
    if not diffs:
        return "keep", f"the published result {path} has the same numbers; kept as it is"
    return "refuse", (
        f"refused to overwrite the published result {path}: the numbers differ ({'; '.join(diffs)}); this "
        f"result was not written. Leave paths.results_dir at its default (local_results) or name another "
        f"folder to keep your run, or add paths.overwrite_published=true to replace the published result.")


def trial_group_key(result: dict[str, Any]) -> str:
    """Hash of what a result measures less its trial seeds and run-only eval keys (method included).

    Results with equal keys are trials of one method config on one benchmark. Not the report's
    `bench.report.trials.benchmark_key`, which leaves the method out to group every method of a benchmark.
    """
    config = strip_trial_keys(result["config"])  # a copy
    evaluation = config.get("eval")
    if isinstance(evaluation, dict):
        for key in RUN_ONLY_EVAL_KEYS:
            evaluation.pop(key, None)
    return sha256_json(config)


ZERO_FP = "0fp"  # the key of the TPR at zero false positives (what an uncertifiable T1%F/T10%F becomes)


def metrics_for(result: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The (label, key) pairs a comparison prints for this result: AUC, then each of `METRICS`' TPR
    targets its negatives certify, else one `TPR@0FP` line (docs/statistics.md)."""
    n_negative = int(result["metrics"]["n_negative"])
    out: list[tuple[str, str | None]] = [METRICS[0]]
    for label, key in METRICS[1:]:
        pair = (label, key) if certifies(float(key), n_negative) else ("TPR@0FP", ZERO_FP)
        if pair not in out:
            out.append(pair)
    return out


def _metric(result: dict[str, Any], key: str | None) -> float:
    if key == ZERO_FP:
        pos = [float(r["score"]) for r in result["per_model"] if r["role"] == "positive"]
        neg = [float(r["score"]) for r in result["per_model"] if r["role"] == "negative"]
        return float(tpr_column(pos, neg, 0.0)["tpr"]) if pos and neg else math.nan
    value = result["metrics"]["auc"] if key is None else result["metrics"]["tpr_at_fpr"].get(key)
    return math.nan if value is None else float(value)


def _ci(result: dict[str, Any], key: str | None) -> tuple[float, float] | None:
    ci = result["metrics"].get("ci")
    if not ci:
        return None
    if key == ZERO_FP:  # the stored CI of a target that allows no false positive on these negatives is this one's
        n_negative = int(result["metrics"]["n_negative"])
        zero = [k for k in ci.get("tpr_at_fpr", {}) if math.floor(float(k) * n_negative + 1e-9) == 0]
        key = min(zero, key=float) if zero else None
        if key is None:
            return None
    bounds = ci.get("auc") if key is None else ci.get("tpr_at_fpr", {}).get(key)
    return (float(bounds[0]), float(bounds[1])) if bounds else None


@dataclass
class MetricComparison:
    """One number of a user's result beside the published ones."""

    label: str  # AUC | T1%F | T10%F | TPR@0FP
    yours: float
    published_mean: float
    published_sd: float  # across trials (ddof=1); NaN with one trial
    low: float  # the published spread: mean ± 2 sd, or the one trial's bootstrap CI; NaN when there is none
    high: float
    within: bool | None  # None: no spread to compare with (one trial without a CI)


@dataclass
class PublishedComparison:
    """A user's result set beside the published trials of the same benchmark."""

    result_path: str
    method: str
    config: str  # config_sha256[:8] of the user's result
    seed: int
    published_files: list[str] = field(default_factory=list)
    metrics: list[MetricComparison] = field(default_factory=list)
    other_versions: list[str] = field(default_factory=list)  # published method versions not compared


def _published_candidates(folder: Path, result: dict[str, Any], own: Path) -> list[tuple[Path, dict[str, Any]]]:
    out: list[tuple[Path, dict[str, Any]]] = []
    try:
        runs = inside(folder / "runs", result["zoo"]["name"], result["method"]["name"])
    except ValueError as err:  # a name that would leave the published folder: nothing there to compare with
        log.warning("not compared with published results: %s", err)
        return out
    for path in sorted(runs.glob("*.json")):
        if path.name.startswith(".") or path.resolve() == own.resolve():
            continue
        try:
            out.append((path, read_result(path)))
        except (ResultError, OSError) as err:
            log.warning("skipping an unreadable published result: %s", err)
    return out


def _compare_metric(label: str, key: str | None, yours: dict[str, Any], published: list[dict[str, Any]]) -> MetricComparison:
    values = [_metric(r, key) for r in published]
    values = [v for v in values if not math.isnan(v)]
    mine = _metric(yours, key)
    if not values:
        return MetricComparison(label, mine, math.nan, math.nan, math.nan, math.nan, None)
    mean = sum(values) / len(values)
    if len(values) >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        low, high = mean - 2 * sd, mean + 2 * sd
    else:
        sd = math.nan
        low, high = _ci(published[0], key) or (math.nan, math.nan)
    if math.isnan(low) or math.isnan(mine):
        return MetricComparison(label, mine, mean, sd, low, high, None)
    return MetricComparison(label, mine, mean, sd, low, high, low - 1e-9 <= mine <= high + 1e-9)


def compare_with_published(results: dict[str, dict[str, Any]], folder: Path | None) -> list[PublishedComparison]:
    """Set each result beside the published trials of its benchmark.

    Args:
        results: ``{result path: result}`` of a run (written or refused).
        folder: The published benchmark folder; ``None`` compares with nothing.

    Returns:
        One :class:`PublishedComparison` per result, in the given order; ``published_files`` is empty when
        the published folder has no trial of the same benchmark and method version.
    """
    comparisons = []
    for path, result in results.items():
        comparison = PublishedComparison(result_path=str(path), method=result["method"]["name"],
                                config=result["config_sha256"][:8], seed=int(result["seed"]))
        comparisons.append(comparison)
        if folder is None or not folder.is_dir():
            continue
        key, version = trial_group_key(result), str(result["method"]["version"])
        same = [(p, r) for p, r in _published_candidates(folder, result, Path(path)) if trial_group_key(r) == key]
        matched = [(p, r) for p, r in same if str(r["method"]["version"]) == version]
        comparison.other_versions = sorted({str(r["method"]["version"]) for _, r in same} - {version})
        comparison.published_files = [p.relative_to(folder).as_posix() for p, _ in matched]
        published = [r for _, r in matched]
        if published:
            comparison.metrics = [_compare_metric(label, k, result, published) for label, k in metrics_for(result)]
    return comparisons


def _format_number(value: float) -> str:
    """Three decimals, or ``n/a`` for NaN."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _metric_line(m: MetricComparison, trials: int) -> str:
    if trials >= 2:
        published = f"published {_format_number(m.published_mean)} ± {_format_number(m.published_sd)} over {trials} trials"
        spread = f"mean ± 2 sd {_format_number(m.low)}–{_format_number(m.high)}"
        verdict = {True: "within the published spread", False: "OUTSIDE the published spread", None: "no spread"}
    else:
        published = f"published {_format_number(m.published_mean)} from ONE trial only"
        spread = ("no bootstrap CI stored" if m.within is None
                  else f"its bootstrap CI {_format_number(m.low)}–{_format_number(m.high)}")
        verdict = {True: "within that CI", False: "OUTSIDE that CI", None: "cannot judge from one number"}
    return f"    {m.label:<6} {_format_number(m.yours)}  vs {published} ({spread}): {verdict[m.within]}"


def comparison_lines(comparisons: list[PublishedComparison], folder: Path | None) -> list[str]:
    """What ``fpbench run`` prints after its summary: each result beside the published numbers."""
    if folder is None or not folder.is_dir():
        return ["published results: none found (no fpbench checkout with a results/ folder holds "
                "this package or the recipe); set paths.published_dir to compare with a published benchmark."]
    lines = [f"compared with the published benchmark in {folder} (same config less trial seeds, same method version):"]
    for c in comparisons:
        head = f"  {c.method} {c.config}-s{c.seed}"
        if not c.published_files:
            note = f" (published only for method version(s) {', '.join(c.other_versions)})" if c.other_versions else ""
            lines.append(f"{head}: no published result of this benchmark{note}")
            continue
        lines.append(f"{head} vs {len(c.published_files)} published trial(s): {', '.join(c.published_files)}")
        lines += [_metric_line(m, len(c.published_files)) for m in c.metrics]
    return lines


def published_lines(results: dict[str, dict[str, Any]], folder: Path | None) -> list[str]:
    """What ``fpbench run`` prints after its summary: :func:`comparison_lines`, or one line when no result of
    the run has anything published to be compared with (a user's own zoo, a changed config).

    Args:
        results: ``{result path: result}`` of a run (written or refused).
        folder: The published benchmark folder; ``None`` compares with nothing.
    """
    if not results:
        return []
    comparisons = compare_with_published(results, folder)
    if folder is None or not folder.is_dir() or any(c.published_files or c.other_versions for c in comparisons):
        return comparison_lines(comparisons, folder)
    zoos = sorted({str(r["zoo"]["name"]) for r in results.values()})
    return [f"published benchmark {folder}: nothing published for zoo {', '.join(zoos)} with this config, so this "
            "run is not compared with it (runs of a published recipe are)."]
