"""What a zoo job is: the `Job` and `ZooPlan` records, model ids, and from-scratch training jobs.

The planning primitives shared by `bench.zoo.plan` (source, negatives, positives) and
`bench.zoo.pool_plan` (defender pools), so that both import this module and not each other.
"""

from __future__ import annotations

import contextvars
import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bench.entry_config import check_keys
from bench.errors import ConfigError
from bench.io import sha256_file, sha256_json
from bench.model_spec import ModelSpec, check_model_spec, without_unset_external
from bench.nets import check_arch
from bench.nets.factory_net import FACTORY_PREFIX
from bench.nets.timm_net import is_timm_arch
from bench.registry import RegistryError
from bench.zoo.external import resolve_file
from datamodules import DATAMODULES
from datamodules.base import split_counts

NEGATIVE_KINDS = ("SAST", "SADT", "DAST", "DADT", "PTFT")  # PTFT: fine-tuned from the source's pretrained weights
IMPORTED_KINDS = (*NEGATIVE_KINDS, "external")  # an imported negative's kind is the user's description of it
# The folder `weights:`/`pretrained_weights:` paths are relative to (paths.recipe_dir), set by plan_zoo.
RECIPE_DIR: contextvars.ContextVar[str | None] = contextvars.ContextVar("recipe_dir", default=None)
TRAIN_SPLITS = ("owner", "independent")
# Kinds whose training set may overlap the owner's (`overlap: F`, docs/threat_models.md): those trained on
# the independent split; the same-data kinds already train on the owner's, and PTFT's point is the weights.
OVERLAP_KINDS = ("SADT", "DADT")


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
    # Files from outside: {"weights"|"pretrained_weights": path as the recipe gives it, "sha256": .., "path": absolute}
    external: dict[str, Any] | None = None
    # Suspects: the entry's own `deploy:` chain (docs/deployment.md), run after `zoo.deploy`; never in the id
    # or the manifest: a deployed suspect is the same checkpoint served behind wrappers.
    deploy: list[Any] | None = None
    label: str | None = None  # a suspect's name from the recipe's `label:` (never in the id or the manifest)
    overlap: float | None = None  # overlap negatives: the fraction of the training set drawn from the owner split

    @property
    def group(self) -> str | None:
        """The suspect's group in results: a positive's attack label, a negative's kind (with its overlap)."""
        if self.role == "positive":
            return self.attack
        return self.kind if self.overlap is None else f"{self.kind}(overlap={self.overlap:g})"

    def record_base(self) -> dict[str, Any]:
        record = {"model_id": self.model_id, "role": self.role, "kind": self.kind, "attack": self.attack,
                  "provenance": self.provenance, "arch": self.arch, "arch_params": self.arch_params,
                  "params": self.spec, "seed": self.seed, "parent": self.parent, "split": self.split}
        if self.overlap is not None:  # only overlap negatives: other records stay as they were
            record["overlap"] = self.overlap
        if self.external:  # the absolute path stays out of the manifest
            record["external"] = {k: v for k, v in self.external.items() if k != "path"}
        return record


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


def hashed_step(step: dict[str, Any], revision: int) -> dict[str, Any]:
    """An attack step `{attack, params}` as its model id hashes it: with the attack's output revision
    when > 0 (a fix that changed the output), so un-revised steps keep the ids they always had."""
    return {**step, "revision": revision} if revision else step


def _scalar_fields(config_cls: type) -> set[str]:
    """Fields whose YAML value is a scalar: a list given there expands into several models."""
    out = set()
    for f in dataclasses.fields(config_cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        typed_list = str(f.type).startswith(("list[", "dict["))  # `mean: list[float] | None` defaults to None
        if not typed_list and not isinstance(default, (list, dict)) and not dataclasses.is_dataclass(default):
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
    # Keys as every entry config checks them (bench.entry_config); the merge stays omegaconf's own, since a
    # model id hashes the resulting dict and must not move.
    check_keys(ModelSpec, overrides, where, "", listed=("kind",))
    schema = OmegaConf.merge(OmegaConf.structured(ModelSpec), base)
    try:
        merged = OmegaConf.merge(schema, overrides)
    except Exception as err:
        valid = ", ".join(f.name for f in dataclasses.fields(ModelSpec))
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}. Valid keys: kind, {valid}.") from None
    spec = without_unset_external(OmegaConf.to_container(merged, resolve=True))  # old ids stay as they were
    if spec.get("factory"):  # the shorthand becomes the arch, so ids and records name one arch string
        factory = spec.pop("factory")
        if spec["arch"] not in (ModelSpec.arch, FACTORY_PREFIX + factory):
            raise ConfigError(f"{where}: 'factory: {factory}' and 'arch: {spec['arch']}' name two architectures; "
                              "keep one.")
        spec["arch"] = FACTORY_PREFIX + factory
    if spec["split"] not in TRAIN_SPLITS:
        raise ConfigError(f"{where}.split='{spec['split']}' is not one of {', '.join(TRAIN_SPLITS)}.")
    try:
        check_model_spec(merged, where)  # epochs, batch size, seed: every resolved entry, not only the source
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return spec


def _train_provenance(spec: dict[str, Any], dataset: str, overlap: float | None = None) -> str:
    data = spec["split"] if overlap is None else f"{spec['split']}+owner(overlap={overlap:g})"
    return f"train({spec['arch']},{dataset}:{data},seed={spec['seed']},epochs={spec['epochs']})"


def _train_job(role: str, spec: dict[str, Any], dataset: str, split_hashes: dict[str, str], kind: str | None = None,
               augment: bool = False, overlap: float | None = None) -> Job:
    """A from-scratch training job; its id hashes `augment: true` only when `data.augment` is on, and the
    overlap fraction with the owner split's hash only for an overlap negative (so old ids stay)."""
    _check_arch(spec["arch"], spec["arch_params"])
    if spec.get("weights"):
        raise ConfigError(f"A {role} with 'weights:' is imported, not trained; drop 'weights:' from its training spec.")
    if spec.get("test_acc") is not None:
        raise ConfigError(f"A trained {role} has no owner-recorded 'test_acc:' (fpbench measures it); the key is for "
                          "imported models ('weights:'). Drop it.")
    if spec.get("pretrained") and not is_timm_arch(spec["arch"]) and not spec.get("pretrained_weights"):
        raise ConfigError(f"{role}: 'pretrained: true' downloads timm's weights and needs a 'timm:<name>' arch (got "
                          f"'{spec['arch']}'); for other archs give 'pretrained_weights: FILE'.")
    payload = {"role": role, "op": "train", "data": dataset, "split_hash": split_hashes[spec["split"]], "spec": spec}
    if augment:  # augmented batches change the trained model, so they must change its id
        payload["augment"] = True
    if overlap is not None:  # part of the training set is the owner's: its fraction and content make the model
        payload.update(overlap=overlap, owner_split_hash=split_hashes["owner"])
    external, provenance = None, _train_provenance(spec, dataset, overlap)
    if spec.get("pretrained_weights"):  # the file's content, not its path, makes the model
        path = external_file(spec["pretrained_weights"], role)
        external = {"pretrained_weights": spec["pretrained_weights"], "sha256": sha256_file(path), "path": str(path)}
        payload["pretrained_sha256"] = external["sha256"]
        provenance = f"pretrained({Path(spec['pretrained_weights']).name},sha256={external['sha256'][:12]})->{provenance}"
    elif spec.get("pretrained"):
        provenance = f"pretrained({spec['arch']})->{provenance}"
    return Job(model_id=_model_id(payload), role=role, provenance=provenance, op="train", spec=spec,
               arch=spec["arch"], arch_params=spec["arch_params"], seed=spec["seed"], kind=kind, split=spec["split"],
               external=external, overlap=overlap)


def external_file(value: str, where: str) -> Path:
    """A `weights:`-style path resolved against the recipe's folder (`RECIPE_DIR`); ConfigError if absent."""
    return resolve_file(value, RECIPE_DIR.get(), where)


def import_job(role: str, spec: dict[str, Any], where: str, kind: str | None = None, attack: str | None = None,
               parent: str | None = None) -> Job:
    """An imported model: its id hashes the file's sha256, the arch, its params, the normalisation and role/kind."""
    _check_arch(spec["arch"], spec["arch_params"])
    path = external_file(spec["weights"], where)
    digest = sha256_file(path)
    payload = {"role": role, "op": "import", "sha256": digest, "arch": spec["arch"], "arch_params": spec["arch_params"],
               "mean": spec.get("mean"), "std": spec.get("std"), "kind": kind, "parent": parent}
    train_spec = {k: v for k, v in spec.items() if k not in ("weights", "mean", "std")}
    external = {"weights": spec["weights"], "sha256": digest, "mean": spec.get("mean"), "std": spec.get("std"),
                "path": str(path)}
    return Job(model_id=_model_id(payload), role=role, op="import", spec=train_spec, arch=spec["arch"],
               arch_params=spec["arch_params"], seed=spec.get("seed", 0), parent=parent, kind=kind, attack=attack,
               provenance=f"imported from {spec['weights']} (sha256 {digest[:12]})", split="external",
               external=external)


def _check_arch(arch: str, params: dict[str, Any]) -> None:
    """Arch name and params are checked by the nets package itself (no weights are built; a timm model's
    constructor checks its params on the meta device). A null param is refused: timm drops it while the
    model id would hash it."""
    nulls = sorted(str(key) for key, value in params.items() if value is None)
    if nulls:
        raise ConfigError(f"arch_params of '{arch}' set '{nulls[0]}' to null; remove the key to use the "
                          "architecture's default, or give a value.")
    try:
        check_arch(arch, params)
    except (RegistryError, ValueError) as err:
        raise ConfigError(str(err)) from None


def pop_overlap(params: dict[str, Any], kind: str, where: str, imported: bool) -> float | None:
    """Take an entry's `overlap:` out of its params, checked: a fraction in [0, 1] on a kind of `OVERLAP_KINDS`.

    Returns:
        The fraction as a float (so `1` and `1.0` give one model id), or None when the entry has none.

    Raises:
        ConfigError: naming `<where>.overlap`, the bad value or kind, and the fix.
    """
    if "overlap" not in params:
        return None
    value = params.pop("overlap")
    if imported:
        raise ConfigError(f"{where}.overlap: an imported negative ('weights:') was trained elsewhere, so fpbench "
                          "cannot choose its data; drop 'overlap:' (describe its data in 'label:').")
    if kind not in OVERLAP_KINDS:
        data = "the owner's data already" if kind.endswith("ST") else "the independent split after published weights"
        raise ConfigError(f"{where}.overlap={value!r}: 'overlap:' mixes owner data into a negative trained on the "
                          f"independent split ({', '.join(OVERLAP_KINDS)}), but a {kind} negative trains on {data}. "
                          "Fix: use kind SADT (the source's arch) or DADT (another arch), or drop 'overlap:'.")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}.overlap={value!r} must be a fraction in [0, 1]: the share of the training set "
                          "drawn from the owner split (e.g. overlap: 0.25, or a list [0.1, 0.25, 0.5]).")
    return float(value)


def check_overlap_sizes(cfg: Any, jobs: list[Job]) -> None:
    """Refuse an overlap negative that asks for more owner samples than the owner split holds, before
    training, when the dataset's pool sizes are known (else `owner_mix` refuses it when the data is read).

    Raises:
        ConfigError: naming the model, the counts and the fix.
    """
    overlapping = [job for job in jobs if job.overlap is not None]
    if not overlapping or cfg.data.name not in DATAMODULES:
        return
    spec = DATAMODULES.spec(cfg.data.name)
    if spec.known_pool_sizes is None:
        return
    try:
        counts = split_counts(cfg.data.splits, *spec.known_pool_sizes, spec.name)
    except ValueError as err:  # load_recipe has checked the splits; a bare plan_zoo call may not have
        raise ConfigError(str(err)) from None
    for job in overlapping:
        size, wanted = counts[job.split], round(job.overlap * counts[job.split])
        if wanted > counts["owner"]:
            raise ConfigError(f"overlap={job.overlap:g} of {job.provenance} takes {wanted} of its {size} training "
                              f"samples from the owner split, which has {counts['owner']}. Fix: lower overlap to at "
                              f"most {counts['owner'] / size:.4g}, or raise data.splits.owner.")
