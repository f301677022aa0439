"""The one evaluation loop: build the zoo, fingerprint the source, score every suspect, write results.

Fingerprints are generated first (or loaded from the cache), then each suspect is loaded once and
queried by every method through its own `Oracle`, so a zoo of large models is read from disk once.
Pool models are never suspects: the loop checks it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench import tracking
from bench.budgets import BudgetPlan, budget_descriptors, plan_budgets, score_at_budgets
from bench.config import ConfigError, run_config, run_config_sha256, to_dict
from bench.deploy import SplitCache, deploy_suspect, oracle_opener, suspect_chain
from bench.endpoints import Endpoint, EndpointError, open_endpoint, parse_endpoints, probe
from bench.fingerprint_import import IMPORT_KEY, FingerprintImportError, check_imports_exist, load_imported
from bench.io import sha256_json
from bench.methods import Fingerprint, FingerprintMethod, GenerationContext, Pools, instantiate
from bench.methods.base import FingerprintIntegrityError
from bench.metrics import format_fpr, fpr_label, result_fpr_targets
from bench.oracle import Oracle
from bench.progress import counted, draws_bars, short_list
from bench.published import overwrite_decision
from bench.report import write_leaderboard, write_plots
from bench.report.row_figures import min_negatives
from bench.results import make_result, result_path, write_result
from bench.self_check import applies as self_check_applies
from bench.self_check import source_self_check
from bench.suspect_checks import model_normalization
from bench.suspect_table import separation_lines, suspect_table_lines
from bench.training import predicted_labels
from bench.zoo.attacks import attack_facts
from bench.zoo.build import BuildReport, build_zoo, recipe_threads
from bench.zoo.integrity import BehaviourCheck
from bench.zoo.jobs import agreement
from bench.zoo.pool_plan import pool_jobs_for, pool_summary
from datamodules import build_datamodule

log = logging.getLogger(__name__)


@dataclass
class MethodRun:
    """One method's state during a benchmark."""

    entry: dict[str, Any]
    method: FingerprintMethod
    config_sha256: str
    fingerprint: Fingerprint | None = None
    cached: bool = False
    generate_seconds: float = 0.0
    verify_seconds: float = 0.0
    pool: dict[str, Any] | None = None
    per_model: list[dict[str, Any]] = field(default_factory=list)
    budgets: list[BudgetPlan] = field(default_factory=list)  # eval.budgets, subsampled once (docs/metrics.md)
    budget_seconds: float = 0.0  # querying suspects at the budgets (not in verify_seconds)
    cache_dir: Path | None = None  # <cache_dir>/fingerprints/<method>/<fingerprint_key>
    self_check: dict[str, Any] | None = None  # does the fingerprint recognise its source (bench.self_check)

    @cached_property
    def stream(self) -> str:
        """A deployment's random draws for this entry: one stream per method entry (docs/deployment.md)."""
        return sha256_json(self.entry)[:16]


@dataclass
class BenchmarkOutcome:
    zoo: BuildReport
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # result path -> result
    failed: dict[str, str] = field(default_factory=dict)  # method -> error (its result is not written)
    refused: dict[str, dict[str, Any]] = field(default_factory=dict)  # result path -> result a published file kept out
    leaderboard: Path | None = None
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    # Wall seconds of this run by phase: "zoo" (build or verify), "generate <method>" (or cache load),
    # "verify" (every suspect loaded once and queried by every method), "report" (leaderboard, plots).
    phases: dict[str, float] = field(default_factory=dict)


def method_pool_specs(cfg: DictConfig) -> list[Any]:
    """The defender pools the recipe's methods ask for (so `fpbench zoo` builds them too)."""
    specs = (instantiate(entry).pool_spec() for entry in to_dict(cfg)["methods"])
    return [spec for spec in specs if spec is not None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fingerprint_key(run: MethodRun, source_sha256: str, split_hashes: dict[str, str], seed: int) -> str:
    """Cache key: method name, version and generation config, the source checkpoint and the owner's data.

    The method's `verification_fields` (e.g. ADV-TRA's threshold and score) are left out: they do
    not change the fingerprint.
    """
    config = {k: v for k, v in run.entry.items() if k not in run.method.verification_fields}
    return sha256_json({"method": run.entry["name"], "version": run.method.version, "config": config,
                        "source": source_sha256, "owner": split_hashes["owner"], "test": split_hashes["test"],
                        "seed": seed})[:16]


def _generate(run: MethodRun, source: torch.nn.Module, ctx: GenerationContext, cache_dir: Path) -> None:
    start = time.perf_counter()
    if run.entry.get(IMPORT_KEY):  # an imported fingerprint: scored, never generated (docs/byo.md)
        # cache_dir is <paths.cache_dir>/fingerprints/<method>/<key>
        run.fingerprint = load_imported(cache_dir.parents[2], run.entry["name"], run.entry[IMPORT_KEY])
        run.cached, run.generate_seconds = True, 0.0
        log.info("%s: scoring imported fingerprint %s", run.entry["name"], run.entry[IMPORT_KEY])
        return
    if Fingerprint.exists(cache_dir) and (cached := _load_cached(run, cache_dir)) is not None:
        run.fingerprint, run.cached = cached, True
        run.generate_seconds = _generation_seconds(run.fingerprint)
        log.info("%s: reusing cached fingerprint %s (%.2f s to load; generated in %.1f s)", run.entry["name"], cache_dir,
                 time.perf_counter() - start, run.generate_seconds)
        return
    log.info("%s: generating the fingerprint", run.entry["name"])
    fingerprint = run.method.generate(source, ctx)  # the contract times it: meta["generation_seconds"]
    run.generate_seconds = _generation_seconds(fingerprint)
    fingerprint.save(cache_dir)  # sets fingerprint.sha256, the hash the result records
    run.fingerprint = fingerprint
    log.info("%s: fingerprint generated in %.1f s -> %s", run.entry["name"], run.generate_seconds, cache_dir)


def _load_cached(run: MethodRun, cache_dir: Path) -> Fingerprint | None:
    """The verified cached fingerprint, or None when it must be regenerated (docs/decisions.md, Integrity).

    An entry without recorded hashes (cached by an older fpbench, or a save cut short) is regenerated
    in place; one whose files differ from their recorded sha256 is moved aside to
    `<key>.rejected-<UTC time>` (kept for inspection, never used) and regenerated.
    """
    try:
        return Fingerprint.load(cache_dir)
    except FingerprintIntegrityError as err:
        if err.unrecorded:
            log.info("%s: cached fingerprint %s has no recorded sha256 (%s); regenerating it.", run.entry["name"],
                     cache_dir, err)
            return None
        _set_aside(cache_dir, f"{run.entry['name']}: cached fingerprint not used: {err}")
        return None


def _set_aside(cache_dir: Path, reason: str) -> Path:
    """Move a cached fingerprint to `<key>.rejected-<UTC time>` (kept for inspection, never used again)."""
    aside = cache_dir.with_name(f"{cache_dir.name}.rejected-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}")
    cache_dir.rename(aside)
    log.warning("%s. Moved the entry aside to %s; regenerating it.", reason, aside)
    return aside


def _generation_seconds(fingerprint: Fingerprint) -> float:
    """Wall seconds of the generation (`generate_seconds` in fingerprints cached before the contract timed it)."""
    meta = fingerprint.meta
    return float(meta.get("generation_seconds", meta.get("generate_seconds", 0.0)))


def load_pools(method: FingerprintMethod, cfg: DictConfig, zoo: BuildReport, device: torch.device,
               records: dict[str, dict[str, Any]] | None = None,
               behaviour: BehaviourCheck | None = None) -> Pools | None:
    """The defender pools `method.pool_spec()` asks for, loaded from the built zoo (None: it asks for none).

    `records`: the zoo's manifest records if the caller has read them already; `behaviour`: each pool
    model is checked against its record before use, as suspects are (`bench.zoo.integrity`).
    """
    spec = method.pool_spec()
    if spec is None:
        return None
    records = zoo.store.records() if records is None else records
    jobs = pool_jobs_for(cfg, zoo.plan, spec)
    pools = Pools(model_ids=[j.model_id for j in jobs])
    for job in jobs:
        model = zoo.store.load_model(job.model_id, records[job.model_id]).to(device)
        if behaviour is not None:
            behaviour.check(model, records[job.model_id])
        (pools.surrogates if job.kind == "surrogate" else pools.references).append(model)
    return pools


def _pools(run: MethodRun, cfg: DictConfig, zoo: BuildReport, device: torch.device,
           records: dict[str, dict[str, Any]], behaviour: BehaviourCheck | None = None) -> Pools | None:
    pools = load_pools(run.method, cfg, zoo, device, records, behaviour)
    if pools is not None:  # `models`: what each pool model is and how it differs from the scored suspects
        run.pool = {"model_ids": pools.model_ids, "train_seconds": sum(records[i]["train_seconds"] for i in pools.model_ids),
                    "models": pool_summary(zoo.plan, pools.model_ids)}
    return pools


def run_benchmark(cfg: DictConfig, progress: bool = True) -> BenchmarkOutcome:
    """Build the zoo if needed, evaluate every configured method, write one result per method.

    Zoo, generation and verification run at torch's thread count `compute.cpu_threads` when the
    recipe gives one; the caller's own count is back in force on return. `eval.progress=false` turns
    off every progress bar of the run (zoo build, generation, verification) whatever `progress` says
    (docs/recipes.md, "Progress bars").
    """
    with recipe_threads(cfg):
        return _run_benchmark(cfg, progress and bool(cfg.eval.progress))


def _run_benchmark(cfg: DictConfig, progress: bool) -> BenchmarkOutcome:
    start = time.perf_counter()
    runs = [MethodRun(entry=e, method=instantiate(e), config_sha256=run_config_sha256(cfg, e))
            for e in to_dict(cfg)["methods"]]
    if not runs:
        raise ConfigError("The recipe configures no methods; add `methods: [{name: adv_tra}]` or pass methods=[...].")
    try:  # an imported fingerprint that is missing or damaged stops the run before the zoo is built
        check_imports_exist([r.entry for r in runs], cfg.paths.cache_dir)
    except FingerprintImportError as err:
        raise ConfigError(str(err)) from None
    endpoints = _open_endpoints(cfg, runs)  # probed now: an unreachable one stops the run before any compute
    pool_specs = [spec for spec in (r.method.pool_spec() for r in runs) if spec is not None]
    phase_start = time.perf_counter()
    zoo = build_zoo(cfg, pool_specs, progress=progress, logger_factory=tracking.training_logger_factory(cfg),
                     require_suspects=True)
    plan, store = zoo.plan, zoo.store
    records = store.records()
    suspects = plan.by_role("positive", "negative")
    pool_ids = {j.model_id for j in plan.by_role("pool")}
    if pool_ids & {j.model_id for j in suspects}:
        raise RuntimeError(f"Pool models would be scored as suspects: {sorted(pool_ids & {j.model_id for j in suspects})}.")
    device = resolve_device(cfg.eval.device)
    source_record = records[plan.source.model_id]
    source = store.load_model(plan.source.model_id, source_record).to(device)
    behaviour = BehaviourCheck(zoo.datamodule, source, source_record, str(store.manifest_path))  # before any use
    cache_root = Path(cfg.paths.cache_dir) / "fingerprints"
    outcome = BenchmarkOutcome(zoo=zoo)
    outcome.phases["zoo"] = time.perf_counter() - phase_start
    generate = partial(_generate_run, source=source, cfg=cfg, zoo=zoo, device=device, records=records,
                       progress=progress, behaviour=behaviour)
    for run in runs:
        phase_start = time.perf_counter()
        run.cache_dir = cache_root / run.entry["name"] / fingerprint_key(run, source_record["sha256"],
                                                                        plan.split_hashes, cfg.seed)
        try:
            generate(run)
        except Exception as err:  # one method failing must not cost the others their results
            log.error("%s: generation failed: %s: %s", run.entry["name"], type(err).__name__, err)
            outcome.failed[run.entry["name"]] = f"{type(err).__name__}: {err}"
        phase = f"generate {run.entry['name']}"  # two entries of one method (e.g. two adv_tra scores) add up
        outcome.phases[phase] = outcome.phases.get(phase, 0.0) + time.perf_counter() - phase_start
    runs = [run for run in runs if run.fingerprint is not None]
    for run in runs:  # each budget's subset drawn once per method, the same for every suspect
        run.budgets = plan_budgets(run.method, run.fingerprint, cfg.eval.budgets, cfg.seed)
    phase_start = time.perf_counter()

    verify = partial(_verify_suspects, cfg=cfg, zoo=zoo, records=records, behaviour=behaviour, device=device,
                     progress=progress)
    verify(runs)
    _self_checks(runs, verify, generate, source, cfg)
    for endpoint in endpoints:  # suspects behind an API, after the zoo's (docs/byo.md, "Endpoints")
        _score_endpoint(endpoint, runs, zoo.datamodule, source)
    outcome.phases["verify"] = time.perf_counter() - phase_start
    phase_start = time.perf_counter()
    zoo_info = {"name": plan.name, "manifest_sha256": store.manifest_sha256(), "dataset": plan.dataset,
                "split_hashes": plan.split_hashes, "source_id": plan.source.model_id,
                "source_test_acc": source_record["test_acc"], "source_sha256": source_record["sha256"],
                # what `fpbench verify` builds a same-architecture weights file with (bench.suspect_checks)
                "source_normalization": {"arch": source_record["arch"], "arch_params": source_record["arch_params"],
                                         **(model_normalization(source) or {})}}
    _write_results(cfg, runs, zoo_info, outcome)
    outcome.leaderboard, _ = write_leaderboard(cfg.paths.results_dir)
    outcome.plots = write_plots(cfg.paths.results_dir)
    outcome.phases["report"] = time.perf_counter() - phase_start
    for path, result in outcome.results.items():  # W&B last: every file above is written whatever W&B does
        tracking.log_result(cfg, result, Path(path))
    outcome.seconds = time.perf_counter() - start
    return outcome


def _verify_suspects(runs: list[MethodRun], cfg: DictConfig, zoo: BuildReport, records: dict[str, dict[str, Any]],
                     behaviour: BehaviourCheck, device: torch.device, progress: bool) -> None:
    """Load every suspect once (behaviour-checked against its record), deploy it, and score it with every run."""
    store, suspects = zoo.store, zoo.plan.by_role("positive", "negative")
    zoo_deploy = to_dict(cfg)["zoo"].get("deploy")  # docs/deployment.md: every suspect, before its own `deploy:`
    splits = SplitCache(zoo.datamodule)  # deployed suspects share the test and attacker tensors
    desc = f"verifying suspects [{short_list([run.entry['name'] for run in runs], 'methods')}]"
    for job in counted(suspects, desc, enabled=progress, unit="model"):  # a bar, or a line per suspect (bench.progress)
        record = records[job.model_id]
        model = store.load_model(job.model_id, record).to(device)
        behaviour.check(model, record)  # labels, test_acc, source_agreement as recorded (bench.zoo.integrity)
        # The same checkpoint behind its deployment chain (None: undeployed), utility measured once here.
        deployed, deploy_row = deploy_suspect(model, suspect_chain(zoo_deploy, job.deploy), job.model_id,
                                              job.provenance, splits, cfg.eval.query_batch_size)
        for run in runs:
            # The oracle shows the role only to a method that declared access "manifest" (loop guards).
            oracle = oracle_opener(model, deployed, run.stream, access=run.method.access,
                                   batch_size=cfg.eval.query_batch_size, manifest_role=record["role"])
            _measure(run, oracle, {
                "model_id": job.model_id, "role": job.role, "attack": job.attack, "kind": job.kind,
                "group": job.group, **({"overlap": job.overlap} if job.overlap is not None else {}),  # overlap negatives
                **threat_model(job),  # family and strength as data (positives the zoo made; null otherwise)
                # how far the model moved from the source (null in zoos built before it was recorded)
                "test_acc": record.get("test_acc"), "source_agreement": record.get("source_agreement"),
                "sha256": record["sha256"],  # the checkpoint measured (load_model verified it against the manifest)
                # a negative's recipe `label:` (bench.zoo.plan), the name the run's per-suspect table shows
                **({"label": job.label} if job.label else {}),
                **deploy_row,  # deployed: deploy, provenance, test_acc_deployed[, defender_false_flag_rate]
            })
            if deployed is not None and deployed.has_defender:  # share of this method's queries the defender flagged
                run.per_model[-1]["defender_flag_rate"] = deployed.flag_rate(run.stream)


def threat_model(job: Any) -> dict[str, Any]:
    """`family` and `strength` of a positive the zoo made by an attack chain (`attack_facts`); null otherwise."""
    if job.role != "positive" or job.op != "attack":
        return {"family": None, "strength": None}
    return attack_facts(job.spec["chain"])


def _generate_run(run: MethodRun, source: torch.nn.Module, cfg: DictConfig, zoo: BuildReport, device: torch.device,
                  records: dict[str, dict[str, Any]], progress: bool, behaviour: BehaviourCheck) -> None:
    """Generate (or load from `run.cache_dir`) one method's fingerprint, with its defender pools if it uses them."""
    # A method's own step bars only where they redraw in place: in a log each update would be a \r fragment,
    # and the run's per-job lines already say how far it is (bench.progress).
    ctx = GenerationContext(datamodule=zoo.datamodule, seed=cfg.seed, device=device,
                            num_classes=zoo.datamodule.num_classes, progress=progress and draws_bars(sys.stderr))
    ctx.pools = _pools(run, cfg, zoo, device, records, behaviour)
    try:
        _generate(run, source, ctx, run.cache_dir)
    finally:
        ctx.pools = None  # free pool models before verification


def _self_checks(runs: list[MethodRun], verify: Callable[[list[MethodRun]], None],
                 generate: Callable[[MethodRun], None], source: torch.nn.Module, cfg: DictConfig) -> None:
    """Every fingerprint must score its source as derived (`bench.self_check`); a cached one that does not
    is set aside, regenerated, and its suspects scored again."""
    fpr, batch = min(float(f) for f in cfg.eval.fpr_targets), cfg.eval.query_batch_size
    again = []
    for run in runs:
        if not self_check_applies(run.method):
            continue
        run.self_check = {**source_self_check(run.method, run.fingerprint, source, run.per_model, fpr, batch),
                          "regenerated": False}
        if run.self_check["passed"]:
            continue
        name, check = run.entry["name"], run.self_check
        if not run.cached or run.entry.get(IMPORT_KEY):  # generated just now from the checked source, or imported
            log.warning("%s: the fingerprint does not recognise its own source: it scores %.6g, not above the threshold "
                        "%s on the negatives (FPR %g); its results say so (fingerprint.self_check).", name,
                        check["source_score"], check["threshold"], fpr)
            continue
        cached_sha256 = run.fingerprint.sha256
        _set_aside(run.cache_dir, f"{name}: the cached fingerprint does not recognise its own source (score "
                   f"{check['source_score']:.6g}, threshold {check['threshold']})")
        generate(run)
        if run.fingerprint.sha256 == cached_sha256:  # the same bytes: the cache was genuine, the scores stand
            run.self_check["regenerated"] = True
            continue
        run.per_model, run.verify_seconds, run.budget_seconds = [], 0.0, 0.0
        run.budgets = plan_budgets(run.method, run.fingerprint, cfg.eval.budgets, cfg.seed)
        again.append(run)
    if again:
        verify(again)
        for run in again:
            run.self_check = {**source_self_check(run.method, run.fingerprint, source, run.per_model, fpr, batch),
                              "regenerated": True}


def _open_endpoints(cfg: DictConfig, runs: list[MethodRun]) -> list[Endpoint]:
    """Every `zoo.endpoints` suspect, opened and probed with one zero input of the data's shape.

    Raises:
        ConfigError: an endpoint that cannot be reached or answers wrongly (nothing is built or written).
    """
    entries = to_dict(cfg)["zoo"].get("endpoints") or []
    if not entries:
        return []
    try:
        specs = parse_endpoints(entries, {r.entry["name"]: r.method.access for r in runs})
    except ValueError as err:
        raise ConfigError(str(err)) from None
    data = build_datamodule(cfg.data, data_dir=cfg.paths.data_dir, seed=cfg.zoo.split_seed)  # shape only: no data read
    endpoints = []
    for spec in specs:
        try:
            endpoint = open_endpoint(spec, data.num_classes)
            probe(endpoint, (data.in_channels, data.image_size, data.image_size))
        except (EndpointError, ValueError) as err:
            raise ConfigError(str(err)) from None
        log.info("endpoint '%s' (%s) answered the probe; it is scored as a %s suspect", spec.label, spec.target, spec.role)
        endpoints.append(endpoint)
    return endpoints


def _measure(run: MethodRun, new_oracle: Callable[[], Oracle], row: dict[str, Any]) -> None:
    """Score one suspect with one method (timed into its verification seconds); append its per_model row.

    `new_oracle()` opens a fresh oracle on the suspect: one for the whole fingerprint, one per budget subset.
    """
    t0 = time.perf_counter()
    oracle = new_oracle()
    figures = run.method.measure(run.fingerprint, oracle)
    run.verify_seconds += time.perf_counter() - t0
    run.per_model.append({**row, "score": float(figures["score"]), "queries": oracle.queries,
                          "extras": {k: float(v) for k, v in figures.items() if k != "score"}})
    if run.budgets:
        scores, queries, seconds = score_at_budgets(run.method, run.budgets, figures["score"],
                                                    oracle.queries, new_oracle)
        run.per_model[-1].update(budget_scores=scores, budget_queries=queries)
        run.budget_seconds += seconds


def _score_endpoint(endpoint: Endpoint, runs: list[MethodRun], datamodule: Any, source: torch.nn.Module) -> None:
    """Query one endpoint suspect through every method's oracle; its test accuracy once, on the side."""
    spec = endpoint.spec
    test_acc = source_agreement = None
    if spec.test_acc_samples > 0:  # measured on the first test inputs, outside every method's query count
        x, y = datamodule.tensors("test", spec.test_acc_samples)
        labels = endpoint.labels(x)
        test_acc = agreement(labels, y)  # as the zoo measures its models' test_acc
        source_agreement = agreement(labels, predicted_labels(source, x))
    for run in runs:
        _measure(run, partial(Oracle, endpoint, access=run.method.access, manifest_role=spec.role), {
            "model_id": spec.model_id, "role": spec.role, "group": spec.group, "endpoint": True, "label": spec.label,
            "attack": spec.group if spec.role == "positive" else None,
            "kind": spec.group if spec.role == "negative" else None,
            "test_acc": test_acc, "source_agreement": source_agreement,
        })
    log.info("endpoint '%s': %d request(s) sent", spec.label, endpoint.requests)


def _write_results(cfg: DictConfig, runs: list[MethodRun], zoo_info: dict[str, Any], outcome: BenchmarkOutcome) -> None:
    """One result file per method that produced a fingerprint, kept in `outcome` (W&B logs them later)."""
    bootstrap = OmegaConf.to_object(cfg.eval.bootstrap)
    for run in runs:
        result = make_result(
            seed=cfg.seed,
            method={"name": run.entry["name"], "version": run.method.version, "access": run.method.access,
                    "config": {k: v for k, v in run.entry.items() if k != "name"}},
            config=run_config(cfg, run.entry), zoo=zoo_info, per_model=run.per_model, pool=run.pool,
            timing_s={"generate": run.generate_seconds, "verify": run.verify_seconds,
                      "total": run.generate_seconds + run.verify_seconds, "fingerprint_cached": run.cached,
                      **({"budgets": run.budget_seconds} if run.budgets else {})},
            budgets=budget_descriptors(run.method, run.fingerprint, run.budgets) if run.budgets else None,
            fpr_targets=list(cfg.eval.fpr_targets), bootstrap=bootstrap,
            git_path=Path(__file__).resolve().parent.parent)
        result["fingerprint"] = {k: v for k, v in (run.fingerprint.meta or {}).items() if _is_scalar(v)}
        # Did generation reach the method's own target? (None: the method has none; the leaderboard marks misses.)
        result["fingerprint"]["generation_target"] = (None if run.fingerprint.meta.get("imported")  # nothing generated
                                                      else run.method.generation_target(run.fingerprint))
        if run.self_check is not None:  # did the fingerprint score its own source as derived (bench.self_check)
            result["fingerprint"]["self_check"] = run.self_check
        if run.fingerprint.sha256 is not None:  # the cached files' hash (set by Fingerprint.save/load)
            result["fingerprint"]["sha256"] = run.fingerprint.sha256
        path = result_path(cfg.paths.results_dir, zoo_info["name"], run.entry["name"], run.config_sha256, cfg.seed)
        action, reason = overwrite_decision(cfg, path, result)  # a published result is never replaced silently
        if action == "refuse":
            log.error("%s: %s", run.entry["name"], reason)
            outcome.failed[run.entry["name"]], outcome.refused[str(path)] = reason, result
            continue
        if action == "write":
            write_result(result, path)
        else:
            log.info("%s: %s", run.entry["name"], reason)
        outcome.results[str(path)] = result  # logged to W&B once the leaderboard is written too


def _is_scalar(value: Any) -> bool:
    """A value a result's `fingerprint` block keeps: JSON scalars, finite numbers only (`--check` refuses NaN)."""
    return isinstance(value, (int, str, bool)) or value is None or (isinstance(value, float) and math.isfinite(value))


def missed_target_line(result: dict[str, Any]) -> str:
    """A summary line for a result whose fingerprint missed its generation target ("" when met or none)."""
    target = (result.get("fingerprint") or {}).get("generation_target")
    if not target or target["met"]:
        return ""
    name = result["method"]["name"]
    return (f"TARGET MISSED {name} [{result['config_sha256'][:8]}]: {target['name']} {target['achieved']:.3f} < "
            f"floor {target['floor']:.3f}: generation missed its target (docs/methods/{name}.md, Generation target)")


def _tpr_heads(results: Any, targets: list[float]) -> list[tuple[str, float]]:
    """(column label, FPR target) of the printed TPR columns: `T1%F` only where the negatives certify it
    (`metrics.tpr_resolution`), else one `TPR@0FP` column for all the targets they cannot (docs/statistics.md)."""
    first = next(iter(results), None)
    resolution = ((first or {}).get("metrics") or {}).get("tpr_resolution") or {}
    heads: list[tuple[str, float]] = []
    for target in targets:
        entry = resolution.get(format_fpr(target))
        label = entry["label"] if entry else fpr_label(target)
        if label not in [h for h, _ in heads]:
            heads.append((label, target))
    return heads


def _tpr_value(metrics: dict[str, Any], target: float, label: str) -> float:
    entry = (metrics.get("tpr_resolution") or {}).get(format_fpr(target))
    if entry is not None and entry["label"] == label:
        return float(entry["tpr"])
    return float(metrics["tpr_at_fpr"].get(format_fpr(target), math.nan))


def _table_notes(results: Any, heads: list[tuple[str, float]]) -> list[str]:
    """What the printed table does and does not support."""
    results = list(results)
    notes = sorted({r["metrics"]["resolution_note"] for r in results if r["metrics"].get("resolution_note")})
    lines = [f"note: {note}" for note in notes]
    if any(label == "TPR@0FP" for label, _ in heads) and results:
        resolution = results[0]["metrics"].get("tpr_resolution") or {}
        uncertified = [k for k, v in resolution.items() if v["label"] == "TPR@0FP"]
        n_negative = results[0]["metrics"]["n_negative"]
        bound = (f" (0 of {n_negative} false positives bounds the FPR below "
                 f"{resolution[uncertified[0]]['fpr_upper']:.1%} at 95 %)" if uncertified else "")
        needed = ", ".join(f"{min_negatives(float(k))} for {float(k):.0%}" for k in uncertified)
        lines.append(f"note: TPR@0FP is the TPR at zero false positives{bound}: these negatives cannot certify an "
                     f"FPR of {', '.join(f'{float(k):.0%}' for k in uncertified)} at 95 % (that takes {needed}).")
    if any((r["metrics"].get("ties") or {}).get("tie_fraction", 0) > 0.01 for r in results):
        lines.append("note: ties = the AUC with tied positive-negative pairs counted as losses / as wins, shown where "
                     "they move it by more than 0.01.")
    lines.append("note: one run is one trial: a demo of the loop, not a comparison of methods (ranks need >= 3 "
                 "trials: trials.count=3, docs/statistics.md).")
    return lines


def summary_lines(outcome: BenchmarkOutcome) -> list[str]:
    """What `fpbench run` prints: one line per result, what they do not support, every suspect's scores
    (`bench.suspect_table`), then where the results, leaderboard and plots are."""
    shown = {**outcome.results, **outcome.refused}
    targets = result_fpr_targets(shown.values())  # eval.fpr_targets, as the results carry them
    heads = _tpr_heads(shown.values(), targets)
    tpr_head = "".join(f" {label:>7}" for label, _ in heads)
    lines = [f"{'method':<14} {'AUC':>6} {'ties':>13}{tpr_head} {'n+':>4} {'n-':>4} {'queries':>8} {'gen s':>7} "
             f"{'verify s':>8}"]
    for path, result in shown.items():
        m, t = result["metrics"], result["timing_s"]
        tpr = "".join(f" {_tpr_value(m, target, label):>7.3f}" for label, target in heads)
        ties = m.get("ties") or {}
        tie_cell = (f"[{ties['auc_ties_as_losses']:.3f},{ties['auc_ties_as_wins']:.3f}]"
                    if ties and ties["auc_ties_as_wins"] - ties["auc_ties_as_losses"] > 0.01 else "")
        lines.append(f"{result['method']['name']:<14} {m['auc']:>6.3f} {tie_cell:>13}{tpr} {m['n_positive']:>4} "
                     f"{m['n_negative']:>4} {result['queries_per_suspect']:>8.0f} {t['generate']:>7.1f} {t['verify']:>8.2f}"
                     f"{'  (cached fingerprint)' if t['fingerprint_cached'] else ''}"
                     f"{'  (NOT WRITTEN: a published result differs)' if path in outcome.refused else ''}")
    lines += _table_notes(shown.values(), heads)
    lines += separation_lines(list(shown.values()))  # a method whose scores tell nothing apart says so
    lines += [line for r in outcome.results.values() if (line := missed_target_line(r))]
    lines += [f"FAILED {name}: {error}" for name, error in outcome.failed.items()]
    lines += suspect_table_lines(list(shown.values()))
    lines.append(f"results: {', '.join(outcome.results)}")
    lines.append(f"leaderboard: {outcome.leaderboard}; plots: {', '.join(str(p) for p in outcome.plots)}")
    lines.append(f"done in {outcome.seconds:.1f} s")
    return lines
