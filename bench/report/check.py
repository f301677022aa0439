"""Integrity checks of a result file beyond its metrics (``fpbench leaderboard --check``).

What is re-derived from the file itself: ``config_sha256`` from ``config``, the file's name from the
hash and seed and its folder from ``zoo.name`` and ``method.name``, and the bootstrap CI redrawn from
``per_model`` with the stored settings. With a zoo folder (``--zoo-dir``), what the zoo can confirm:
the zoo is found by its manifest hash (or one of the manifest's earlier states, when the zoo only grew
since), and must be the one ``zoo.name`` names; each suspect's role, attack, kind, ``test_acc`` and
checkpoint sha256 against its manifest record, and each checkpoint's bytes against the manifest.
Scores rewritten consistently with the metrics cannot be told from measured ones without re-running
the methods (docs/decisions.md, Integrity).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.io import name_problem, read_bytes_bounded, sha256_json
from bench.methods import METHODS
from bench.metrics import BootstrapConfig, compute_metrics, isclose
from bench.results import result_path
from bench.zoo.store import MANIFEST_MAX_BYTES, ZooError, ZooStore

log = logging.getLogger(__name__)

SHOWN = 5  # at most this many model ids are named per kind of mismatch; the count says how many in all


def check_integrity(path: Path, result: dict[str, Any], results_dir: str | Path | None = None) -> list[str]:
    """What a validated result gets wrong about itself: its config hash, its file name, its folder and its CI.

    Args:
        path: The file the result was read from (its name is ``<config_sha256[:8]>-s<seed>.json``).
        result: A result that passed ``validate_result``.
        results_dir: The results tree ``path`` was listed from; when given, ``path`` must lie in
            ``runs/<zoo.name>/<method.name>/`` of it.

    Returns:
        Discrepancy messages (without the path); empty when the file is consistent.
    """
    problems = []
    config_hash = sha256_json(result["config"])
    if result["config_sha256"] != config_hash:
        problems.append(f"config_sha256 is {result['config_sha256'][:12]}… but config hashes to {config_hash[:12]}…: "
                        "config or config_sha256 was edited; re-run the evaluation.")
    expected_name = f"{result['config_sha256'][:8]}-s{result['seed']}.json"
    if path.name != expected_name:
        problems.append(f"the file is named {path.name} but config_sha256 and seed give {expected_name}: the file was "
                        "renamed or its config_sha256/seed edited.")
    return problems + _place_problems(path, result, results_dir) + check_ci(result) + _staleness(result)


def _staleness(result: dict[str, Any]) -> list[str]:
    """A board row must come from the current version of its method: an older one measured something the
    code no longer computes (rerun it, or retire the file). Another schema is refused when the file is read."""
    problems = []
    name, version = result["method"]["name"], str(result["method"]["version"])
    if name in METHODS and str(METHODS.get(name).version) != version:
        problems.append(f"method {name} version {version} is not the registered version {METHODS.get(name).version}: "
                        "the method changed since; re-run the evaluation, or retire the file.")
    return problems


def _place_problems(path: Path, result: dict[str, Any], results_dir: str | Path | None) -> list[str]:
    """``zoo.name`` and ``method.name`` must be safe folder names, and name the folders ``path`` is in."""
    names = {"zoo.name": result["zoo"]["name"], "method.name": result["method"]["name"]}
    bad = [f"{key} is {value!r:.60} but {problem}" for key, value in names.items() if (problem := name_problem(value))]
    if bad:  # never joined to a folder: it could lead out of the results tree or the zoo folder
        return [f"{'; '.join(bad)}: the file was edited or not written by fpbench; delete it or re-run the evaluation."]
    if results_dir is None:
        return []
    zoo, method = names["zoo.name"], names["method.name"]
    expected = result_path(results_dir, zoo, method, result["config_sha256"], result["seed"]).parent
    if os.path.abspath(path.parent) == os.path.abspath(expected):
        return []
    return [f"the file is in {_relative(path.parent, results_dir)}/ but zoo.name {zoo!r} and method.name {method!r} put "
            f"it in {_relative(expected, results_dir)}/: zoo.name or method.name was edited, or the file moved; move "
            "it back or re-run the evaluation."]


def _relative(folder: Path, results_dir: str | Path) -> str:
    """``folder`` relative to the results tree, POSIX style (``runs/smoke/akh``)."""
    return Path(os.path.relpath(folder, results_dir)).as_posix()


def _bootstrap_recipe(result: dict[str, Any]) -> dict[str, Any] | None:
    evaluation = result["config"].get("eval")
    boot = evaluation.get("bootstrap") if isinstance(evaluation, dict) else None
    return boot if isinstance(boot, dict) else None


def check_ci(result: dict[str, Any]) -> list[str]:
    """Redraw the bootstrap CI from ``per_model`` with the stored settings and compare (floats to 1e-9).

    Settings: ``metrics.ci.{n, confidence, seed}``; the seed from ``config.eval.bootstrap.seed`` in
    results written before the CI carried it. Where the config records ``eval.bootstrap``, the CI's
    settings must equal it. A CI with no seed anywhere cannot be redrawn and is not checked.

    Returns:
        Discrepancy messages; empty when the CI reproduces.
    """
    ci, recipe = result["metrics"]["ci"], _bootstrap_recipe(result)
    if ci is None:
        wanted = recipe.get("n") if recipe else None
        if isinstance(wanted, int) and wanted > 0:
            return [f"metrics.ci is null but config eval.bootstrap.n is {wanted}: the CI was removed; re-run the evaluation."]
        return []
    settings = {"n": ci.get("n"), "confidence": ci.get("confidence"), "seed": ci.get("seed", (recipe or {}).get("seed"))}
    problems = [f"metrics.ci.{key} is {settings[key]!r} but config eval.bootstrap.{key} is {recipe[key]!r}."
                for key in ("n", "confidence", "seed") if recipe and key in recipe and settings[key] != recipe[key]]
    if settings["seed"] is None:
        return problems
    try:
        config = BootstrapConfig(n=int(settings["n"]), confidence=float(settings["confidence"]), seed=int(settings["seed"]))
        stored_tpr = ci["tpr_at_fpr"]
        records = result["per_model"]
        fresh = compute_metrics([r["score"] for r in records], [1 if r["role"] == "positive" else 0 for r in records],
                                None, fpr_targets=[float(k) for k in stored_tpr], bootstrap=config)["ci"]
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        return [*problems, f"metrics.ci cannot be redrawn from its settings {settings} ({type(err).__name__}: {err})."]
    pairs = [("metrics.ci.auc", ci.get("auc"), fresh["auc"])]
    pairs += [(f"metrics.ci.tpr_at_fpr[{key!r}]", stored_tpr[key], fresh["tpr_at_fpr"][key]) for key in fresh["tpr_at_fpr"]]
    for name, got, want in pairs:
        if not (isinstance(got, list) and len(got) == 2 and all(isinstance(v, (int, float)) for v in got)
                and all(isclose(a, b) for a, b in zip(got, want))):
            problems.append(f"{name} is {got!r} but the bootstrap over per_model (n={config.n}, confidence="
                            f"{config.confidence}, seed={config.seed}) gives {want!r}.")
    return problems


class ZooChecker:
    """Checks results against the zoos under one folder, each tied to its zoo by the manifest's sha256.

    Every ``<zoo_dir>/<folder>/manifest.jsonl`` is read (bounded) and hashed once, whole and at each
    earlier state (:func:`_manifest_hashes`); each zoo's records are read and each checkpoint hashed once.
    """

    def __init__(self, zoo_dir: str | Path) -> None:
        self.zoo_dir = Path(zoo_dir)
        self._hashes: dict[str, tuple[str, set[str]]] | None = None  # folder -> (manifest sha256, earlier states)
        self._unreadable: dict[str, str] = {}  # folder -> why its manifest cannot be read
        self._records: dict[str, dict[str, dict[str, Any]]] = {}
        self._checkpoints: dict[tuple[str, str], str] = {}  # (zoo, model id) -> problem ("" when sound)

    def _scan(self) -> dict[str, tuple[str, set[str]]]:
        """Manifest hashes of every zoo folder under ``zoo_dir`` (read on first use)."""
        if self._hashes is None:
            self._hashes = {}
            for name in sorted(os.listdir(self.zoo_dir)) if self.zoo_dir.is_dir() else []:
                manifest = ZooStore(self.zoo_dir / name).manifest_path
                if not os.path.lexists(manifest):  # not a zoo (or not a folder)
                    continue
                try:
                    self._hashes[name] = _manifest_hashes(read_bytes_bounded(manifest, MANIFEST_MAX_BYTES, "zoo manifest"))
                except (OSError, ValueError) as err:
                    self._unreadable[name] = str(err) if isinstance(err, ValueError) else f"{manifest}: cannot be read ({err})."
        return self._hashes

    def _find(self, zoo: dict[str, Any]) -> tuple[str | None, list[str]]:
        """The zoo folder ``zoo`` (a result's ``zoo`` field) was measured on, and what is wrong about it."""
        hashes, sha, name = self._scan(), zoo["manifest_sha256"], zoo["name"]
        exact = [folder for folder, (full, _) in hashes.items() if full == sha]
        grown = [folder for folder, (_, earlier) in hashes.items() if sha in earlier]
        found = exact or grown
        if name in found:
            if name not in exact:
                log.info("Zoo %s grew since a result was measured on it (its manifest then is a prefix of today's).", name)
            return name, []
        if found:
            return found[0], [f"zoo.name is {name!r} but zoo.manifest_sha256 {sha[:12]}… is that of the zoo in "
                              f"{self.zoo_dir / found[0]}: zoo.name was edited (or the zoo folder renamed); restore "
                              "the name or re-run the evaluation."]
        if name in hashes:
            return name, [f"zoo.manifest_sha256 {sha[:12]}… matches neither {ZooStore(self.zoo_dir / name).manifest_path} "
                          f"({hashes[name][0][:12]}…) nor any earlier state of it, nor any other zoo under {self.zoo_dir}: "
                          "the field was edited, or the zoo was rebuilt or changed since; re-run the evaluation on this zoo."]
        if name in self._unreadable:
            return None, [self._unreadable[name]]
        return None, [f"no zoo under {self.zoo_dir} has manifest sha256 {sha[:12]}…, and none is named {name!r}, so "
                      "nothing confirms what the result says about its zoo; pass the --zoo-dir that holds the zoo it "
                      "was measured on, or re-run the evaluation."]

    def _checkpoint(self, store: ZooStore, record: dict[str, Any]) -> str:
        key = (str(store.root), record["model_id"])
        if key not in self._checkpoints:
            try:
                store.verify(record)  # False (missing file) is not a problem: the manifest still names the bytes
                self._checkpoints[key] = ""
            except ZooError as err:
                self._checkpoints[key] = str(err)
        return self._checkpoints[key]

    def check(self, result: dict[str, Any]) -> list[str]:
        """What ``result`` gets wrong about its zoo; that no zoo under the folder is its zoo is a problem too.

        Raises:
            ZooError: when the zoo's manifest cannot be read (the message names file, line and fix).
        """
        zoo = result["zoo"]
        folder, problems = self._find(zoo)
        if folder is None:
            return problems
        store = ZooStore(self.zoo_dir / folder)  # a folder listed from zoo_dir, not a name from the result
        if folder not in self._records:
            self._records[folder] = store.records()
        records = self._records[folder]
        mismatches: dict[str, list[str]] = {}
        source = records.get(zoo["source_id"]) if zoo["source_id"] else None
        if zoo["source_id"] and source is None:
            mismatches.setdefault("not in the manifest", []).append(f"source {zoo['source_id']}")
        if source is not None:
            _compare(mismatches, "source", {"test_acc": zoo["source_test_acc"], "sha256": zoo.get("source_sha256")},
                     source, self._checkpoint(store, source))
        for entry in result["per_model"]:
            if entry.get("endpoint"):  # queried through its API, never in the zoo (docs/byo.md, Endpoints)
                continue
            record = records.get(entry["model_id"])
            if record is None:
                mismatches.setdefault("not in the manifest", []).append(entry["model_id"])
                continue
            _compare(mismatches, entry["model_id"], entry, record, self._checkpoint(store, record))
        for what, items in mismatches.items():
            shown = "; ".join(items[:SHOWN]) + (f"; … {len(items) - SHOWN} more" if len(items) > SHOWN else "")
            problems.append(f"{len(items)} model(s) {what} of {store.manifest_path}: {shown}.")
        return problems


_FIELDS: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
    ("role", lambda a, b: a == b), ("attack", lambda a, b: a == b), ("kind", lambda a, b: a == b),
    ("test_acc", lambda a, b: isclose(a, b)), ("sha256", lambda a, b: a == b),
)


def _compare(mismatches: dict[str, list[str]], label: str, entry: dict[str, Any], record: dict[str, Any],
             checkpoint_problem: str) -> None:
    """Add to ``mismatches`` (by kind) every field of ``entry`` that its manifest ``record`` contradicts."""
    for name, same in _FIELDS:
        got, want = entry.get(name), record.get(name)
        if got is None or want is None:  # not recorded on one side (older files): nothing to compare
            continue
        if not same(got, want):
            shown = (f"{got[:12]}… vs {want[:12]}…" if name == "sha256" else f"{got!r} vs {want!r}")
            mismatches.setdefault(f"whose {name} differs from the manifest", []).append(f"{label} ({shown})")
    if checkpoint_problem:
        mismatches.setdefault("whose checkpoint differs from its manifest sha256", []).append(label)


def _manifest_hashes(data: bytes) -> tuple[str, set[str]]:
    """sha256 of the whole manifest and of every proper prefix ending at a line break.

    The build appends records and rewrites the file whole, so the manifest a result was measured on
    is such a prefix of a zoo that only grew since.
    """
    digest, prefixes, start = hashlib.sha256(), set(), 0
    while (end := data.find(b"\n", start)) != -1:
        digest.update(data[start:end + 1])
        prefixes.add(digest.copy().hexdigest())
        start = end + 1
    digest.update(data[start:])
    full = digest.hexdigest()
    prefixes.discard(full)
    return full, prefixes
