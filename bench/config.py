"""Recipes: YAML + `include:` + command-line dotlist, validated against dataclasses before any compute.

Merge order: dataclass defaults < included files (in order) < the recipe < command-line overrides.
Method entries are validated against each method's own `Config`; zoo entries (negatives, positives)
are validated by the zoo planner (`bench.zoo.plan`), which the CLI runs before any training, except
their `deploy:` chains, which are checked here: the zoo never imports the deployments and keeps a chain
as plain data (docs/architecture.md, "Import direction"). `ConfigError` (`bench.errors`) and `ModelSpec`
(`bench.model_spec`) live in leaf modules the zoo imports; they are re-exported here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from bench.budgets import DEFAULT_BUDGETS
from bench.builtin_recipes import builtin_names, builtin_recipe, is_builtin_name
from bench.deploy import parse_chain
from bench.endpoints import parse_endpoints
from bench.entry_config import build_config
from bench.errors import ConfigError
from bench.fingerprint_import import IMPORT_KEY, check_import_id
from bench.io import sha256_json
from bench.methods import METHODS, instantiate
from bench.metrics import BootstrapConfig
from bench.model_spec import ModelSpec, to_dict, without_unset_external  # noqa: F401  (to_dict: re-exported)
from bench.oracle import ACCESS_LEVELS
from bench.recipe_checks import check_method_sizes, check_recipe, check_values
from bench.registry import RegistryError
from bench.training_config import (  # noqa: F401  (OptimizerConfig, ScheduleConfig: re-exported, callers import them here)
    OptimizerConfig,
    ScheduleConfig,
    TrainerConfig,
    check_seed,
)
from datamodules.base import DataConfig

log = logging.getLogger(__name__)

# Where things go, how they run and how many times, not what is measured.
HASH_EXCLUDED = ("paths", "tracking", "compute", "trials")


@dataclass
class PathsConfig:
    data_dir: str = "data"  # datasets (Fashion-MNIST IDX files, CIFAR, ImageNet folder)
    zoo_dir: str = "zoo"  # zoos live at <zoo_dir>/<zoo.name>/
    results_dir: str = "local_results"  # your result JSON, plots, leaderboard (git-ignored; `results` publishes)
    cache_dir: str = ".cache/fpbench"  # fingerprints, Lightning and W&B scratch, matplotlib cache
    published_dir: str | None = None  # the published benchmark to compare with; None: results/ of this checkout
    overwrite_published: bool = False  # allow a run to replace a published result whose numbers differ
    recipe_dir: str | None = None  # where `weights:` paths are relative to; None: set by load_recipe to the recipe's folder


@dataclass
class ZooConfig:
    name: str = "???"  # required: the zoo's folder name
    split_seed: int = 0  # seeds the owner/attacker/independent/test split (part of the zoo's identity)
    source: ModelSpec = field(default_factory=ModelSpec)
    # {kind: SAST|SADT|DAST|DADT, seed: int|[...], arch: str|[...], ...ModelSpec overrides}
    negatives: list[Any] = field(default_factory=list)
    # {attack: NAME, ...params (a list where the field is a scalar expands)} or {chain: [{attack: ..}, ..]}
    positives: list[Any] = field(default_factory=list)
    pool_seed_offset: int = 1000  # defender pool seeds start here, away from the negatives' seeds
    # Suspects behind an API, scored after the zoo's (docs/byo.md, "Endpoints"): {label, role, attack|kind,
    # callable: "pkg.mod:fn"} or {..., url, access, timeout_s, ...}. Left out of config hashes while empty.
    endpoints: list[Any] = field(default_factory=list)
    # Deployment of every scored suspect (docs/deployment.md): [{jpeg: {quality: 75}}, {top1: {}}], before
    # each entry's own `deploy:`. Left out of config hashes while empty.
    deploy: list[Any] = field(default_factory=list)


@dataclass
class EvalConfig:
    fpr_targets: list[float] = field(default_factory=lambda: [0.01, 0.1])
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    query_batch_size: int = 1024  # largest batch the oracle sends to a suspect
    device: str = "auto"  # auto | cpu | cuda | cuda:N: where fingerprints are generated and verified
    progress: bool = True
    # Queries per suspect at which each fingerprint is also scored, subsampled (docs/metrics.md); [] for none.
    # Left out of config hashes: budgets add figures to a result, never change its main score.
    budgets: list[int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline (no account, no network) | online | disabled
    project: str = "fpbench"
    entity: str | None = None
    group: str | None = None  # None: the zoo name
    dir: str = "${paths.cache_dir}"  # W&B writes <dir>/wandb/
    log_zoo: bool = True  # one W&B run per trained zoo model (its training curve)


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class ResourcesConfig:
    cpus: float = 1.0  # per zoo job (Ray executor)
    gpus: float = 0.0


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray instance; "auto" or ray://host:port: join a cluster


@dataclass
class ComputeConfig:
    executor: str = "local"  # local | ray
    workers: int | None = None  # zoo jobs at once; null: one per cpu_threads cores (bench/zoo/workers.py)
    cpu_threads: int | None = None  # torch intra-op threads; None: torch's default. 1 is fastest for tiny CPU models
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    # Cap on the fingerprint samples a method config implies (GiB of float32 images); None: this machine's RAM
    max_sample_memory_gb: float | None = None


@dataclass
class TrialsConfig:
    """How many times `fpbench run` repeats the benchmark (docs/recipes.md, "Trials")."""

    count: int = 1  # trial t runs with seed + t (fingerprint generation)
    new_source: bool = False  # and with zoo.source.seed + t: a new source and new positives per trial


@dataclass
class RecipeConfig:
    seed: int = 0  # the trial seed: fingerprint generation (zoo seeds live under zoo:)
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    methods: list[Any] = field(default_factory=list)  # [{name: adv_tra, ...params}, ...]
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    trials: TrialsConfig = field(default_factory=TrialsConfig)


def _read_yaml(path: Path, stack: tuple[Path, ...]) -> DictConfig:
    """Load `path`, resolving `include:` (relative to the file) depth-first, with cycle detection."""
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"Recipe include cycle: {chain}. Remove one of these includes.")
    if not path.is_file():
        where = f" (included from {stack[-1]})" if stack else ""
        raise ConfigError(f"Recipe file not found: {path}{where}. Check the path; includes are relative to the including file.")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # yaml errors carry line numbers
        raise ConfigError(f"Cannot parse recipe {path}: {err}") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"Recipe {path} must be a YAML mapping at top level, got a {type(raw).__name__}.")
    includes = raw.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged = OmegaConf.create({})
    for inc in includes:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / str(inc), (*stack, path)))
    return OmegaConf.merge(merged, raw)


def _parse_override(item: str) -> tuple[str, str]:
    """``key=value`` (or ``--key=value``, as W&B agents pass) split, with a key of non-empty dotted parts."""
    text = item[2:] if item.startswith("--") else item
    if "=" not in text:
        raise ConfigError(f"Override '{item}' is not key=value (e.g. zoo.source.epochs=3).")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"Override '{item}' has no key before '='. Write key=value, e.g. zoo.source.epochs=3.")
    if any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"Override '{item}': key '{key}' has an empty part (two dots in a row, or a dot at an "
                          "end). Write a dotted key such as zoo.source.epochs=3.")
    return key, value


def _parse_value(item: str, key: str, value: str) -> DictConfig:
    """``{key: value}`` as omegaconf reads a dotlist item; a value it cannot read names the override."""
    try:
        return OmegaConf.from_dotlist([f"{key}={value}"])
    except Exception as err:  # yaml's ParserError, omegaconf's grammar errors
        detail = re.sub(r'\s*in "<unicode string>", line \d+, column \d+', "", " ".join(str(err).split()))
        raise ConfigError(f"Cannot parse override '{item}': {detail}. Check brackets and quotes: a list is [a,b], "
                          "a mapping {k: v}; quote the whole override for the shell.") from None


def _split_overrides(overrides: list[str]) -> tuple[list[tuple[str, DictConfig]], list[str] | None,
                                                    list[tuple[str, str, DictConfig]]]:
    """Parse every override: plain ``(item, {key: value})`` pairs, a ``methods=[a,b]`` selection and
    ``methods.<name>.<key>=v`` items as ``(item, name, {key: value})``."""
    plain: list[tuple[str, DictConfig]] = []
    selection: list[str] | None = None
    per_method: list[tuple[str, str, DictConfig]] = []
    for item in overrides:
        key, value = _parse_override(item)
        if key == "methods":
            parsed = _parse_value(item, "v", value).v if value.strip() else []
            names = list(parsed) if isinstance(parsed, ListConfig) else [parsed]
            if any(isinstance(n, (DictConfig, ListConfig)) for n in names):
                raise ConfigError(f"Override '{item}': methods=[...] on the command line selects methods by name "
                                  "(methods=[adv_tra,ipguard]); set a parameter with methods.<name>.<key>=value "
                                  "(methods.cae.eps=0.1), or list full entries in a recipe's methods:.")
            selection = [str(n) for n in names]
        elif key.startswith("methods.") and len(key.split(".")) >= 3 and not key.split(".")[1].isdigit():
            _, name, sub = key.split(".", 2)
            per_method.append((item, name, _parse_value(item, sub, value)))
        else:
            plain.append((item, _parse_value(item, key, value)))
    return plain, selection, per_method


def _explain(err: OmegaConfBaseException, where: str) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
    msg = str(err).splitlines()[0]
    if isinstance(err, ConfigKeyError):
        return f"Unknown key '{key}' in {where}: {msg}"
    return f"Invalid value for '{key}' in {where}: {msg}"


def _valid_keys(node: Any) -> str:
    return ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else ""


def _merge_checked(base: DictConfig, other: Any, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except ConfigKeyError as err:
        full_key = str(getattr(err, "full_key", "") or "")
        parent_path = full_key.rsplit(".", 1)[0] if "." in full_key else ""
        parent = OmegaConf.select(base, parent_path) if parent_path else base
        bad = full_key.rsplit(".", 1)[-1] or "?"
        raise ConfigError(f"Unknown key '{bad}' (at '{full_key}') in {where}. Valid keys"
                          f"{' under ' + parent_path if parent_path else ''}: {_valid_keys(parent)}.") from None
    except (ValidationError, OmegaConfBaseException) as err:
        raise ConfigError(_explain(err, where)) from None


def _resolve_method(entry: dict, overrides: list[DictConfig]) -> dict:
    """One method entry with its command-line overrides, validated against the method's Config."""
    name = entry["name"]
    params = {k: v for k, v in entry.items() if k != "name"}
    for override in overrides:
        params = OmegaConf.to_container(OmegaConf.merge(params, override))
    method_cls = METHODS.get(name)
    # A loop-level key, not a Config field: the imported fingerprint to score (docs/byo.md, External fingerprints)
    value = params.pop(IMPORT_KEY, None)
    imported = {IMPORT_KEY: value} if value is not None else {}
    config = build_config(method_cls.Config, params, where=f"method '{name}'", name=name)
    try:
        if hasattr(config, "seed"):
            check_seed(f"{name}.seed", config.seed)
        if imported:
            check_import_id(name, imported[IMPORT_KEY])
    except (ValueError, TypeError) as err:  # the seed's and the imported fingerprint's checks
        raise ConfigError(f"method '{name}': {err}") from None
    return {"name": name, **OmegaConf.to_container(OmegaConf.structured(config), resolve=True), **imported}


def _method_key(name: Any) -> str:
    """The registry key of a recipe's method name: a registered name, or a `package.module:Class` reference
    imported and registered as `package.module-Class` (a safe folder name for results and caches)."""
    try:
        return METHODS.resolve(str(name))
    except RegistryError as err:
        raise ConfigError(str(err)) from None


def _method_entries(cfg: DictConfig, selection: list[str] | None,
                    per_method: list[tuple[str, str, DictConfig]]) -> list[dict]:
    """Validate every method entry against its Config; apply selection and per-method overrides.

    A ``methods.<name>.<key>`` override of a method that does not run (not in the recipe, or left out by
    the selection) is an error naming the methods that do and how to select it: it would change nothing.
    """
    entries = []
    for i, raw in enumerate(cfg.methods):
        entry = {"name": raw} if isinstance(raw, str) else OmegaConf.to_container(raw, resolve=True)
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"methods[{i}] must be a method name or a mapping with 'name:'; got {raw!r}.")
        entries.append({**entry, "name": _method_key(entry["name"])})
    selection = None if selection is None else [_method_key(name) for name in selection]
    for _, name, _ in per_method:
        _method_key(name)
    chosen = entries
    if selection is not None:
        chosen = [e for name in selection for e in ([e for e in entries if e["name"] == name] or [{"name": name}])]
    running = list(dict.fromkeys(e["name"] for e in chosen))
    for item, name, _ in per_method:
        if name not in running:
            raise ConfigError(f"Override '{item}' sets a parameter of '{name}', which does not run: the methods that "
                              f"run are {', '.join(running) or '(none)'}. Fix: select it too "
                              f"(methods=[{','.join([*running, name])}]) or drop the override.")
    return [_resolve_method(e, [o for _, n, o in per_method if n == e["name"]]) for e in chosen]


def _recipe_file(path: str | Path) -> Path:
    """The file a recipe argument names: a path as given, or a built-in recipe's file for a bare name."""
    if not is_builtin_name(path):
        return Path(path)
    found = builtin_recipe(str(path))
    if found is None:
        names = builtin_names()
        raise ConfigError(f"Recipe '{path}' is neither a file nor a built-in recipe. Built-in recipes: "
                          f"{', '.join(names) or '(none installed)'}. Give one of those names (fpbench run smoke) "
                          "or a recipe file's path (fpbench run recipes/smoke.yaml).")
    return found


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Load, merge and validate a recipe. Returns a read-only DictConfig with resolved `methods`.

    `path` is a recipe file, or the bare name of a built-in recipe (`quickstart`, `smoke`: no `/`, no
    `.yaml`, and no such file here), which works from an installed wheel too (bench.builtin_recipes).

    Raises:
        ConfigError: naming the bad key and the valid ones, or the field and the expected type.
    """
    plain, selection, per_method = _split_overrides(list(overrides or []))
    schema = OmegaConf.structured(RecipeConfig)
    source = _recipe_file(path)
    recipe = _read_yaml(source, ())
    cfg = _merge_checked(schema, recipe, str(path))
    for item, parsed in plain:
        cfg = _merge_checked(cfg, parsed, f"override '{item}'")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Cannot resolve interpolations in {path}: {err}") from None
    if cfg.paths.recipe_dir is None:  # `weights:` files are relative to the recipe (docs/byo.md)
        cfg.paths.recipe_dir = str(source.resolve().parent)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"Required keys missing in {path}: {', '.join(missing)}. Set them in the recipe or as key=value.")
    _check_choices(cfg, per_method)
    _check_suspect_deploys(cfg)
    methods = _method_entries(cfg, selection, per_method)
    for entry in methods:
        _raise_config_error(check_method_sizes, entry, cfg)
    _check_endpoints(cfg, methods)
    OmegaConf.set_struct(cfg, False)
    cfg.methods = methods
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _raise_config_error(check: Any, *args: Any) -> None:
    """Run a `bench.recipe_checks` check; its ValueError becomes a ConfigError (the CLI exits 2)."""
    try:
        check(*args)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_choices(cfg: DictConfig, per_method: list[tuple[str, str, DictConfig]]) -> None:
    """Values first (inf/nan anywhere, null arch params, also in ``methods.<name>.<key>`` overrides), then ranges."""
    _raise_config_error(check_values, OmegaConf.to_container(cfg, resolve=True))
    for _, name, override in per_method:
        _raise_config_error(check_values, OmegaConf.to_container(override), f"methods.{name}")
    if cfg.trials.count < 1:
        raise ConfigError(f"trials.count={cfg.trials.count} must be >= 1 (the number of times the benchmark runs).")
    cap = cfg.compute.max_sample_memory_gb
    if cap is not None and not cap > 0:
        raise ConfigError(f"compute.max_sample_memory_gb={cap} must be > 0 (GiB), or null for this machine's RAM.")
    _raise_config_error(check_recipe, cfg)


def _check_suspect_deploys(cfg: DictConfig) -> None:
    """Every negative's and positive's own `deploy:` chain (docs/deployment.md): each wrapper known, its
    parameters valid. The planner only splits the chain off the entry, as plain data."""
    for key in ("negatives", "positives"):
        for i, entry in enumerate(OmegaConf.to_container(cfg.zoo[key], resolve=True)):
            if isinstance(entry, dict) and "deploy" in entry:
                _raise_config_error(parse_chain, entry["deploy"], f"zoo.{key}[{i}].deploy")


def _needed_access(methods: list[dict]) -> dict[str, str]:
    """The most each method name's entries ask of a suspect (an entry's config may raise it: CoRt's jsd)."""
    out: dict[str, str] = {}
    for entry in methods:
        access = instantiate(entry).access
        if ACCESS_LEVELS.index(access) >= ACCESS_LEVELS.index(out.get(entry["name"], ACCESS_LEVELS[0])):
            out[entry["name"]] = access
    return out


def _check_endpoints(cfg: DictConfig, methods: list[dict]) -> None:
    """`zoo.endpoints` entries valid, each callable importable, and no endpoint too weak for a method."""
    entries = OmegaConf.to_container(cfg.zoo.endpoints, resolve=True)
    if not entries:
        return
    try:
        parse_endpoints(entries, _needed_access(methods))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _hashed(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without an empty `zoo.endpoints` or `zoo.deploy` and without `eval.budgets`, so recipes keep
    the hashes they had.

    `eval.budgets` adds figures to a result and never changes its main score (docs/decisions.md, "Query budgets").
    `eval.progress` only shows bars: it is hashed at its default, so a run with `eval.progress=false` names
    the same result files as one with bars (published files were hashed with the default).
    """
    if isinstance(data.get("eval"), dict):
        data["eval"] = {k: v for k, v in data["eval"].items() if k != "budgets"}
        if "progress" in data["eval"]:
            data["eval"]["progress"] = EvalConfig.progress
    zoo = data.get("zoo")
    if isinstance(zoo, dict):  # an empty `zoo.endpoints` or `zoo.deploy` (docs/deployment.md) is left out
        data["zoo"] = {k: v for k, v in zoo.items() if not (k in ("endpoints", "deploy") and not v)}
    return data


def recipe_sha256(cfg: DictConfig) -> str:
    """sha256 of the resolved recipe without `paths`, `tracking`, `compute` and `trials`, an empty
    `zoo.endpoints` and unset external-model fields (so older recipes keep their hashes)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in HASH_EXCLUDED}
    return sha256_json(_hashed(data))


def run_config(cfg: DictConfig, method_entry: dict) -> dict[str, Any]:
    """What one result measures: seed, data, zoo, eval and one method's config (hashed for its file name)."""
    data = _hashed(to_dict(cfg))
    return {"seed": data["seed"], "data": data["data"], "zoo": data["zoo"], "eval": data["eval"], "method": method_entry}


def run_config_sha256(cfg: DictConfig, method_entry: dict) -> str:
    """sha256 of `run_config`: adding another method to a recipe does not change this method's hash."""
    return sha256_json(run_config(cfg, method_entry))
