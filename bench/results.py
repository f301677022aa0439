"""The result file: one JSON per (zoo, method config, seed), validated on write and on read.

Layout: ``<results_dir>/runs/<zoo>/<method>/<config_sha256[:8]>-s<seed>.json``. Numbers are JSON
numbers (never strings, never NaN); ``created``, ``timing_s``, ``versions``, ``git`` and the
optional ``hardware`` are informational, everything else is what the leaderboard and
``fpbench leaderboard --check`` read.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.budgets import budget_entries, check_budget_entries, validate_budget_entries
from bench.io import FileReadError, atomic_write_json, inside, read_bytes_bounded, sha256_json
from bench.metrics import BootstrapConfig, compute_metrics, isclose
from bench.provenance import collect_hardware, collect_versions, git_info
from bench.stats.blocks import result_blocks

SCHEMA_VERSION = 1
RESULT_MAX_BYTES = 64 << 20  # ~100x the largest result measured (a few 100 suspects: < 1 MiB); more is not a result

# Field types: "str", "int", "num" (finite int/float, not bool), "bool", "dict", "list", a nested
# spec (dict), or a tuple of alternatives, where None allows JSON null.
_SPLITS = {"owner": ("str", None), "attacker": ("str", None), "independent": ("str", None), "test": ("str", None)}
_PER_MODEL = {
    "model_id": "str",
    "role": "str",
    "attack": ("str", None),
    "kind": ("str", None),
    "group": "str",
    "score": "num",
    "queries": "int",
    "extras": "dict",
}
# One entry of the optional `pool.models` (results written before it existed lack it): a pool model
# and how it differs from the closest scored suspect (bench.zoo.pool_plan.pool_summary).
_POOL_MODEL = {
    "model_id": "str",
    "role": "str",
    "provenance": "str",
    "procedure": "str",
    "arch": "str",
    "split": "str",
    "seed": "int",
    "epochs": "int",
    "lr": ("num", None),
    "labels": ("str", None),
    "temperature": ("num", None),
    "queries": ("int", None),
    "differs_from_suspects": {"closest": ("str", None), "closest_role": ("str", None), "closest_group": ("str", None),
                              "fields": "list", "note": "str"},
}
_POOL_ROLES = ("surrogate", "reference")
# The optional `fingerprint.generation_target` (null: the method has no generation target; results written before
# it existed lack it): FingerprintMethod.generation_target in bench/methods/base.py.
_TARGET = {"name": "str", "achieved": "num", "floor": "num", "met": "bool"}
# The optional `hardware` (results written before it existed lack it): see bench.provenance.collect_hardware.
_HARDWARE = {"cpu": ("str", None), "cpu_count": ("int", None), "gpus": "list", "torch_threads": "int"}
# Optional `per_model[i].endpoint`: true for a suspect behind an API (bench.endpoints; docs/byo.md, Endpoints),
# which has no checkpoint, hence no `sha256`; absent for zoo models.
# Optional integrity fields (results written before they existed lack them; docs/decisions.md, Integrity):
# `per_model[i].sha256` (the suspect's checkpoint), `zoo.source_sha256`, `fingerprint.sha256` (the cached
# fingerprint's files, bench.methods.base.fingerprint_sha256) and `metrics.ci.seed` (the bootstrap seed).
# Optional budget fields (results written before they existed lack them; docs/metrics.md): `metrics.aruc`,
# `budgets` (bench.budgets.budget_entries), `per_model[i].budget_scores` and `per_model[i].budget_queries`.
# Optional fields of a deployed suspect's row (docs/deployment.md; absent for undeployed suspects): its chain
# `deploy`, `provenance` (the checkpoint's, then `|deploy=<chain>`), `test_acc_deployed` (clean test accuracy
# through the deployment), and with a query-aware defender its false-flag rate on the test split and the
# share of this method's queries it flagged.
_DEPLOYED = {"deploy": "str", "provenance": "str", "test_acc_deployed": "num",
             "defender_false_flag_rate": ("num", None), "defender_flag_rate": ("num", None)}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SCHEMA: dict[str, Any] = {
    "schema_version": "int",
    "created": "str",
    "seed": "int",
    "method": {"name": "str", "version": ("str", "int"), "access": "str", "config": "dict"},
    "config": "dict",
    "config_sha256": "str",
    "zoo": {
        "name": "str",
        "manifest_sha256": "str",
        "dataset": "str",
        "split_hashes": _SPLITS,
        "source_id": ("str", None),
        "source_test_acc": ("num", None),
    },
    "pool": ({"model_ids": "list", "train_seconds": "num"}, None),
    "per_model": "list",
    "metrics": {
        "auc": "num",
        "tpr_at_fpr": "dict",
        "n_positive": "int",
        "n_negative": "int",
        "resolution_note": ("str", None),
        "ci": ("dict", None),
        "groups": "dict",
        "roc": {"fpr": "list", "tpr": "list"},
    },
    "queries_per_suspect": "num",
    "timing_s": {"generate": "num", "verify": "num", "total": "num", "fingerprint_cached": "bool"},
    "versions": "dict",
    "git": {"commit": ("str", None), "dirty": ("bool", None)},
}
_ROLES = ("positive", "negative")


class ResultError(ValueError):
    """A result dict or file that does not follow the schema (the message names field and file)."""


def result_path(results_dir: str | Path, zoo_name: str, method_name: str, config_sha256: str, seed: int) -> Path:
    """Where the result of one (zoo, method config, seed) lives.

    Args:
        results_dir: Root of the results tree (``paths.results_dir``).
        zoo_name: ``zoo.name`` of the recipe.
        method_name: Registry key of the method.
        config_sha256: Hex sha256 of the resolved recipe; its first 8 characters name the file.
        seed: The run's seed.

    Returns:
        ``results_dir/runs/<zoo>/<method>/<config_sha256[:8]>-s<seed>.json``.

    Raises:
        ValueError: when a name would take the path outside ``results_dir/runs`` (``..``, an absolute name).
    """
    return inside(Path(results_dir) / "runs", zoo_name, method_name, f"{config_sha256[:8]}-s{int(seed)}.json")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _matches(value: Any, kind: Any) -> bool:
    if kind is None:
        return value is None
    if isinstance(kind, dict):
        return isinstance(value, dict)
    if kind == "num":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    types = {"str": str, "bool": bool, "dict": dict, "list": list}
    return isinstance(value, types[kind])


def _describe(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_describe(k) for k in kind)
    if isinstance(kind, dict):
        return "object"
    return {None: "null", "num": "finite number", "int": "integer"}.get(kind, kind)


def _check_fields(d: Any, spec: dict[str, Any], prefix: str, where: str) -> None:
    if not isinstance(d, dict):
        raise ResultError(f"{where}: field '{prefix.rstrip('.') or '<root>'}' must be an object, got {_type_name(d)}.")
    for key, kind in spec.items():
        name = prefix + key
        if key not in d:
            raise ResultError(f"{where}: missing field '{name}'; write results with the evaluation loop's RunResult.")
        value = d[key]
        alternatives = kind if isinstance(kind, tuple) else (kind,)
        if not any(_matches(value, k) for k in alternatives):
            raise ResultError(
                f"{where}: field '{name}' must be {_describe(kind)}, got {_type_name(value)} {value!r:.60}."
            )
        nested = next((k for k in alternatives if isinstance(k, dict) and isinstance(value, dict)), None)
        if nested is not None:
            _check_fields(value, nested, name + ".", where)


def _check_numbers(mapping: dict[str, Any], name: str, where: str) -> None:
    for key, value in mapping.items():
        if not _matches(value, "num"):
            raise ResultError(f"{where}: field '{name}.{key}' must be a finite number, got {_type_name(value)} {value!r:.60}.")


def validate_result(d: dict[str, Any], source: str | Path | None = None) -> None:
    """Check that ``d`` follows the result schema.

    Args:
        d: The result dict.
        source: File the dict came from or goes to, named in errors (``<result>`` when ``None``).

    Raises:
        ResultError: Naming the first missing or ill-typed field, or an unsupported ``schema_version``.
    """
    where = str(source) if source is not None else "<result>"
    if not isinstance(d, dict):
        raise ResultError(f"{where}: a result must be a JSON object, got {_type_name(d)}.")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ResultError(
            f"{where}: schema_version {version!r} is not supported; this fpbench reads schema_version "
            f"{SCHEMA_VERSION}. Re-run the evaluation or use the fpbench version that wrote the file."
        )
    _check_fields(d, _SCHEMA, "", where)
    for i, record in enumerate(d["per_model"]):
        _check_fields(record, _PER_MODEL, f"per_model[{i}].", where)
        if record["role"] not in _ROLES:
            raise ResultError(f"{where}: field 'per_model[{i}].role' is {record['role']!r}; expected one of {', '.join(_ROLES)}.")
        _check_numbers(record["extras"], f"per_model[{i}].extras", where)
        for key in ("budget_scores", "budget_queries"):  # optional: scores against query budget
            if key in record:
                if not isinstance(record[key], dict):
                    raise ResultError(f"{where}: field 'per_model[{i}].{key}' must be an object, "
                                      f"got {_type_name(record[key])}.")
                _check_numbers(record[key], f"per_model[{i}].{key}", where)
        _check_sha256(record, "sha256", f"per_model[{i}].", where)
        if "endpoint" in record and not isinstance(record["endpoint"], bool):  # optional: a suspect behind an API
            raise ResultError(f"{where}: field 'per_model[{i}].endpoint' must be true or false, "
                              f"got {_type_name(record['endpoint'])} {record['endpoint']!r:.60}.")
        for key, kind in _DEPLOYED.items():  # optional: a deployed suspect (docs/deployment.md)
            if key in record and not any(_matches(record[key], k) for k in (kind if isinstance(kind, tuple) else (kind,))):
                raise ResultError(f"{where}: field 'per_model[{i}].{key}' must be {_describe(kind)}, "
                                  f"got {_type_name(record[key])} {record[key]!r:.60}.")
    _check_sha256(d["zoo"], "source_sha256", "zoo.", where)
    ci = d["metrics"]["ci"]
    if ci is not None and "seed" in ci and not _matches(ci["seed"], "int"):
        raise ResultError(f"{where}: field 'metrics.ci.seed' must be an integer, "
                          f"got {_type_name(ci['seed'])} {ci['seed']!r:.60}.")
    _check_numbers(d["metrics"]["tpr_at_fpr"], "metrics.tpr_at_fpr", where)
    if "aruc" in d["metrics"] and not _matches(d["metrics"]["aruc"], "num"):
        raise ResultError(f"{where}: field 'metrics.aruc' must be a finite number, got {d['metrics']['aruc']!r:.60}.")
    if "budgets" in d and (problem := validate_budget_entries(d["budgets"], d["per_model"])):
        raise ResultError(f"{where}: {problem}.")
    if d["pool"] is not None:
        _check_pool(d["pool"], where)
    fingerprint = d.get("fingerprint")
    if fingerprint is not None and not isinstance(fingerprint, dict):
        raise ResultError(f"{where}: field 'fingerprint' must be an object, got {_type_name(fingerprint)}.")
    if fingerprint and fingerprint.get("generation_target") is not None:
        _check_fields(fingerprint["generation_target"], _TARGET, "fingerprint.generation_target.", where)
    if fingerprint:
        _check_sha256(fingerprint, "sha256", "fingerprint.", where)
    if "hardware" in d:
        _check_fields(d["hardware"], _HARDWARE, "hardware.", where)
        if not all(isinstance(g, str) for g in d["hardware"]["gpus"]):
            raise ResultError(f"{where}: field 'hardware.gpus' must be a list of GPU names (strings).")


def _check_sha256(d: dict[str, Any], key: str, prefix: str, where: str) -> None:
    """An optional hex sha256 field: absent, or 64 lower-case hex digits."""
    if key in d and not (isinstance(d[key], str) and _HEX64.fullmatch(d[key])):
        raise ResultError(f"{where}: field '{prefix}{key}' must be a sha256 (64 lower-case hex digits), "
                          f"got {_type_name(d[key])} {d[key]!r:.70}.")


def _check_pool(pool: dict[str, Any], where: str) -> None:
    if not all(isinstance(m, str) for m in pool["model_ids"]):
        raise ResultError(f"{where}: field 'pool.model_ids' must be a list of strings.")
    models = pool.get("models", [])
    if not isinstance(models, list):
        raise ResultError(f"{where}: field 'pool.models' must be a list, got {_type_name(models)}.")
    for i, model in enumerate(models):
        _check_fields(model, _POOL_MODEL, f"pool.models[{i}].", where)
        if model["role"] not in _POOL_ROLES:
            raise ResultError(f"{where}: field 'pool.models[{i}].role' is {model['role']!r}; "
                              f"expected one of {', '.join(_POOL_ROLES)}.")


def make_result(
    *,
    seed: int,
    method: dict[str, Any],
    config: dict[str, Any],
    zoo: dict[str, Any],
    per_model: list[dict[str, Any]],
    timing_s: dict[str, Any],
    pool: dict[str, Any] | None = None,
    fpr_targets: Sequence[float] = (0.01, 0.1),
    bootstrap: BootstrapConfig | None = None,
    git_path: str | Path | None = ".",
    budgets: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Assemble a validated result dict: metrics, hashes, versions, git state and hardware filled in.

    Args:
        seed: The run's seed.
        method: ``{name, version, access, config}``.
        config: The full resolved recipe; its :func:`bench.io.sha256_json` is ``config_sha256``.
        zoo: ``{name, manifest_sha256, dataset, split_hashes, source_id, source_test_acc}``.
        per_model: One record per suspect (see module docstring); ``extras`` defaults to ``{}``.
        timing_s: ``{generate, verify, total, fingerprint_cached}``.
        pool: ``{model_ids, train_seconds, models}`` when the method used defender pools (``models``,
            optional: one summary per pool model, see ``bench.zoo.pool_plan.pool_summary``).
        fpr_targets: FPR bounds for ``metrics.tpr_at_fpr``.
        bootstrap: CI settings (``None`` = ``BootstrapConfig()``).
        git_path: Folder whose git state is recorded; ``None`` records nulls.
        budgets: :func:`bench.budgets.budget_descriptors` when the loop scored query budgets (the
            records then carry ``budget_scores``/``budget_queries``); ``None``: no ``budgets`` field.

    Returns:
        A dict that passes :func:`validate_result`.
    """
    records = [{"extras": {}, **r} for r in per_model]
    bootstrap = bootstrap or BootstrapConfig()
    extra_keys = sorted({k for r in records for k in r["extras"]})
    result = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": int(seed),
        "method": method,
        "config": config,
        "config_sha256": sha256_json(config),
        "zoo": zoo,
        "pool": pool,
        "per_model": records,
        "metrics": compute_metrics(
            [r["score"] for r in records],
            [1 if r["role"] == "positive" else 0 for r in records],
            [r["group"] for r in records],
            fpr_targets=fpr_targets,
            bootstrap=bootstrap,
            extras={k: [r["extras"].get(k, math.nan) for r in records] for k in extra_keys},
        ),
        "queries_per_suspect": sum(r["queries"] for r in records) / max(len(records), 1),
        "timing_s": timing_s,
        "versions": collect_versions(),
        "git": git_info(git_path) if git_path is not None else {"commit": None, "dirty": None},
        "hardware": collect_hardware(),
    }
    result["metrics"].update(result_blocks([r["score"] for r in records],  # ties, decision, what n- certifies
                                           [1 if r["role"] == "positive" else 0 for r in records], fpr_targets))
    if budgets is not None:
        result["budgets"] = budget_entries(records, budgets, result["metrics"], result["queries_per_suspect"],
                                           fpr_targets)
    if result["metrics"]["ci"] is not None:  # the seed too, so `fpbench leaderboard --check` can redraw the CI
        result["metrics"]["ci"]["seed"] = int(bootstrap.seed)
    validate_result(result)
    return result


def write_result(d: dict[str, Any], path: str | Path) -> None:
    """Validate ``d`` and write it atomically as sorted, indented JSON.

    Args:
        d: The result dict.
        path: Destination, normally from :func:`result_path`.

    Raises:
        ResultError: If ``d`` does not validate (nothing is written).
        OSError: If the write fails; the previous file, if any, is left intact.
    """
    validate_result(d, path)
    atomic_write_json(path, d)


def read_result(path: str | Path) -> dict[str, Any]:
    """Read and validate one result file.

    Args:
        path: A result JSON file.

    Returns:
        The result dict.

    Raises:
        ResultError: If the file is not a regular file, is over :data:`RESULT_MAX_BYTES`, is not
            UTF-8 text, is not valid JSON, is nested too deeply to parse or does not follow the schema
            (the message starts with the path).
        OSError: If the file cannot be opened or read.
    """
    try:
        text = read_bytes_bounded(path, RESULT_MAX_BYTES, "result file").decode("utf-8")
        d = json.loads(text)
    except FileReadError as err:  # a link to /dev/zero, a pipe, a huge file: refused before it is read
        raise ResultError(str(err)) from err
    except UnicodeDecodeError as err:
        raise ResultError(f"{path}: not UTF-8 text ({err}), so not a result file; delete it or re-run the evaluation.") from err
    except json.JSONDecodeError as err:
        raise ResultError(f"{path}: not valid JSON ({err}); delete it and re-run the evaluation.") from err
    except RecursionError as err:
        raise ResultError(f"{path}: JSON nested too deeply to parse, so not a result file; delete it or re-run "
                          "the evaluation.") from err
    validate_result(d, path)
    return d


def list_result_files(results_dir: str | Path) -> list[Path]:
    """Paths ending in ``.json`` under ``results_dir/runs`` (temp/hidden names skipped), sorted.

    Everything so named is listed, a folder called ``x.json`` too: :func:`try_read_result` reports
    what is not a readable result file instead of letting it pass unseen.
    """
    runs = Path(results_dir) / "runs"
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.rglob("*.json") if not p.name.startswith("."))


def try_read_result(path: str | Path) -> tuple[dict[str, Any] | None, str]:
    """:func:`read_result`, with every way a file can fail turned into one message.

    Args:
        path: A path from :func:`list_result_files`.

    Returns:
        ``(result, "")``, or ``(None, "path: problem and fix")`` for a folder, a file that cannot
        be read, is not a regular file (a link to a device, a pipe), is over :data:`RESULT_MAX_BYTES`,
        is not UTF-8 text, is not valid JSON, is nested too deeply to parse, or does not follow the schema.
    """
    path = Path(path)
    if path.is_dir():
        return None, f"{path}: is a folder, not a result file; rename it so its name does not end in .json."
    try:
        return read_result(path), ""
    except ResultError as err:  # the message starts with the path
        return None, str(err)
    except OSError as err:
        return None, f"{path}: cannot be read ({err})."


def iter_results(results_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """The readable, valid result files under ``results_dir/runs``, sorted by path.

    A file that cannot be read or validated (:func:`try_read_result`) is skipped with one warning
    naming it and the problem, so one bad file does not stop a report built from the others;
    ``fpbench leaderboard --check`` reports such files and fails.

    Args:
        results_dir: Root of the results tree.

    Returns:
        ``[(path, result), ...]``; empty when there is no ``runs`` folder.
    """
    out = []
    for path in list_result_files(results_dir):
        result, problem = try_read_result(path)
        if result is None:
            logging.getLogger(__name__).warning("Skipped %s", problem)
            continue
        out.append((path, result))
    return out


SHOWN_POINTS = 3  # differing entries of one list named by index; the count says how many in all
# Results written before these existed lack them: ARUC; ties, the cross-fitted decision, tpr_resolution (#25).
_OPTIONAL_METRICS = ("aruc", "ties", "decision", "tpr_resolution")


def check_result(d: dict[str, Any]) -> list[str]:
    """Recompute every stored metric from ``per_model`` and list what the stored ones get wrong.

    Everything :func:`bench.metrics.compute_metrics` gives is recomputed with the stored FPR targets,
    groups and extras and compared with ``metrics`` key by key (floats to 1e-9, the rest exactly):
    ``auc``, ``aruc`` (when stored), ``tpr_at_fpr``, ``n_positive``, ``n_negative``,
    ``resolution_note``, every field of every group, and every ROC point; a key the recomputation
    lacks is reported too. Also ``queries_per_suspect`` (mean of ``queries``), each measured entry of
    ``budgets``, and any NaN or infinite number anywhere in the file. The CI is redrawn by
    :func:`bench.report.check.check_ci`.

    Args:
        d: A result dict that passed :func:`validate_result`.

    Returns:
        Discrepancy messages; empty when the stored metrics reproduce.
    """
    problems = [f"{name} is {value!r}: a result holds finite numbers only (JSON has no NaN or infinity); the file "
                "was edited or written by other code; re-run the evaluation." for name, value in _non_finite(d, "")]
    records, stored = d["per_model"], d["metrics"]
    try:
        targets = [float(k) for k in stored["tpr_at_fpr"]]
    except ValueError:
        return [*problems, f"metrics.tpr_at_fpr keys {sorted(stored['tpr_at_fpr'])} are not numbers like '0.01'."]
    extra_keys = sorted({k for r in records for k in r["extras"]})
    try:
        fresh = compute_metrics(
            [r["score"] for r in records],
            [1 if r["role"] == "positive" else 0 for r in records],
            [r["group"] for r in records],
            fpr_targets=targets,
            bootstrap=BootstrapConfig(n=0),
            extras={k: [r["extras"].get(k, math.nan) for r in records] for k in extra_keys},
        )
    except ValueError as err:
        return [*problems, f"per_model cannot be scored: {err}"]
    fresh.pop("ci")  # redrawn with its own settings by bench.report.check.check_ci
    fresh.update(result_blocks([r["score"] for r in records], [1 if r["role"] == "positive" else 0 for r in records],
                               targets))
    for key in _OPTIONAL_METRICS:
        if key not in stored:
            fresh.pop(key)
    _differences("metrics", {k: v for k, v in stored.items() if k != "ci"}, fresh, problems)
    if records:
        _differences("queries_per_suspect", d["queries_per_suspect"], sum(r["queries"] for r in records) / len(records),
                     problems)
    return problems + check_budget_entries(d)


def _non_finite(value: Any, name: str) -> list[tuple[str, float]]:
    """``(field, value)`` for every NaN or infinite float in ``value``, fields named like ``a.b[2]``."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(name, value)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _non_finite(item, f"{name}.{key}" if name else str(key))]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in _non_finite(item, f"{name}[{i}]")]
    return []


def _differences(name: str, got: Any, want: Any, problems: list[str]) -> None:
    """Append to ``problems`` where the stored ``got`` differs from the recomputed ``want``."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            problems.append(f"{name} is {_type_name(got)} {got!r:.60} but per_model gives an object.")
            return
        for key in sorted(set(got) - set(want)):
            problems.append(f"{_child(name, key)} is stored but per_model gives no such entry.")
        for key, value in want.items():
            if key not in got:
                problems.append(f"{name} lacks {key!r}, which per_model gives as {value!r:.60}.")
            else:
                _differences(_child(name, key), got[key], value, problems)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            shown = f"{len(got)} entries" if isinstance(got, list) else f"{_type_name(got)} {got!r:.60}"
            problems.append(f"{name} has {shown} but per_model gives {len(want)}.")
            return
        wrong = [i for i, (a, b) in enumerate(zip(got, want)) if not _same(a, b)]
        for i in wrong[:SHOWN_POINTS]:
            problems.append(f"{name}[{i}] is {got[i]!r} but per_model gives {want[i]!r}.")
        if len(wrong) > SHOWN_POINTS:
            problems.append(f"{name}: {len(wrong) - SHOWN_POINTS} more entries differ from what per_model gives.")
    elif not _same(got, want):
        problems.append(f"{name} is {got!r:.60} but per_model gives {want!r}.")


def _child(name: str, key: str) -> str:
    """``metrics.roc.fpr`` for fields, ``metrics.groups['ftll']`` for keys that are data (groups, FPR targets)."""
    return f"{name}[{key!r}]" if name in ("metrics.groups", "metrics.tpr_at_fpr") else f"{name}.{key}"


def _same(got: Any, want: Any) -> bool:
    """Numbers to 1e-9 (a bool is not a number), anything else exactly."""
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        return (isinstance(got, (int, float)) and not isinstance(got, bool)
                and math.isfinite(got) and isclose(got, want))
    return type(got) is type(want) and got == want
