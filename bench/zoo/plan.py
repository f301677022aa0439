"""Zoo planning: from a recipe to an ordered list of jobs with stable model ids.

A model id is the first 12 hex digits of the sha256 of everything that determines the model: its
role, the data split's content hash and every training or attack hyperparameter. The same recipe on
the same data therefore gives the same ids, so a rebuild can skip what exists.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.config import ConfigError, ModelSpec
from bench.io import sha256_json
from bench.pools import PoolSpec
from bench.training import validate_training

NEGATIVE_KINDS = ("SAST", "SADT", "DAST", "DADT")
TRAIN_SPLITS = ("owner", "independent")


@dataclass
class Job:
    """One model of the zoo: how to make it and what the manifest says about it."""

    model_id: str
    role: str  # source | positive | negative | pool
    provenance: str
    op: str  # train | attack
    spec: dict[str, Any]  # train: a ModelSpec dict; attack: {"chain": [{"attack": name, "params": {...}}]}
    arch: str
    arch_params: dict[str, Any]
    seed: int
    parent: str | None = None
    kind: str | None = None  # negatives: SAST/SADT/DAST/DADT; pools: surrogate/reference
    attack: str | None = None  # positives: the group label of the per-attack table
    split: str = "owner"

    def record_base(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "role": self.role, "kind": self.kind, "attack": self.attack,
                "provenance": self.provenance, "arch": self.arch, "arch_params": self.arch_params,
                "params": self.spec, "seed": self.seed, "parent": self.parent, "split": self.split}


@dataclass
class ZooPlan:
    name: str
    dataset: str
    split_hashes: dict[str, str]
    jobs: list[Job] = field(default_factory=list)

    @property
    def source(self) -> Job:
        return self.jobs[0]

    def by_role(self, *roles: str) -> list[Job]:
        return [j for j in self.jobs if j.role in roles]


def _model_id(payload: dict[str, Any]) -> str:
    return sha256_json(payload)[:12]


def _scalar_fields(config_cls: type) -> set[str]:
    """Fields whose YAML value is a scalar: a list given there expands into several models."""
    out = set()
    for f in dataclasses.fields(config_cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not isinstance(default, (list, dict)) and not dataclasses.is_dataclass(default):
            out.add(f.name)
    return out


def expand(entry: dict[str, Any], scalar_keys: set[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Cartesian product over list values of scalar keys; returns (params, varied values) pairs."""
    varying = {k: v for k, v in entry.items() if k in scalar_keys and isinstance(v, list)}
    for key, values in varying.items():
        if not values:
            raise ConfigError(f"'{key}: []' expands to no models; give at least one value.")
    fixed = {k: v for k, v in entry.items() if k not in varying}
    out = []
    for combo in itertools.product(*varying.values()):
        chosen = dict(zip(varying, combo))
        out.append(({**fixed, **chosen}, chosen))
    return out


def _train_spec(base: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    schema = OmegaConf.merge(OmegaConf.structured(ModelSpec), base)
    try:
        merged = OmegaConf.merge(schema, overrides)
    except Exception as err:
        valid = ", ".join(f.name for f in dataclasses.fields(ModelSpec))
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}. Valid keys: kind, {valid}.") from None
    spec = OmegaConf.to_container(merged, resolve=True)
    if spec["split"] not in TRAIN_SPLITS:
        raise ConfigError(f"{where}.split='{spec['split']}' is not one of {', '.join(TRAIN_SPLITS)}.")
    try:
        validate_training(merged.optimizer, merged.schedule, spec["epochs"], where)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return spec


def _train_provenance(spec: dict[str, Any], dataset: str) -> str:
    return f"train({spec['arch']},{dataset}:{spec['split']},seed={spec['seed']},epochs={spec['epochs']})"


def _train_job(role: str, spec: dict[str, Any], dataset: str, split_hashes: dict[str, str], kind: str | None = None,
               augment: bool = False) -> Job:
    """A from-scratch training job; its id hashes `augment: true` only when `data.augment` is on (old ids stay)."""
    _check_arch(spec["arch"], spec["arch_params"])
    payload = {"role": role, "op": "train", "data": dataset, "split_hash": split_hashes[spec["split"]], "spec": spec}
    if augment:  # augmented batches change the trained model, so they must change its id
        payload["augment"] = True
    return Job(model_id=_model_id(payload), role=role, provenance=_train_provenance(spec, dataset), op="train", spec=spec,
               arch=spec["arch"], arch_params=spec["arch_params"], seed=spec["seed"], kind=kind, split=spec["split"])


def _check_arch(arch: str, params: dict[str, Any]) -> None:
    """Arch name and params are checked by the nets package itself (no model is built)."""
    from bench.nets import check_arch
    from bench.registry import RegistryError

    try:
        check_arch(arch, params)
    except (RegistryError, ValueError) as err:
        raise ConfigError(str(err)) from None


def _negative_jobs(zoo: DictConfig, source_spec: dict, dataset: str, split_hashes: dict[str, str],
                   augment: bool = False) -> list[Job]:
    jobs = []
    scalar = _scalar_fields(ModelSpec) | {"kind"}
    for i, raw in enumerate(zoo.negatives):
        where = f"zoo.negatives[{i}]"
        entry = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else raw
        if not isinstance(entry, dict) or entry.get("kind") not in NEGATIVE_KINDS:
            raise ConfigError(f"{where} needs 'kind:' one of {', '.join(NEGATIVE_KINDS)}; got {entry!r}.")
        for params, _ in expand(entry, scalar):
            kind = params.pop("kind")
            same_arch = kind.startswith("SA")
            if same_arch and params.get("arch", source_spec["arch"]) != source_spec["arch"]:
                raise ConfigError(f"{where}: {kind} means same architecture as the source ({source_spec['arch']}); "
                                  f"drop 'arch: {params['arch']}' or use kind D{kind[1:]}.")
            if not same_arch and params.get("arch", source_spec["arch"]) == source_spec["arch"]:
                raise ConfigError(f"{where}: {kind} needs 'arch:' different from the source's ({source_spec['arch']}).")
            if not same_arch and "arch_params" not in params:
                params["arch_params"] = {}  # the source's arch params belong to the source's architecture
            params["split"] = "owner" if kind.endswith("ST") else "independent"
            spec = _train_spec(source_spec, params, where)
            if kind == "SAST" and spec["seed"] == source_spec["seed"] and spec == source_spec:
                raise ConfigError(f"{where}: a SAST negative with the source's own seed ({spec['seed']}) is the source itself; "
                                  "give it another seed.")
            jobs.append(_train_job("negative", spec, dataset, split_hashes, kind=kind, augment=augment))
    return jobs


def _attack_steps(entry: dict[str, Any], where: str) -> list[list[tuple[str, dict, dict]]]:
    """Expand one positives entry into chains of (attack name, params, varied) steps."""
    from bench.zoo.attacks import ATTACKS

    steps = entry["chain"] if "chain" in entry else [entry]
    if not isinstance(steps, list) or not steps:
        raise ConfigError(f"{where}.chain must be a non-empty list of {{attack: ..}} mappings.")
    options = []
    for step in steps:
        if not isinstance(step, dict) or "attack" not in step:
            raise ConfigError(f"{where}: each step needs 'attack:' (one of {', '.join(ATTACKS.names())}); got {step!r}.")
        names = step["attack"] if isinstance(step["attack"], list) else [step["attack"]]  # a list expands too
        params = {k: v for k, v in step.items() if k not in ("attack", "label")}
        choices = []
        for name in names:
            if name not in ATTACKS:
                raise ConfigError(f"{where}: {ATTACKS.unknown_message(name)}")
            choices += [(name, p, varied) for p, varied in expand(params, _scalar_fields(ATTACKS.get(name).Config))]
        options.append(choices)
    return [list(chain) for chain in itertools.product(*options)]


def _positive_jobs(zoo: DictConfig, source: Job, augment: bool = False) -> list[Job]:
    """Positives: one job per expanded chain. The id hashes each step's config, its `output_revision()`
    when > 0, and `augment: true` when `data.augment` is on and a step trains on data."""
    if not zoo.positives:
        return []
    from bench.zoo.attacks import build_attack

    jobs = []
    for i, raw in enumerate(zoo.positives):
        where = f"zoo.positives[{i}]"
        entry = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else raw
        if not isinstance(entry, dict) or ("attack" not in entry and "chain" not in entry):
            raise ConfigError(f"{where} needs 'attack: NAME' or 'chain: [...]'; got {entry!r}.")
        for chain in _attack_steps(entry, where):
            resolved, hashed, fragments, labels = [], [], [], []
            trains = False
            for name, params, varied in chain:
                try:
                    attack = build_attack(name, params)
                except (ValueError, KeyError, TypeError) as err:
                    raise ConfigError(f"{where} ({name}): {err}") from None
                resolved.append({"attack": name, "params": attack.config_dict()})
                revision = attack.output_revision()
                hashed.append({**resolved[-1], "revision": revision} if revision else resolved[-1])
                trains = trains or attack.uses_training_data()
                fragments.append(attack.provenance())
                shown = {k: v for k, v in varied.items() if k != "seed"}
                labels.append(name + (f"({','.join(f'{k}={v}' for k, v in shown.items())})" if shown else ""))
            payload = {"role": "positive", "parent": source.model_id, "chain": hashed}
            if augment and trains:  # augmented training data changes the output; un-augmented ids stay as they were
                payload["augment"] = True
            arch, arch_params = source.arch, source.arch_params
            for step in resolved:  # extraction trains a fresh substitute, possibly of another architecture
                if step["attack"] == "extract" and step["params"].get("arch"):
                    arch, arch_params = step["params"]["arch"], step["params"].get("arch_params") or {}
            jobs.append(Job(model_id=_model_id(payload), role="positive", op="attack", spec={"chain": resolved},
                            provenance="->".join([source.provenance, *fragments]), arch=arch, arch_params=arch_params,
                            seed=resolved[-1]["params"].get("seed", 0), parent=source.model_id,
                            attack=entry.get("label") or "+".join(labels),
                            split=resolved[0]["params"].get("split", "attacker")))
    return jobs


def plan_zoo(cfg: DictConfig, split_hashes: dict[str, str], pool_specs: list[PoolSpec] | None = None) -> ZooPlan:
    """Plan every model of the recipe's zoo: source, negatives, positives, then defender pools.

    Raises:
        ConfigError: for an unknown attack, kind, architecture or key, or a bad value (before training).
    """
    zoo, dataset = cfg.zoo, cfg.data.name
    source_spec = _train_spec({}, OmegaConf.to_container(zoo.source, resolve=True), "zoo.source")
    if source_spec["split"] != "owner":
        raise ConfigError(f"zoo.source.split='{source_spec['split']}': the source is trained on the owner split.")
    augment = bool(cfg.data.get("augment", False))
    source = _train_job("source", source_spec, dataset, split_hashes, augment=augment)
    jobs = [source, *_negative_jobs(zoo, source_spec, dataset, split_hashes, augment), *_positive_jobs(zoo, source, augment)]
    if pool_specs:  # after the suspects: a pool model must not copy one of them
        from bench.zoo.pool_plan import check_pool_collisions, pool_jobs

        jobs += pool_jobs(zoo, list(pool_specs), source, dataset, split_hashes, augment)
        check_pool_collisions(jobs, source)
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.model_id in seen:
            raise ConfigError(f"Two zoo entries describe the same model ({job.provenance}); "
                              "give them different seeds or parameters.")
        seen[job.model_id] = job
    return ZooPlan(name=zoo.name, dataset=dataset, split_hashes=dict(split_hashes), jobs=jobs)
