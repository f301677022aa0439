"""Defender pools in the zoo plan: jobs from a `PoolSpec`, the check that no pool model copies a
scored suspect, and the summary of how each pool model differs from the suspects (for results).

References are trained from scratch on the owner split with the source's recipe at
`reference_lr_scale` times its lr; surrogates are the `extract` attack on the owner split with the
spec's own labels, temperature, optimizer, epochs and query budget. Architecture `"source"` is the
source's own, with its arch_params. Seeds are `zoo.pool_seed_offset + 0 .. seeds - 1`.
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig

from bench.errors import ConfigError
from bench.pools import SOURCE_ARCH, PoolSpec, differs_from_suspects
from bench.training_config import check_seed
from bench.zoo.attacks import build_attack
from bench.zoo.plan_base import Job, ZooPlan, _model_id, _train_job, _train_spec, hashed_step


def pool_arch(arch: str, source_spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`"source"` (or the source's own architecture name): the source's arch and arch_params; another
    architecture: its name and default params."""
    if arch in (SOURCE_ARCH, source_spec["arch"]):
        return source_spec["arch"], dict(source_spec["arch_params"])
    return arch, {}


def _reference_job(spec: PoolSpec, arch: str, seed: int, source_spec: dict[str, Any], dataset: str,
                   split_hashes: dict[str, str], augment: bool) -> Job:
    arch, arch_params = pool_arch(arch, source_spec)
    base = {**source_spec, "arch_params": arch_params}  # merging {} would keep the source's params
    overrides: dict[str, Any] = {"arch": arch, "seed": seed, "split": "owner",
                                 "optimizer": {"lr": source_spec["optimizer"]["lr"] * spec.reference_lr_scale}}
    if spec.epochs is not None:
        overrides["epochs"] = spec.epochs
    return _train_job("pool", _train_spec(base, overrides, f"pool reference ({arch})"), dataset, split_hashes,
                      "reference", augment=augment)


def _surrogate_job(spec: PoolSpec, arch: str, seed: int, source: Job, augment: bool) -> Job:
    source_spec = source.spec
    arch, arch_params = pool_arch(arch, source_spec)
    epochs = spec.surrogate_epochs or spec.epochs or source_spec["epochs"]
    params = {"arch": arch, "arch_params": arch_params, "seed": seed, "split": "owner", "epochs": epochs,
              "labels_kind": spec.surrogate_labels, "temperature": spec.surrogate_temperature,
              "query_budget": spec.surrogate_queries,
              "optimizer": {"name": "adam", "lr": spec.surrogate_lr, "weight_decay": 0.0}}
    try:
        attack = build_attack("extract", params)
        check_seed(f"pool surrogate ({arch}).seed (zoo.pool_seed_offset + i)", seed)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"pool surrogate ({arch}): {err}") from None
    chain = [{"attack": "extract", "params": attack.config_dict()}]
    payload: dict[str, Any] = {"role": "pool", "parent": source.model_id,
                               "chain": [hashed_step(chain[0], attack.output_revision())]}  # as positives
    if augment:  # augmented training data changes the surrogate (as for positives); un-augmented ids stay as they are
        payload["augment"] = True
    return Job(model_id=_model_id(payload), role="pool", op="attack", spec={"chain": chain},
               provenance=f"{source.provenance}->{attack.provenance()}", arch=arch, arch_params=arch_params,
               seed=seed, parent=source.model_id, kind="surrogate", split="owner")


def pool_jobs(zoo: DictConfig, specs: list[PoolSpec], source: Job, dataset: str, split_hashes: dict[str, str],
              augment: bool = False) -> list[Job]:
    """Every pool model the specs ask for, once each (specs that agree share models)."""
    jobs: dict[str, Job] = {}
    for spec in specs:
        for i in range(spec.seeds):
            seed = int(zoo.pool_seed_offset) + i
            for arch in spec.reference_archs:
                job = _reference_job(spec, arch, seed, source.spec, dataset, split_hashes, augment)
                jobs.setdefault(job.model_id, job)
            for arch in spec.surrogate_archs:
                job = _surrogate_job(spec, arch, seed, source, augment)
                jobs.setdefault(job.model_id, job)
    return list(jobs.values())


def _recipe_key(job: Job, source: Job) -> str:
    """What makes a model, whatever its role: the training spec, or the parent and the attack chain
    with `extract`'s default architecture (None: the source's) spelled out."""
    if job.op == "train":
        return json.dumps({"train": job.spec}, sort_keys=True)
    chain = []
    for step in job.spec["chain"]:
        params = dict(step["params"])
        if step["attack"] == "extract" and params.get("arch") is None:
            params["arch"], params["arch_params"] = source.arch, {**source.arch_params, **params.get("arch_params", {})}
        chain.append({"attack": step["attack"], "params": params})
    return json.dumps({"parent": job.parent, "chain": chain}, sort_keys=True)


def check_pool_collisions(jobs: list[Job], source: Job) -> None:
    """Raise ConfigError if a pool model would be made exactly like a scored suspect (same
    architecture, split, seed and training settings): the defender would train against the test zoo."""
    suspects = {_recipe_key(j, source): j for j in jobs if j.role in ("positive", "negative")}
    for pool in (j for j in jobs if j.role == "pool"):
        twin = suspects.get(_recipe_key(pool, source))
        if twin is not None:
            raise ConfigError(
                f"Pool {pool.kind} {pool.model_id} ({pool.provenance}) would be made exactly like the scored "
                f"{twin.role} {twin.attack or twin.kind} {twin.model_id} ({twin.provenance}): same architecture, split, "
                "seed and training settings. A defender's pool must not copy a suspect: change zoo.pool_seed_offset, "
                "or the method's pool settings (pool_epochs, reference_lr_scale, surrogate_*), or the suspect's.")


def job_facts(job: Job) -> dict[str, Any]:
    """The facts a pool model is compared on (`bench.pools.COMPARED_FACTS`)."""
    if job.op == "train":
        return {"procedure": "train", "arch": job.arch, "split": job.split, "seed": job.seed,
                "epochs": job.spec["epochs"], "lr": job.spec["optimizer"]["lr"], "labels": "ground_truth",
                "temperature": None, "queries": None}
    chain = job.spec["chain"]
    last = chain[-1]["params"]
    extract = chain[-1]["attack"] == "extract"
    soft = extract and last.get("labels_kind") == "soft"
    return {"procedure": "+".join(step["attack"] for step in chain), "arch": job.arch, "split": job.split,
            "seed": job.seed, "epochs": sum(int(step["params"].get("epochs", 0)) for step in chain),
            "lr": (last.get("optimizer") or {}).get("lr"),
            "labels": last.get("labels_kind") if extract else last.get("labels"),
            "temperature": last.get("temperature") if soft else None,
            "queries": last.get("query_budget") if extract else None}


def pool_summary(plan: ZooPlan, model_ids: list[str]) -> list[dict[str, Any]]:
    """Per pool model: its role, model id, provenance, facts, and how it differs from the closest
    scored suspect (`differs_from_suspects`), in the order of `model_ids`."""
    suspects = [{**job_facts(j), "model_id": j.model_id, "role": j.role, "provenance": j.provenance,
                 "group": j.group} for j in plan.by_role("positive", "negative")]
    by_id = {j.model_id: j for j in plan.by_role("pool")}
    out = []
    for model_id in model_ids:
        job = by_id[model_id]
        facts = job_facts(job)
        out.append({"model_id": model_id, "role": job.kind, "provenance": job.provenance, **facts,
                    "differs_from_suspects": differs_from_suspects(facts, suspects)})
    return out


def pool_jobs_for(cfg: DictConfig, plan: ZooPlan, spec: PoolSpec) -> list[Job]:
    """The planned pool models of one method's PoolSpec (a subset of `plan`'s pool jobs)."""
    jobs = pool_jobs(cfg.zoo, [spec], plan.source, plan.dataset, plan.split_hashes, bool(cfg.data.get("augment", False)))
    planned = {j.model_id for j in plan.by_role("pool")}
    missing = [j.provenance for j in jobs if j.model_id not in planned]
    if missing:
        raise RuntimeError(f"Pool models {missing} were not planned; pass the method's pool_spec to plan_zoo.")
    return jobs
