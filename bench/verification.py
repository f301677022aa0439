"""One-suspect verification: a fingerprint, one suspect, the method's score and its calibrated decision.

The model owner's everyday question. The fingerprint comes from a result file (the cached fingerprint
the loop used for it, found by the same cache key) or from a cached fingerprint folder. The suspect is
a zoo model id or a weights file (safetensors, or a torch state dict read with `weights_only=True`) of a
registered architecture, or an endpoint (`bench.endpoints`). The decision uses a threshold calibrated on
the negatives of the result's benchmark (`calibrated_threshold`; docs/byo.md, "Verify one suspect").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from bench import suspect_checks as checks
from bench.config import ConfigError
from bench.endpoints import Endpoint, EndpointError, open_endpoint, parse_endpoints, probe
from bench.evaluate import MethodRun, fingerprint_key, instantiate
from bench.fingerprint_import import IMPORT_KEY, FingerprintImportError, imported_dir, load_imported
from bench.io import inside
from bench.methods import METHODS
from bench.methods.base import Fingerprint, FingerprintIntegrityError, FingerprintMethod
from bench.oracle import Oracle
from bench.plugins import key_reference, unregistered_fix
from bench.results import ResultError, read_result
from bench.self_check import applies as self_check_applies
from bench.self_check import source_self_check, threshold_at
from bench.zoo.external import WEIGHT_SUFFIXES, load_external, resolve_file
from bench.zoo.jobs import data_info
from bench.zoo.store import ZooError, ZooStore
from datamodules import DataConfig, build_datamodule

DEFAULT_FPR = 0.01  # the calibration target: at most 1% of the benchmark's negatives above the threshold


class VerifyError(ValueError):
    """Bad verification input (fingerprint, result, suspect); raised before any query (CLI: exit 2)."""


@dataclass
class LoadedFingerprint:
    """A fingerprint with the method (config as recorded) that scores it, and the result it came from (or None)."""

    fingerprint: Fingerprint
    method: FingerprintMethod
    entry: dict[str, Any]
    result: dict[str, Any] | None = None
    source: str = ""  # where it was loaded from
    data: dict[str, Any] = field(default_factory=dict)  # the result's `data:` config (empty for a folder)


def load_fingerprint(path: str | os.PathLike, cache_dir: str | os.PathLike = ".cache/fpbench",
                     method: str | None = None) -> LoadedFingerprint:
    """A fingerprint from a result JSON (via the loop's cache key under `cache_dir`) or a cached folder.

    A folder is scored with the method's default config (a result supplies the config it was run with).

    Args:
        path: a result JSON or a cached fingerprint folder.
        cache_dir: the run's `paths.cache_dir`.
        method: the registry key of the method that made it (`--method`, resolved by the caller: a class
            named `package.module:Class` is registered under `package.module-Class`); None: the name the
            result or the fingerprint records, which must be registered already.

    Raises:
        VerifyError: the file is not a valid result, the cached fingerprint is missing or its files changed,
            or `method` is not the method that made it.
    """
    target = Path(path)
    if target.is_dir():
        try:
            fingerprint = Fingerprint.load(target)
        except (FingerprintIntegrityError, ValueError, OSError, KeyError) as err:
            raise VerifyError(f"--fingerprint {target}: not a usable cached fingerprint ({err}).") from None
        entry = {"name": method or fingerprint.method}
        scorer = method_of(entry)
        if scorer.name != fingerprint.method:
            raise VerifyError(f"--method {method} makes '{scorer.name}' fingerprints, but {target} holds a "
                              f"'{fingerprint.method}' fingerprint: name the class that made it.")
        return LoadedFingerprint(fingerprint, scorer, entry, source=str(target))
    if not target.is_file():
        raise VerifyError(f"--fingerprint {target} does not exist; give a result JSON (results/runs/...) or a cached "
                          "fingerprint folder (<cache_dir>/fingerprints/<method>/<key>).")
    try:
        result = read_result(target)
    except (ResultError, ValueError, OSError) as err:
        raise VerifyError(f"--fingerprint {target}: not a valid result file ({err}).") from None
    entry = result_entry(result)
    if method is not None and method != entry["name"]:
        made_by = key_reference(entry["name"]) or entry["name"]
        raise VerifyError(f"--method names the method '{method}', but {target} was measured by '{entry['name']}': "
                          f"drop --method, or give --method {made_by}.")
    scorer = method_of(entry)
    folder = cached_fingerprint_dir(result, scorer, cache_dir, target)
    if entry.get(IMPORT_KEY):
        try:
            fingerprint = load_imported(cache_dir, entry["name"], entry[IMPORT_KEY])
        except FingerprintImportError as err:
            raise VerifyError(str(err)) from None
    else:
        if not Fingerprint.exists(folder):
            raise VerifyError(f"The fingerprint of {target} is not cached at {folder}. Pass --cache-dir (the run's "
                              "paths.cache_dir), or rerun `fpbench run` with that recipe to regenerate it (a method "
                              f"version other than {scorer.version} changes the key too).")
        try:
            fingerprint = Fingerprint.load(folder)
        except FingerprintIntegrityError as err:
            raise VerifyError(f"The cached fingerprint of {target} is damaged: {err}") from None
    recorded = (result.get("fingerprint") or {}).get("sha256")
    if recorded is not None and fingerprint.sha256 != recorded:
        raise VerifyError(f"The cached fingerprint at {folder} (sha256 {str(fingerprint.sha256)[:12]}…) is not the one "
                          f"{target} measured ({recorded[:12]}…); it was regenerated since. Rerun `fpbench run`.")
    data = (result.get("config") or {}).get("data") or {}
    return LoadedFingerprint(fingerprint, scorer, entry, result, str(target), data)


def result_entry(result: dict[str, Any]) -> dict[str, Any]:
    """The method entry (`{"name": ..., **config}`) a result was run with."""
    return {"name": result["method"]["name"], **(result["method"].get("config") or {})}


def cached_fingerprint_dir(result: dict[str, Any], method: FingerprintMethod, cache_dir: str | os.PathLike,
                           where: str | os.PathLike = "the result") -> Path:
    """Where the loop cached the fingerprint `result` measured: `<cache_dir>/fingerprints/<method>/<key>`
    (`bench.evaluate.fingerprint_key`), or the imported fingerprint's folder its entry names.

    Raises:
        VerifyError: the result records no source sha256 or split hashes (an old result), so no key can be made.
    """
    entry = result_entry(result)
    if entry.get(IMPORT_KEY):
        return imported_dir(cache_dir, entry["name"], entry[IMPORT_KEY])
    zoo = result["zoo"]
    if not zoo.get("source_sha256") or not zoo.get("split_hashes"):
        raise VerifyError(f"{where} records no source checkpoint sha256 or split hashes, so its cached "
                          "fingerprint cannot be found; rerun `fpbench run` to write a current result.")
    key = fingerprint_key(MethodRun(entry=entry, method=method, config_sha256=""), zoo["source_sha256"],
                          zoo["split_hashes"], int(result["seed"]))
    return Path(cache_dir) / "fingerprints" / entry["name"] / key


def method_of(entry: dict[str, Any]) -> FingerprintMethod:
    """The method a result entry (`{"name": ..., **config}`) names, with that config; its name is looked up,
    never imported (`bench.plugins.unregistered_fix` says what to do when it is not registered)."""
    name = str(entry.get("name"))
    if name not in METHODS:
        raise VerifyError(f"Cannot rebuild method '{name}': this fpbench does not register it; "
                          f"{unregistered_fix(name)}.")
    try:
        method = instantiate(entry)
    except Exception as err:  # unknown name (RegistryError), a config the current method no longer accepts
        raise VerifyError(f"Cannot rebuild method {entry.get('name')!r} from the recorded config: {err}") from None
    if method.access == "manifest":
        raise VerifyError(f"'{entry['name']}' is a loop guard that reads the zoo manifest; it cannot verify a suspect.")
    return method


def calibrated_threshold(per_model: list[dict[str, Any]], fpr: float = DEFAULT_FPR) -> dict[str, Any]:
    """The decision threshold from a benchmark's negatives: a suspect is "derived" when its score > threshold.

    With `n` negatives and `k = floor(fpr * n)` false positives allowed, the threshold is the
    (k+1)-th highest negative score, so at most k negatives (FPR <= fpr) lie strictly above it. With
    fewer than 1/fpr negatives, k = 0: the threshold is the highest negative score.

    Raises:
        VerifyError: `fpr` outside [0, 1), or no negatives to calibrate on.
    """
    if not 0 <= fpr < 1:
        raise VerifyError(f"--fpr {fpr} must be in [0, 1), e.g. 0.01.")
    negatives = sorted((float(r["score"]) for r in per_model if r["role"] == "negative"), reverse=True)
    if not negatives:
        raise VerifyError("The result has no negatives to calibrate a threshold on.")
    threshold = threshold_at(negatives, fpr)
    above = sum(score > threshold for score in negatives)
    return {"threshold": threshold, "fpr_target": fpr, "n_negative": len(negatives), "negatives_above": above,
            "fpr_on_negatives": above / len(negatives)}


def _data_info(name: str | dict[str, Any]) -> dict[str, Any]:
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), {"name": name} if isinstance(name, str) else name)
    try:
        return data_info(build_datamodule(cfg, data_dir=".", seed=0))  # attributes only: no data is read
    except Exception as err:  # an unknown datamodule name
        raise VerifyError(f"Cannot describe the data for the suspect's architecture: {err}") from None


def load_weights_model(path: str | os.PathLike, arch: str, data: dict[str, Any],
                       arch_params: dict[str, Any] | None = None,
                       normalization: dict[str, Any] | None = None) -> nn.Module:
    """A registered architecture with weights from a file (safetensors, or a state dict; never unpickled).

    Args:
        path: `.safetensors`, or `.pt`/`.pth` read with `torch.load(weights_only=True)`.
        arch: the registered architecture (`fpbench list archs`); its first layer normalises [0,1] pixels.
        data: `bench.zoo.jobs.data_info` of the task (channels, classes, image size, mean, std).
        arch_params: the architecture's parameters, if not its defaults.
        normalization: `{"mean", "std"}` the model was trained with (default: the dataset's).

    Raises:
        VerifyError: the file is missing, unreadable, or its tensors do not fit the architecture.
    """
    file = Path(path)
    try:  # a folder, a device or a missing file is named as such before its suffix is looked at
        resolve_file(str(file), None, f"--suspect {file}")
    except ConfigError as err:
        raise VerifyError(str(err)) from None
    if file.suffix not in WEIGHT_SUFFIXES:
        raise VerifyError(f"--suspect {file}: unsupported weights type '{file.suffix}'; use {', '.join(WEIGHT_SUFFIXES)}.")
    entry = {"weights": str(file), "arch": arch, "arch_params": dict(arch_params or {}), **(normalization or {})}
    try:  # the zoo's reader of external weights: never unpickles, names missing/unexpected keys and shapes
        model = load_external(entry, SimpleNamespace(**data), None, f"--suspect {file}")
    except ConfigError as err:
        raise VerifyError(str(err)) from None
    return model.eval()


def _endpoint(spec: str, loaded: LoadedFingerprint, data: str | None, access: str,
              transport: dict[str, Any] | None = None) -> tuple[Endpoint, dict[str, Any]]:
    """An HTTP endpoint (`http(s)://...`) or a Python callable (`py:package.module:function`), probed once;
    `transport`: endpoint spec keys such as `timeout_s` and `max_response_bytes` (validated like a recipe's)."""
    if data is None and not loaded.data:
        raise VerifyError("--fingerprint is a folder, so the task is unknown: pass --data NAME (e.g. digits).")
    info = _data_info(data or loaded.data)
    target = {"callable": spec.removeprefix("py:")} if spec.startswith("py:") else {"url": spec}
    try:  # the recipe's own checks: URL form, callable importable, probabilities for a method that needs them
        (endpoint_spec,) = parse_endpoints([{"label": "suspect", "role": "positive", "access": access, **target,
                                             **(transport or {})}],
                                           {loaded.entry["name"]: loaded.method.access})
        endpoint = open_endpoint(endpoint_spec, info["num_classes"])
        probe(endpoint, (info["in_channels"], info["image_size"], info["image_size"]))  # not counted: a health check
    except (ValueError, EndpointError) as err:
        raise VerifyError(str(err)) from None
    return endpoint, {"kind": "endpoint", "path": spec, "access": access}


@dataclass
class WeightsOptions:
    """What `verify` knows of a weights-file suspect besides the file: its input normalisation (`mean`/`std`,
    None: inherit it, see `bench.suspect_checks.choose_normalization`), the test accuracy its owner
    recorded (checked), and where the benchmark's data lives (for that check)."""

    mean: list[float] | None = None
    std: list[float] | None = None
    test_acc: float | None = None
    data_dir: str = "data"
    endpoint: dict[str, Any] = field(default_factory=dict)  # an endpoint's `timeout_s` / `max_response_bytes`


def load_suspect(spec: str, loaded: LoadedFingerprint, zoo_dir: str | os.PathLike = "zoo", arch: str | None = None,
                 data: str | None = None, endpoint_access: str = "labels",
                 options: WeightsOptions | None = None) -> tuple[nn.Module | Endpoint, dict[str, Any]]:
    """The suspect: a weights file (needs `arch`), a model id of the result's zoo, or an endpoint.

    An endpoint is `http(s)://...` (the JSON protocol of docs/byo.md, "Endpoints") or
    `py:package.module:function`; `endpoint_access` ("labels" | "probabilities") is what it grants.
    It is probed once with a zero input before any fingerprint query (the probe is not counted).
    A weights file is built with an explicit normalisation and its test accuracy is measured
    (`_weights_suspect`).

    Raises:
        VerifyError: a bad file, an unknown model id, missing `arch`/`data`, or a failed accuracy check.
    """
    if spec.startswith(("http://", "https://", "py:")):
        return _endpoint(spec, loaded, data, endpoint_access, (options or WeightsOptions()).endpoint)
    if Path(spec).suffix in WEIGHT_SUFFIXES or Path(spec).is_file() or (arch is not None and os.path.exists(spec)):
        return _weights_suspect(spec, loaded, zoo_dir, arch, data, options or WeightsOptions())
    if loaded.result is None:
        raise VerifyError(f"--suspect {spec} is not a weights file, and a zoo model id needs a result file as "
                          "--fingerprint (it names the zoo).")
    try:  # the zoo's name comes from a file: it must stay a folder of --zoo-dir
        store = ZooStore(inside(zoo_dir, str(loaded.result["zoo"]["name"])))
    except ValueError as err:
        raise VerifyError(f"--fingerprint {loaded.source}: its zoo.name is not a zoo folder name ({err}).") from None
    try:
        record = store.records().get(spec)
        if record is None:
            raise VerifyError(f"--suspect {spec} is neither a weights file ({', '.join(WEIGHT_SUFFIXES)}) nor a model "
                              f"of zoo {store.root} (--zoo-dir {zoo_dir}).")
        model = store.load_model(spec, record)
    except ZooError as err:
        raise VerifyError(str(err)) from None
    return model, {"kind": "zoo", "model_id": spec, "role": record.get("role"), "provenance": record.get("provenance")}


def fingerprint_self_check(loaded: LoadedFingerprint, zoo_dir: str | os.PathLike,
                           fpr: float = DEFAULT_FPR) -> dict[str, Any] | None:
    """Score the benchmark's source with the fingerprint: it must score as derived (`bench.self_check`).

    Returns:
        The check's record, or None when it cannot run (a folder fingerprint, no negatives to calibrate on,
        or the result's zoo is not under `zoo_dir`; `verify` then says so).

    Raises:
        VerifyError: the fingerprint does not recognise its own source (an edited cache entry).
    """
    if loaded.result is None or not self_check_applies(loaded.method):
        return None
    zoo = loaded.result["zoo"]
    try:
        store = ZooStore(inside(zoo_dir, str(zoo["name"])))
        record = store.records().get(str(zoo.get("source_id")))
        if record is None or record.get("sha256") != zoo.get("source_sha256"):
            return None  # not the benchmark's source (another build of the zoo): nothing to check against
        source = store.load_model(record["model_id"], record)
    except (ValueError, ZooError):
        return None
    check = source_self_check(loaded.method, loaded.fingerprint, source, loaded.result["per_model"], fpr)
    if not check["passed"]:
        raise VerifyError(f"The fingerprint {loaded.source} uses does not recognise its own source: the source scores "
                          f"{check['source_score']:.6g}, not above the threshold {check['threshold']} of the benchmark's "
                          "negatives. The cached fingerprint was changed (with its sha256.json); delete it and rerun "
                          "`fpbench run` to regenerate it.")
    return check


def _weights_suspect(spec: str, loaded: LoadedFingerprint, zoo_dir: str | os.PathLike, arch: str | None,
                     data: str | None, options: WeightsOptions) -> tuple[nn.Module, dict[str, Any]]:
    """A weights file built with an explicit normalisation, its test accuracy measured and checked."""
    if arch is None:
        raise VerifyError(f"--suspect {spec} is a weights file: name its architecture with --arch (fpbench list archs).")
    if data is None and not loaded.data:
        raise VerifyError("--fingerprint is a folder, so the task is unknown: pass --data NAME (e.g. digits).")
    source = checks.source_normalization(loaded.result, zoo_dir)
    try:
        normalization, origin = checks.choose_normalization(arch, options.mean, options.std, source)
    except ValueError as err:
        raise VerifyError(str(err)) from None
    if options.mean is None and checks.carries_normalization(spec):  # an fpbench checkpoint knows its own
        normalization, origin = {}, "the file's own (normalize.mean/std)"
    model = load_weights_model(spec, arch, _data_info(data or loaded.data), normalization=normalization)
    used = checks.model_normalization(model) or {}
    split = checks.test_split(loaded.result, options.data_dir) if loaded.result is not None else None
    source_acc = (loaded.result or {}).get("zoo", {}).get("source_test_acc")
    try:
        measured, warnings = checks.accuracy_check(model, split, options.test_acc, source_acc)
    except ValueError as err:
        raise VerifyError(f"--suspect {spec}: {err}") from None
    return model, {"kind": "weights", "path": str(spec), "arch": arch, "normalization": used,
                   "normalization_from": origin, "test_acc": measured, "warnings": warnings}


def score_suspect(method: FingerprintMethod, fingerprint: Fingerprint, oracle: Oracle,
                  result: dict[str, Any] | None = None, fpr: float = DEFAULT_FPR) -> dict[str, Any]:
    """Score one suspect through its `Oracle` and decide at the threshold calibrated on `result`'s negatives.

    Returns:
        `{"method", "score", "figures", "queries", "threshold", "decision"}`: `queries` spent by this
        call; `threshold` (the `calibrated_threshold` record) and `decision` ("derived" |
        "independent") are None without a result to calibrate on.
    """
    if method.name != fingerprint.method:
        raise VerifyError(f"A {fingerprint.method} fingerprint cannot be scored by method '{method.name}'.")
    calibration = calibrated_threshold(result["per_model"], fpr) if result is not None else None  # before any query
    before = oracle.queries
    figures = method.measure(fingerprint, oracle)
    score = float(figures["score"])
    decision = None if calibration is None else ("derived" if score > calibration["threshold"] else "independent")
    return {"method": method.name, "score": score, "figures": {k: float(v) for k, v in figures.items()},
            "queries": oracle.queries - before, "threshold": calibration, "decision": decision}


def verify_lines(outcome: dict[str, Any], loaded: LoadedFingerprint, suspect: dict[str, Any]) -> list[str]:
    """What `fpbench verify` prints."""
    what = suspect.get("model_id") or suspect.get("path")
    lines = [f"fingerprint: {loaded.source} ({outcome['method']}, sha256 {str(loaded.fingerprint.sha256)[:12]}…)",
             f"suspect: {what} ({suspect['kind']}{', ' + suspect['provenance'] if suspect.get('provenance') else ''})",
             *_suspect_lines(suspect),
             f"score: {outcome['score']:.6g}",
             *(f"  {k}: {v:.6g}" for k, v in outcome["figures"].items() if k != "score"),
             f"queries: {outcome['queries']}"]
    calibration = outcome["threshold"]
    if calibration is None:
        lines.append("decision: none (a cached folder carries no benchmark to calibrate on; pass its result file)")
    else:
        lines.append(f"threshold: {calibration['threshold']:.6g} (FPR target {calibration['fpr_target']:g}: "
                     f"{calibration['negatives_above']} of {calibration['n_negative']} negatives of the benchmark above it)")
        lines.append(f"decision: {outcome['decision'].upper()} (score {'>' if outcome['decision'] == 'derived' else '<='} "
                     "threshold)")
    return lines


def _suspect_lines(suspect: dict[str, Any]) -> list[str]:
    """A weights file's normalisation and measured accuracy, and any warning, as `verify` prints them."""
    lines = []
    if suspect.get("normalization"):
        norm = suspect["normalization"]
        lines.append(f"normalisation: mean {[round(v, 6) for v in norm['mean']]}, std {[round(v, 6) for v in norm['std']]} "
                     f"({suspect['normalization_from']})")
    if suspect.get("kind") == "weights" and suspect.get("test_acc") is not None:
        lines.append(f"suspect test accuracy: {suspect['test_acc']:.4f}")
    return lines + list(suspect.get("warnings") or [])


def self_check_line(check: dict[str, Any] | None, loaded: LoadedFingerprint) -> str:
    """What `verify` prints of the fingerprint's self-check (`fingerprint_self_check`)."""
    if check is not None:
        return (f"self-check: the fingerprint scores its own source {check['source_score']:.6g} > threshold "
                f"{check['threshold']} (it recognises the model it was made from)")
    if loaded.result is None or not self_check_applies(loaded.method):
        return "self-check: not applicable (no benchmark result, or a guard method)"
    return ("self-check: not run (the benchmark's source is not under --zoo-dir; pass the run's paths.zoo_dir to "
            "check that the fingerprint recognises its source)")
