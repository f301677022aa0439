"""Recipes: YAML + `include:` + command-line dotlist, validated against dataclasses before any compute.

Merge order: dataclass defaults < included files (in order) < the recipe < command-line overrides.
Method entries are validated against each method's own `Config`; zoo entries (negatives, positives)
are validated by the zoo planner (`bench.zoo.plan`), which the CLI runs before any training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from bench.io import name_problem, sha256_json
from bench.methods import METHODS
from bench.metrics import BootstrapConfig
from bench.training import OptimizerConfig, ScheduleConfig, TrainerConfig
from datamodules import DATAMODULES
from datamodules.base import DataConfig

# Where things go, how they run and how many times, not what is measured.
HASH_EXCLUDED = ("paths", "tracking", "compute", "trials")


class ConfigError(ValueError):
    """A recipe or override is invalid; raised before any work (the CLI exits 2)."""


@dataclass
class PathsConfig:
    data_dir: str = "data"  # datasets (Fashion-MNIST IDX files, CIFAR, ImageNet folder)
    zoo_dir: str = "zoo"  # zoos live at <zoo_dir>/<zoo.name>/
    results_dir: str = "local_results"  # your result JSON, plots, leaderboard (git-ignored; `results` publishes)
    cache_dir: str = ".cache/fpbench"  # fingerprints, Lightning and W&B scratch, matplotlib cache
    published_dir: str | None = None  # the published benchmark to compare with; None: results/ of this checkout
    overwrite_published: bool = False  # allow a run to replace a published result whose numbers differ


@dataclass
class ModelSpec:
    """How one model is trained from scratch (the source; negatives and pools override fields)."""

    arch: str = "convnet"
    arch_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    split: str = "owner"
    seed: int = 0


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


@dataclass
class EvalConfig:
    fpr_targets: list[float] = field(default_factory=lambda: [0.01, 0.1])
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    query_batch_size: int = 1024  # largest batch the oracle sends to a suspect
    device: str = "auto"  # auto | cpu | cuda | cuda:N: where fingerprints are generated and verified
    progress: bool = True


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
    workers: int = 1  # zoo jobs at once (ray)
    cpu_threads: int | None = None  # torch intra-op threads; None: torch's default. 1 is fastest for tiny CPU models
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    ray: RayConfig = field(default_factory=RayConfig)


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


EXECUTORS = ("local", "ray")
WANDB_MODES = ("offline", "online", "disabled")


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


def _split_overrides(overrides: list[str]) -> tuple[list[str], list[str] | None, list[tuple[str, str, str]]]:
    """Separate plain dotlist items, a `methods=[a,b]` selection and `methods.<name>.<key>=v` items."""
    plain: list[str] = []
    selection: list[str] | None = None
    per_method: list[tuple[str, str, str]] = []
    for item in overrides:
        item = item[2:] if item.startswith("--") else item  # W&B agents pass --key=value
        if "=" not in item:
            raise ConfigError(f"Override '{item}' is not key=value (e.g. zoo.source.epochs=3).")
        key, value = item.split("=", 1)
        if key == "methods":
            parsed = OmegaConf.from_dotlist([f"v={value}"]).v if value.strip() else []
            names = list(parsed) if isinstance(parsed, ListConfig) else [str(parsed)]
            selection = [str(n) for n in names]
        elif key.startswith("methods.") and len(key.split(".")) >= 3 and not key.split(".")[1].isdigit():
            _, name, sub = key.split(".", 2)
            per_method.append((name, sub, value))
        else:
            plain.append(f"{key}={value}")
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


def _method_entries(cfg: DictConfig, selection: list[str] | None, per_method: list[tuple[str, str, str]]) -> list[dict]:
    """Validate every method entry against its Config; apply selection and per-method overrides."""
    entries = []
    for i, raw in enumerate(cfg.methods):
        entry = {"name": raw} if isinstance(raw, str) else OmegaConf.to_container(raw, resolve=True)
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"methods[{i}] must be a method name or a mapping with 'name:'; got {raw!r}.")
        entries.append(entry)
    names = [e["name"] for e in entries]
    for name in [*names, *(selection or []), *(n for n, _, _ in per_method)]:
        if name not in METHODS:
            raise ConfigError(METHODS.unknown_message(name))
    if selection is not None:
        chosen = []
        for name in selection:
            matching = [e for e in entries if e["name"] == name] or [{"name": name}]
            chosen.extend(matching)
        entries = chosen
    resolved = []
    for entry in entries:
        name = entry["name"]
        params = {k: v for k, v in entry.items() if k != "name"}
        for m_name, key, value in per_method:
            if m_name == name:
                params = OmegaConf.to_container(OmegaConf.merge(params, OmegaConf.from_dotlist([f"{key}={value}"])))
        method_cls = METHODS.get(name)
        schema = OmegaConf.structured(method_cls.Config)
        merged = _merge_checked(schema, params, f"method '{name}'")
        try:
            config = OmegaConf.to_object(merged)
        except (ValueError, TypeError) as err:  # __post_init__ range checks
            raise ConfigError(f"method '{name}': {err}") from None
        resolved.append({"name": name, **OmegaConf.to_container(OmegaConf.structured(config), resolve=True)})
    return resolved


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Load, merge and validate a recipe. Returns a read-only DictConfig with resolved `methods`.

    Raises:
        ConfigError: naming the bad key and the valid ones, or the field and the expected type.
    """
    plain, selection, per_method = _split_overrides(list(overrides or []))
    schema = OmegaConf.structured(RecipeConfig)
    recipe = _read_yaml(Path(path), ())
    cfg = _merge_checked(schema, recipe, str(path))
    try:
        cli = OmegaConf.from_dotlist(plain)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Cannot parse command-line overrides {plain}: {err}") from None
    cfg = _merge_checked(cfg, cli, "command-line overrides")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Cannot resolve interpolations in {path}: {err}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"Required keys missing in {path}: {', '.join(missing)}. Set them in the recipe or as key=value.")
    _check_choices(cfg)
    methods = _method_entries(cfg, selection, per_method)
    OmegaConf.set_struct(cfg, False)
    cfg.methods = methods
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _check_names(cfg: DictConfig) -> None:
    """Names that become folder names (``zoo.name``) must be one safe path component."""
    problem = name_problem(cfg.zoo.name)
    if problem:
        raise ConfigError(f"zoo.name={cfg.zoo.name!r} is not a valid folder name: it {problem}. "
                          "Pick a plain name such as 'my_zoo'.")


def _check_choices(cfg: DictConfig) -> None:
    _check_names(cfg)
    if cfg.compute.executor not in EXECUTORS:
        raise ConfigError(f"compute.executor='{cfg.compute.executor}' is not one of {', '.join(EXECUTORS)}.")
    if cfg.tracking.wandb.mode not in WANDB_MODES:
        raise ConfigError(f"tracking.wandb.mode='{cfg.tracking.wandb.mode}' is not one of {', '.join(WANDB_MODES)}.")
    if cfg.compute.cpu_threads is not None and cfg.compute.cpu_threads < 1:
        raise ConfigError(f"compute.cpu_threads={cfg.compute.cpu_threads} must be >= 1 (or null for torch's default).")
    if cfg.compute.workers < 1:
        raise ConfigError(f"compute.workers={cfg.compute.workers} must be >= 1.")
    if cfg.trials.count < 1:
        raise ConfigError(f"trials.count={cfg.trials.count} must be >= 1 (the number of times the benchmark runs).")
    for target in cfg.eval.fpr_targets:
        if not 0 < target < 1:
            raise ConfigError(f"eval.fpr_targets contains {target}; every target must be in (0, 1).")

    if cfg.data.name not in DATAMODULES:
        raise ConfigError(DATAMODULES.unknown_message(cfg.data.name))


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved recipe as plain Python containers (a fresh copy)."""
    return copy.deepcopy(OmegaConf.to_container(cfg, resolve=True))


def recipe_sha256(cfg: DictConfig) -> str:
    """sha256 of the resolved recipe, without `paths`, `tracking` and `compute`."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in HASH_EXCLUDED}
    return sha256_json(data)


def run_config(cfg: DictConfig, method_entry: dict) -> dict[str, Any]:
    """What one result measures: seed, data, zoo, eval and one method's config (hashed for its file name)."""
    data = to_dict(cfg)
    return {"seed": data["seed"], "data": data["data"], "zoo": data["zoo"], "eval": data["eval"], "method": method_entry}


def run_config_sha256(cfg: DictConfig, method_entry: dict) -> str:
    """sha256 of `run_config`: adding another method to a recipe does not change this method's hash."""
    return sha256_json(run_config(cfg, method_entry))
