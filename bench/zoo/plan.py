"""Zoo planning: from a recipe to an ordered list of jobs with stable model ids.

A model id is the first 12 hex digits of the sha256 of everything that determines the model: its
role, the data split's content hash and every training or attack hyperparameter. The same recipe on
the same data therefore gives the same ids, so a rebuild can skip what exists.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError
from bench.model_spec import ModelSpec
from bench.nets.factory_net import FACTORY_PREFIX
from bench.pools import PoolSpec
from bench.training_config import check_seed
from bench.zoo.attacks import ATTACKS, build_attack
from bench.zoo.plan_base import (  # noqa: F401  (Job, ZooPlan, _model_id, expand: re-exported, callers import them here)
    IMPORTED_KINDS,
    NEGATIVE_KINDS,
    RECIPE_DIR,
    TRAIN_SPLITS,
    Job,
    ZooPlan,
    _model_id,
    _scalar_fields,
    _train_job,
    _train_spec,
    check_overlap_sizes,
    expand,
    hashed_step,
    import_job,
    pop_overlap,
)
from bench.zoo.pool_plan import check_pool_collisions, pool_jobs


def _imported_base(source: Job, entry: dict[str, Any]) -> dict[str, Any]:
    """An imported suspect's architecture defaults to the source's; with the same architecture it also
    inherits the source's `arch_params` and normalisation (`mean`/`std`), unless the entry gives its own.

    The normalisation goes with the architecture: a model that normalises inside `forward` is imported
    with `mean: [0.0], std: [1.0]`, and a suspect of the same code must not get the dataset's
    normalisation put in front of it a second time (docs/byo.md, "Normalisation").
    """
    arch = entry.get("arch") or (FACTORY_PREFIX + entry["factory"] if entry.get("factory") else source.arch)
    base: dict[str, Any] = {"arch": arch, "arch_params": dict(source.arch_params) if arch == source.arch else {}}
    if arch == source.arch and source.external:
        base.update({key: source.external[key] for key in ("mean", "std") if source.external.get(key) is not None})
    if entry.get("factory"):  # `_train_spec` turns the shorthand into the arch again
        base["arch"] = ModelSpec.arch
    return base


def _negative_jobs(zoo: DictConfig, source_spec: dict, dataset: str, split_hashes: dict[str, str],
                   augment: bool = False, source: Job | None = None) -> list[Job]:
    jobs = []
    scalar = _scalar_fields(ModelSpec) | {"kind", "overlap"}  # `overlap: [0.1, 0.25]` expands like a seed list
    for i, raw in enumerate(zoo.negatives):
        where = f"zoo.negatives[{i}]"
        entry = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else raw
        entry, deploy = _split_deploy(entry, where)
        entry, label = _split_label(entry, where)
        first, names = len(jobs), []
        imported = isinstance(entry, dict) and entry.get("weights") is not None
        kinds = IMPORTED_KINDS if imported else NEGATIVE_KINDS
        if not isinstance(entry, dict) or entry.get("kind") not in kinds:
            raise ConfigError(f"{where} needs 'kind:' one of {', '.join(kinds)}; got {entry!r}.")
        for params, varied in expand(entry, scalar):
            shown = ",".join(f"{k}={v}" for k, v in varied.items())  # an entry that expands names each model apart
            names.append(label and (f"{label}({shown})" if shown else label))
            kind = params.pop("kind")
            overlap = pop_overlap(params, kind, where, imported)
            if imported:  # the kind describes how it was made elsewhere; nothing is trained
                jobs.append(import_job("negative", _train_spec(_imported_base(source, params), params, where), where, kind=kind))
                continue
            if kind == "PTFT":
                jobs.append(_pretrained_negative(source_spec, params, where, dataset, split_hashes, augment))
                continue
            same_arch = kind.startswith("SA")
            if same_arch and params.get("arch", source_spec["arch"]) != source_spec["arch"]:
                raise ConfigError(f"{where}: {kind} means same architecture as the source ({source_spec['arch']}); "
                                  f"drop 'arch: {params['arch']}' or use kind D{kind[1:]}.")
            if not same_arch and params.get("arch", source_spec["arch"]) == source_spec["arch"]:
                raise ConfigError(f"{where}: {kind} needs 'arch:' different from the source's ({source_spec['arch']}).")
            # The source's arch_params belong to the source's architecture: a DA* negative starts from its
            # own architecture's defaults (a deep merge onto the source's params would keep them).
            base = source_spec if same_arch else {**source_spec, "arch_params": {}}
            params["split"] = "owner" if kind.endswith("ST") else "independent"
            spec = _train_spec(base, params, where)
            if kind == "SAST" and spec["seed"] == source_spec["seed"] and spec == source_spec:
                raise ConfigError(f"{where}: a SAST negative with the source's own seed ({spec['seed']}) is the source itself; "
                                  "give it another seed.")
            jobs.append(_train_job("negative", spec, dataset, split_hashes, kind=kind, augment=augment, overlap=overlap))
        for job, name in zip(jobs[first:], names):
            job.deploy = deploy
            job.label = name  # the suspect's name in results (`per_model[i].label`); never in its id or the manifest
    return jobs


def _split_label(entry: Any, where: str) -> tuple[Any, str | None]:
    """A negative entry without its `label:` (the name results show for it; it never changes the model), and the label."""
    if not isinstance(entry, dict) or "label" not in entry:
        return entry, None
    entry = dict(entry)
    label = entry.pop("label")
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"{where}.label must be a non-empty name for the suspect (e.g. label: my_resnet_seed3); "
                          f"got {label!r}.")
    return entry, label


def _split_deploy(entry: Any, where: str) -> tuple[Any, list[Any] | None]:
    """A suspect entry without its `deploy:` chain, and the chain as plain data (None: undeployed).

    `bench.config.load_recipe` has checked every wrapper of the chain already; the zoo never imports the
    deployments (docs/architecture.md, "Import direction"), and the evaluation loop builds them.
    """
    if not isinstance(entry, dict) or "deploy" not in entry:
        return entry, None
    entry = dict(entry)
    chain = entry.pop("deploy")
    if chain is not None and not isinstance(chain, list):
        raise ConfigError(f"{where}.deploy must be a list of one-key maps, e.g. [{{jpeg: {{quality: 75}}}}, "
                          f"{{top1: {{}}}}]; got {chain!r}.")
    return entry, list(chain or []) or None


def _attack_steps(entry: dict[str, Any], where: str) -> list[list[tuple[str, dict, dict]]]:
    """Expand one positives entry into chains of (attack name, params, varied) steps."""
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
    jobs = []
    for i, raw in enumerate(zoo.positives):
        where = f"zoo.positives[{i}]"
        entry = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else raw
        entry, deploy = _split_deploy(entry, where)
        if isinstance(entry, dict) and entry.get("weights") is not None:  # imported: `attack:` is a free-text label
            label = str(entry.get("label") or entry.get("attack") or "imported")
            params = {k: v for k, v in entry.items() if k not in ("attack", "label")}
            spec = _train_spec(_imported_base(source, params), params, where)
            jobs.append(import_job("positive", spec, where, attack=label, parent=source.model_id))
            jobs[-1].deploy = deploy
            continue
        if not isinstance(entry, dict) or ("attack" not in entry and "chain" not in entry):
            raise ConfigError(f"{where} needs 'attack: NAME' or 'chain: [...]'; got {entry!r}.")
        for chain in _attack_steps(entry, where):
            resolved, hashed, fragments, labels = [], [], [], []
            trains = False
            for name, params, varied in chain:
                try:
                    attack = build_attack(name, params)
                    check_seed(f"{where} ({name}).seed", attack.config_dict().get("seed", 0))
                except (ValueError, KeyError, TypeError) as err:
                    raise ConfigError(f"{where} ({name}): {err}") from None
                resolved.append({"attack": name, "params": attack.config_dict()})
                hashed.append(hashed_step(resolved[-1], attack.output_revision()))
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
                            split=resolved[0]["params"].get("split", "attacker"), deploy=deploy))
    return jobs


# -- splits a recipe needs ---------------------------------------------------------------------------------

ALWAYS_NEEDED = {"owner": "the source trains on it and fingerprints are drawn from it",
                 "test": "every zoo model's test accuracy is measured on it"}
INDEPENDENT_KINDS = ("SADT", "DADT", "PTFT")  # negatives trained on the independent split


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def needed_splits(cfg: DictConfig) -> dict[str, str]:
    """The splits a recipe reads, each with why: owner and test always; independent for negatives of a
    kind trained on different data; a positive step's `split` (default attacker) when it trains on data."""
    needed = dict(ALWAYS_NEEDED)
    for i, entry in enumerate(OmegaConf.to_container(cfg.zoo.negatives, resolve=True)):
        if isinstance(entry, dict) and entry.get("weights") is None:
            if any(kind in INDEPENDENT_KINDS for kind in _as_list(entry.get("kind"))):
                needed.setdefault("independent", f"zoo.negatives[{i}] (kind {entry['kind']}) trains on it")
    for i, entry in enumerate(OmegaConf.to_container(cfg.zoo.positives, resolve=True)):
        if not isinstance(entry, dict) or entry.get("weights") is not None:
            continue
        for step in entry.get("chain") or [entry]:
            if not isinstance(step, dict):
                continue
            for name in _as_list(step.get("attack")):
                fields = {f.name: f for f in dataclasses.fields(ATTACKS.get(name).Config)} if name in ATTACKS else {}
                epochs = step.get("epochs", fields["epochs"].default if "epochs" in fields else 1)
                if "split" not in fields or _as_list(epochs) == [0]:
                    continue  # no data split, or an attack that does not train (prune with epochs 0)
                for split in _as_list(step.get("split", fields["split"].default)):
                    needed.setdefault(str(split), f"zoo.positives[{i}] ({name}) trains on it")
    return needed


def check_splits_not_empty(cfg: DictConfig) -> None:
    """Refuse `data.splits.<split>=0` for a split the recipe needs, naming why it is needed (at planning,
    before any data is read: the attacks' registry that says which splits they train on lives here).

    Raises:
        ConfigError: naming the split, why it is needed and the fix.
    """
    for split, why in needed_splits(cfg).items():
        value = cfg.data.splits.get(split)
        if value is not None and float(value) == 0:
            whole = ", or null (the whole test pool)" if split == "test" else ""
            raise ConfigError(f"data.splits.{split}=0 leaves the {split} split empty, but {why}. Fix: give it a "
                             f"count >= 1 or a fraction in (0, 1){whole}.")


def plan_zoo(cfg: DictConfig, split_hashes: dict[str, str], pool_specs: list[PoolSpec] | None = None) -> ZooPlan:
    """Plan every model of the recipe's zoo: source, negatives, positives, then defender pools.

    Raises:
        ConfigError: for an unknown attack, kind, architecture or key, or a bad value (before training).
    """
    check_splits_not_empty(cfg)
    token = RECIPE_DIR.set(cfg.paths.get("recipe_dir"))  # `weights:` files are relative to the recipe's folder
    try:
        jobs = _plan_jobs(cfg, split_hashes, pool_specs)
    finally:
        RECIPE_DIR.reset(token)
    check_overlap_sizes(cfg, jobs)
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.model_id in seen:
            hint = (" A `deploy:` chain serves the same checkpoint, so it does not make another model: to score one "
                    "model under several deployments, run once per zoo.deploy (e.g. a sweep)."
                    if job.deploy or seen[job.model_id].deploy else "")
            raise ConfigError(f"Two zoo entries describe the same model ({job.provenance}); "
                              f"give them different seeds or parameters.{hint}")
        seen[job.model_id] = job
    return ZooPlan(name=cfg.zoo.name, dataset=cfg.data.name, split_hashes=dict(split_hashes), jobs=jobs)


def _plan_jobs(cfg: DictConfig, split_hashes: dict[str, str], pool_specs: list[PoolSpec] | None) -> list[Job]:
    zoo, dataset = cfg.zoo, cfg.data.name
    source_spec = _train_spec({}, OmegaConf.to_container(zoo.source, resolve=True), "zoo.source")
    if source_spec["split"] != "owner":
        raise ConfigError(f"zoo.source.split='{source_spec['split']}': the source is trained on the owner split.")
    augment = bool(cfg.data.get("augment", False))
    if source_spec.get("weights"):  # an imported source; attacks and pools start from it like from a trained one
        source = import_job("source", source_spec, "zoo.source")
        source_spec = source.spec
    else:
        source = _train_job("source", source_spec, dataset, split_hashes, augment=augment)
    jobs = [source, *_negative_jobs(zoo, source_spec, dataset, split_hashes, augment, source),
            *_positive_jobs(zoo, source, augment)]
    if pool_specs:  # after the suspects: a pool model must not copy one of them
        jobs += pool_jobs(zoo, list(pool_specs), source, dataset, split_hashes, augment)
        check_pool_collisions(jobs, source)
    return jobs


def _pretrained_negative(source_spec: dict[str, Any], params: dict[str, Any], where: str, dataset: str,
                         split_hashes: dict[str, str], augment: bool) -> Job:
    """PTFT: the source's recipe from the same published weights, on the independent split (another seed)."""
    if params.get("arch", source_spec["arch"]) != source_spec["arch"]:
        raise ConfigError(f"{where}: PTFT starts from the source's pretrained weights; drop 'arch: {params['arch']}'.")
    params = {**params, "split": "independent"}
    spec = _train_spec(source_spec, params, where)
    if not spec.get("pretrained") and not spec.get("pretrained_weights"):
        raise ConfigError(f"{where}: kind PTFT fine-tunes the public pretrained weights the source started from, but "
                          "neither the source nor this entry sets 'pretrained: true' or 'pretrained_weights: FILE'.")
    return _train_job("negative", spec, dataset, split_hashes, kind="PTFT", augment=augment)
