"""The removal-attack contract: take the source, return a new model; the source is never mutated.

An attack is one file in this package, one class, one config dataclass; the file name, the registry
key (`ATTACKS`) and the YAML `attack:` agree. The package imports every module it holds
(`bench.registry.import_submodules`), so a new attack is one new file; its name is written once, as the
class's `name` (`@ATTACKS.register` reads it; registering names the Config too), and its small
contract-test config sits in the class (`test_config`). Every hyperparameter is a field of the config,
so the manifest records all of them.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bench.checks import check_choice, check_range  # the attack modules import them from here too
from bench.modes import eval_mode
from bench.registry import Registry
from bench.seeding import seeded_generator
from bench.training_config import OptimizerConfig, PGDConfig, ScheduleConfig, TrainerConfig, validate_training
from datamodules.batching import FetchedBatch, collate_batch

if TYPE_CHECKING:
    from bench.training import ClassifierModule

LABEL_SOURCES = ("ground_truth", "source")
ATTACK_SPLITS = ("attacker", "owner", "independent")


@dataclass
class AttackTrainingConfig:
    """Fields every training-based attack shares (defaults: the paper's fine-tuning recipe)."""

    epochs: int = 5
    batch_size: int = 64
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(name="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4))
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(name="none"))
    split: str = "attacker"  # the attacker's own data; owner / independent allowed (defender pools use owner)
    labels: str = "ground_truth"  # ground_truth | source (the source's predicted labels)
    seed: int = 0

    # Prefix of validation messages: registering an attack sets it on its own Config (`RemovalAttack.on_register`).
    attack_name: ClassVar[str] = "attack"

    def __post_init__(self) -> None:
        where = self.attack_name
        validate_training(self.optimizer, self.schedule, self.epochs, where)
        check_range(f"{where}.batch_size", self.batch_size, 1)
        check_choice(f"{where}.split", self.split, ATTACK_SPLITS)
        check_choice(f"{where}.labels", self.labels, LABEL_SOURCES)


@dataclass
class AttackContext:
    """What an attack may use: the data, the Trainer settings, where Lightning may write."""

    datamodule: Any
    trainer: TrainerConfig
    root_dir: str
    progress: bool = True
    logger: Any = False
    source_arch: str = ""  # the source's architecture name (the zoo fills it; `extract` may reuse it)
    source_arch_params: dict[str, Any] = field(default_factory=dict)  # and its `params`

    def fit(self, module: ClassifierModule, loader: DataLoader, seed: int) -> float:
        """Train with the zoo's Trainer settings; returns wall seconds."""
        from bench.training import fit  # optional: heavy (Lightning training loop)

        return fit(module, loader, self.trainer, root_dir=self.root_dir, seed=seed, logger=self.logger, progress=self.progress)


@dataclass
class AttackOutput:
    """The attacked model plus what the manifest should record about it (e.g. measured sparsity)."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0


class RemovalAttack(ABC):
    """Base class: `apply` hands `_attack` a deep copy of the source, so the source is never mutated."""

    name: ClassVar[str]  # the registry key, written only here: `@ATTACKS.register` reads it
    Config: ClassVar[type]
    # The small config the contract tests run (tests/zoo/test_attacks.py): a Config instance that runs in
    # seconds on 8x8 digits (one or two epochs), or None for the defaults. Deliberately no default here: an
    # attack without one fails the contract test that names it.
    test_config: ClassVar[Any]
    provenance_keys: ClassVar[tuple[str, ...]] = ()  # always shown in `provenance()` (flattened names)
    revision: ClassVar[int] = 0  # bump when the output for an unchanged config changes (enters the model id when > 0)
    # The threat model, as data (issue "Threat models, not a mixture"): the family the attack belongs to and the
    # config keys (dotted) that set its strength; results carry both per positive (`attack_facts`).
    family: ClassVar[str] = "other"
    strength_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def on_register(cls) -> None:
        """Called by `ATTACKS` when the class is registered: its Config's messages take the attack's name.

        Only a Config of the attack's own (one that neither sets `attack_name` itself nor already serves
        another attack) is named, so a shared base such as `AttackTrainingConfig` keeps its own.
        """
        config = vars(cls).get("Config")
        if config is not None and "attack_name" not in vars(config):
            config.attack_name = cls.name

    def output_revision(self) -> int:
        """The revision of this config's output; the zoo hashes it into the model id when > 0, so a
        fix that changes an attack's output rebuilds exactly the models it affects."""
        return self.revision

    @classmethod
    def needs_linear_head(cls) -> bool:
        """Whether the attack needs the model's separate linear last layer (FTLL, RTLL, RTAL say yes)."""
        return False

    def uses_training_data(self) -> bool:
        """True if the attack trains on a data split (so `data.augment` changes its output)."""
        return isinstance(self.config, AttackTrainingConfig) and self.config.epochs > 0

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def provenance(self) -> str:
        """A readable fragment, e.g. `ftll(epochs=5,lr=0.001)`: the key params plus every non-default one.

        Every field that differs from the Config's default appears, so different configs give different
        provenance strings (the zoo hashes the provenance into the model id).
        """
        return f"{self.name}({format_params(self.config, self.provenance_keys)})"

    def apply(self, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        """Run the attack on a copy of `source`."""
        victim = copy.deepcopy(source).cpu()
        return self._attack(victim, source, ctx)

    @abstractmethod
    def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        """Modify `model` (a private copy of `source`) and return it; query `source` only read-only."""


# Short names of nested fields in provenance strings; other nested fields keep their dotted path.
PROVENANCE_ALIASES = {"optimizer.lr": "lr", "optimizer.name": "optimizer", "schedule.name": "schedule"}


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf fields of a (nested) config dataclass by dotted name; free-form dicts stay one value."""
    flat: dict[str, Any] = {}
    for item in fields(config):
        value = getattr(config, item.name)
        if is_dataclass(value):
            flat.update(_flatten(value, f"{prefix}{item.name}."))
        else:
            flat[f"{prefix}{item.name}"] = value
    return flat


def _format_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_format_value(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    return str(value)


def format_params(config: Any, keys: tuple[str, ...] = (), only: tuple[str, ...] | None = None,
                  exclude: tuple[str, ...] = ()) -> str:
    """`k=v,...` for the flattened fields named in `keys`, then every other field that differs from
    the default of `type(config)`, in field order; `only`/`exclude` restrict the fields shown."""
    values = _flatten(config)
    defaults = _flatten(type(config)())
    names = [k for k in values if (only is None or k in only) and k not in exclude]
    shown = [k for k in keys if k in names]
    shown += [k for k in names if k not in shown and values[k] != defaults.get(k)]
    return ",".join(f"{PROVENANCE_ALIASES.get(k, k)}={_format_value(values[k])}" for k in shown)


def train_attacked(model: nn.Module, source: nn.Module, ctx: AttackContext, cfg: AttackTrainingConfig, *,
                   trainable: str = "all", labels: str | None = None, limit: int | None = None,
                   soft_temperature: float | None = None, adversarial: PGDConfig | None = None) -> tuple[float, int]:
    """Train `model` with `ClassifierModule` on `cfg.split` as `cfg` says; returns (seconds, samples).

    `labels` overrides `cfg.labels`; `soft_temperature` trains on the source's softened probabilities.
    Every parameter is trainable again afterwards, so a chained attack starts from a plain model.
    """
    from bench.training import ClassifierModule  # optional: heavy (Lightning training loop)

    for param in model.parameters():
        param.requires_grad_(True)
    model.train()  # the copied source is in eval mode and Lightning 2.x does not switch modes on fit
    loader = attack_loader(ctx, source, cfg.split, labels or cfg.labels, cfg.batch_size, cfg.seed,
                           limit=limit, soft_temperature=soft_temperature)
    module = ClassifierModule(model, cfg.optimizer, cfg.schedule, cfg.epochs, trainable=trainable,
                              temperature=soft_temperature or 1.0, adversarial=adversarial)
    seconds = ctx.fit(module, loader, cfg.seed)
    for param in model.parameters():
        param.requires_grad_(True)
    model.cpu().eval()
    return seconds, len(loader.dataset)  # type: ignore[arg-type]


@torch.no_grad()
def source_outputs(source: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Source logits on `x` (eval mode; every submodule's mode restored)."""
    device = next(source.parameters()).device
    with eval_mode(source):
        return torch.cat([source(xb.to(device)).float().cpu() for xb in x.split(batch_size)])


def attack_loader(ctx: AttackContext, source: nn.Module, split: str, labels: str, batch_size: int, seed: int,
                  limit: int | None = None, soft_temperature: float | None = None) -> DataLoader:
    """A shuffled loader over the first `limit` samples of `split` with ground-truth labels, the
    source's hard labels, or its temperature-softened probabilities (`soft_temperature`).

    Training images follow the recipe: with `data.augment` on they come from the datamodule's
    augmenting training dataset (fresh crops every epoch), as the source's did. The source labels
    its samples once, on the clean images (one query per sample), like an attacker labelling a
    dataset; each augmented view keeps its clean sample's label.
    """
    check_choice("split", split, ATTACK_SPLITS)
    check_choice("labels", labels, LABEL_SOURCES)
    x, y = ctx.datamodule.tensors(split, limit)
    if labels == "source" or soft_temperature is not None:
        logits = source_outputs(source, x)
        y = (logits / soft_temperature).softmax(dim=1) if soft_temperature is not None else logits.argmax(dim=1)
    if augments(ctx.datamodule):
        dataset: Dataset = RelabelledDataset(ctx.datamodule.dataset(split, train=True), y)
    else:  # un-augmented: the materialised tensors themselves
        dataset = TensorDataset(x, y)
    generator = seeded_generator(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator, drop_last=False,
                      collate_fn=collate_batch)


def augments(datamodule: Any) -> bool:
    """True if the datamodule's recipe asks for augmented training batches (`data.augment`)."""
    return bool(getattr(getattr(datamodule, "cfg", None), "augment", False))


class RelabelledDataset(Dataset):
    """The first `len(targets)` items of `base` (in split order) with their labels replaced by `targets`.

    Whole batches are fetched through `base.__getitems__` when it has one (vectorised augmentation).

    Args:
        base: a split's dataset, e.g. `datamodule.dataset(split, train=True)`.
        targets: one label (int64) or probability row (float) per item, in split order.
    """

    def __init__(self, base: Dataset, targets: torch.Tensor) -> None:
        if len(targets) > len(base):  # type: ignore[arg-type]
            raise ValueError(f"{len(targets)} targets for a dataset of {len(base)} items.")  # type: ignore[arg-type]
        self.base, self.targets = base, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitems__(self, items: list[int]) -> FetchedBatch | list[tuple[torch.Tensor, torch.Tensor]]:
        fetch = getattr(self.base, "__getitems__", None)
        samples = fetch(list(items)) if fetch is not None else [self.base[i] for i in items]
        if isinstance(samples, FetchedBatch):  # stacked: relabel the whole batch at once
            return FetchedBatch(samples.x, self.targets[torch.as_tensor(items, dtype=torch.long)])
        return [(x, self.targets[i]) for (x, _), i in zip(samples, items)]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= item < len(self):
            raise IndexError(f"index {item} out of range for {len(self)} items")
        return self.__getitems__([item % len(self)])[0]


ATTACKS: Registry[type[RemovalAttack]] = Registry("attack", name_attr="name")
