"""The method contract as plain checks: what `tests/methods/test_contract.py` asserts of every registered
method, runnable by the author of a method in another package (docs/extending.md, "From your own package").

    from bench.testing import check_method
    check_method(MyMethod, MyMethod.Config(n_samples=20))   # raises AssertionError naming the broken rule

`check_method` trains a tiny world on scikit-learn's 8x8 digits (a convnet source, an independent
convnet, and two surrogates and two references when the method asks for pools), then runs every check:
modes, weights and the caller's RNG untouched, a saved fingerprint reloads and scores the same, the
same seed gives the same fingerprint, the source scores at least as high as the independent model, and
the oracle counted every query. Give it a small config: the checks generate the fingerprint twice.
`contract_outcomes` runs every check even past a failure, one outcome each: `fpbench check-method REF`.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from bench.methods import METHODS, Fingerprint, FingerprintMethod, GenerationContext, Pools
from bench.nets import build_model
from bench.oracle import Oracle

TIMING = {"generation_seconds"}  # meta that may differ between two identical generations
OWNER = 1000  # digits: 1,797 images; the rest is the owner's test split


@dataclass
class World:
    """A generation context and the models the checks use (`tests/methods/test_baselines.py` builds a larger one)."""

    ctx: GenerationContext
    source: nn.Module
    independent: nn.Module  # a negative suspect: trained independently, not in the pools


class TensorData:
    """The part of a FingerprintDataModule a method may use: `tensors(split, limit)`."""

    def __init__(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.splits = splits

    def tensors(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.splits[split]
        return (x, y) if limit is None else (x[:limit], y[:limit])


def _fit(arch: str, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 8) -> nn.Module:
    """A digits model: Adam on cross-entropy with seeded shuffling; eval mode, no `.grad` left."""
    model = build_model(arch, in_channels=1, num_classes=10, image_size=8, mean=[0.5], std=[0.5], seed=seed)
    optimiser, order = torch.optim.Adam(model.parameters(), lr=1e-2), torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=order).split(128):
            optimiser.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            optimiser.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def small_world(pools: bool = False) -> World:
    """The digits world: a convnet source, an independent convnet and, with `pools`, two surrogates (trained
    on the source's labels) and two references (on the true labels). A few seconds on one CPU core."""
    from sklearn.datasets import load_digits  # imported here: only this world needs scikit-learn

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(digits.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    (x_owner, y_owner), (x_test, y_test) = (x[perm][:OWNER], y[perm][:OWNER]), (x[perm][OWNER:], y[perm][OWNER:])
    source = _fit("convnet", x_owner, y_owner, seed=0)
    pool = None
    if pools:
        with torch.no_grad():
            labels = source(x_owner).argmax(1)
        pool = Pools(surrogates=[_fit("convnet", x_owner, labels, 11), _fit("lenet", x_owner, labels, 12)],
                     references=[_fit("convnet", x_owner, y_owner, 21), _fit("lenet", x_owner, y_owner, 22)],
                     model_ids=["s0", "s1", "r0", "r1"])
    ctx = GenerationContext(datamodule=TensorData({"owner": (x_owner, y_owner), "test": (x_test, y_test)}), seed=0,
                            device=torch.device("cpu"), num_classes=10, progress=False, pools=pool)
    return World(ctx, source, _fit("convnet", x_owner, y_owner, seed=31))


# -- what the checks do to models --------------------------------------------------------------------
def mixed_modes(model: nn.Module) -> nn.Module:
    """A copy in train mode except its first BatchNorm (frozen, in eval): the case a top-level restore breaks."""
    model = copy.deepcopy(model).train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            break
    return model


def modes(model: nn.Module) -> dict[str, bool]:
    """Every submodule's train flag, by name."""
    return {name: module.training for name, module in model.named_modules()}


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights and buffers."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    """Whether the model's weights and buffers equal `before`."""
    return all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class CountingModel(nn.Module):
    """Counts the rows a suspect is asked about, whichever way they reach it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += int(x.shape[0])
        return self.inner(x)


def oracle_for(method: FingerprintMethod, model: nn.Module, role: str = "negative") -> Oracle:
    """The oracle the loop would hand `method` for a suspect of manifest `role` (the `oracle_label` guard reads it)."""
    return Oracle(model, access=method.access, manifest_role=role if method.name == "oracle_label" else None)


def mixed_world(world: Any) -> tuple[nn.Module, GenerationContext]:
    """Fresh copies of the world's source and pools in mixed modes (train, one BatchNorm frozen in eval)."""
    pools = world.ctx.pools
    if pools is not None:
        pools = Pools(surrogates=[mixed_modes(m) for m in pools.surrogates],
                      references=[mixed_modes(m) for m in pools.references], model_ids=list(pools.model_ids))
    return mixed_modes(world.source), GenerationContext(**{**world.ctx.__dict__, "pools": pools})


# -- the checks -------------------------------------------------------------------------------------
def generate_run(method: FingerprintMethod, world: Any) -> dict[str, Any]:
    """Generate `method`'s fingerprint from mixed-mode copies; record the modes, states and RNG around it.

    Args:
        method: a configured instance.
        world: a `World` (or anything with `ctx`, `source` and `independent`).
    """
    source, ctx = mixed_world(world)
    models = [source, *((ctx.pools.surrogates + ctx.pools.references) if ctx.pools is not None else [])]
    states = [state(m) for m in models]
    before = {"modes": [modes(m) for m in models], "states": states, "rng": torch.get_rng_state()}
    fp = method.generate(source, ctx)
    return {"method": method, "fp": fp, "before": before, "modes_after": [modes(m) for m in models],
            "rng_after": torch.get_rng_state(),
            "same_states": all(same_state(m, s) for m, s in zip(models, states, strict=True))}


def check_generate_restores(run: dict[str, Any]) -> None:
    """`generate` gives every submodule its mode back, changes no weights, leaves the caller's RNG and is timed."""
    name = run["method"].name
    assert run["modes_after"] == run["before"]["modes"], f"{name} changed a model's train/eval modes"
    assert run["same_states"], f"{name} changed the source or a pool model (weights or BatchNorm statistics)"
    assert torch.equal(run["rng_after"], run["before"]["rng"]), f"{name} moved the caller's global RNG"
    assert run["fp"].method == name, f"the fingerprint says method {run['fp'].method!r}, the class says {name!r}"
    assert run["fp"].meta["generation_seconds"] >= 0.0  # timed the same way for every method


def check_score_restores(run: dict[str, Any], world: Any) -> None:
    """Scoring a suspect gives each of its submodules its mode back and changes none of its weights."""
    method, fp = run["method"], run["fp"]
    suspect = mixed_modes(world.independent)
    before_modes, before_state = modes(suspect), state(suspect)
    method.score(fp, oracle_for(method, suspect))
    assert modes(suspect) == before_modes and same_state(suspect, before_state), \
        f"{method.name}.score changed the suspect's modes or weights"


def check_round_trip(run: dict[str, Any], make: Callable[[], FingerprintMethod], world: Any, folder: Path) -> None:
    """A fingerprint saved to `folder` reloads with the same tensors and scores the same with a fresh instance."""
    method, fp = run["method"], run["fp"]
    reloaded = Fingerprint.load(fp.save(folder))
    assert reloaded.method == fp.method and set(reloaded.tensors) == set(fp.tensors)
    assert all(torch.equal(reloaded.tensors[k], v) for k, v in fp.tensors.items()), "a tensor changed when reloaded"
    for model, role in ((world.source, "positive"), (world.independent, "negative")):
        # fresh instances, as the loop builds them from the recipe (the random guard restarts its sequence)
        first = make().score(fp, oracle_for(method, model, role))
        again = make().score(reloaded, oracle_for(method, model, role))
        assert abs(again - first) <= 1e-6, f"{method.name}: the reloaded fingerprint scores {again}, not {first}"


def check_same_seed(run: dict[str, Any], make: Callable[[], FingerprintMethod], world: Any) -> None:
    """The same seed gives the same tensors and metadata (timing aside)."""
    source, ctx = mixed_world(world)
    first, second = run["fp"], make().generate(source, ctx)
    assert set(first.tensors) == set(second.tensors), "two generations with one seed made different tensor names"
    assert all(torch.equal(first.tensors[k], second.tensors[k]) for k in first.tensors), \
        f"{run['method'].name}: two generations with one seed differ (draw only from self.generator(ctx))"
    assert {k: v for k, v in first.meta.items() if k not in TIMING} == \
        {k: v for k, v in second.meta.items() if k not in TIMING}, "two generations with one seed differ in meta"


def check_source_scores_as_positive(run: dict[str, Any], world: Any) -> None:
    """The source scores at least as high as an independent model (in [0, 1] for a suspect-blind guard)."""
    method, fp = run["method"], run["fp"]
    source = method.score(fp, oracle_for(method, world.source, "positive"))
    independent = method.score(fp, oracle_for(method, world.independent, "negative"))
    if not method.recognises_source:
        assert 0.0 <= source <= 1.0 and 0.0 <= independent <= 1.0, (source, independent)
    else:
        assert source >= independent, f"{method.name}: the source scores {source} < independent model {independent}"


def check_queries_counted(run: dict[str, Any], world: Any) -> None:
    """Every row the suspect saw went through the oracle and was counted; `meta["queries_per_suspect"]` is right."""
    method, fp = run["method"], run["fp"]
    suspect = CountingModel(world.independent)
    oracle = oracle_for(method, suspect)
    figures = method.measure(fp, oracle)
    assert "score" in figures
    assert oracle.queries == suspect.seen, f"{method.name} queried the suspect outside the oracle"
    if "queries_per_suspect" in fp.meta:
        assert oracle.queries == fp.meta["queries_per_suspect"] > 0, \
            f"{method.name}: meta['queries_per_suspect']={fp.meta['queries_per_suspect']}, {oracle.queries} counted"
    else:
        assert not method.recognises_source or method.name == "oracle_label", \
            f"{method.name} should record meta['queries_per_suspect']"


# -- running them -----------------------------------------------------------------------------------
Check = Callable[[dict[str, Any], Callable[[], FingerprintMethod], Any, Path], None]
# name -> check(run, make, world, folder), in the order `check_method` runs them; each name is its function's
# name less `check_`, whose docstring says what it asserts (RULES)
CHECKS: dict[str, Check] = {
    "generate_restores": lambda run, make, world, folder: check_generate_restores(run),
    "score_restores": lambda run, make, world, folder: check_score_restores(run, world),
    "round_trip": lambda run, make, world, folder: check_round_trip(run, make, world, folder),
    "same_seed": lambda run, make, world, folder: check_same_seed(run, make, world),
    "source_scores_as_positive": lambda run, make, world, folder: check_source_scores_as_positive(run, world),
    "queries_counted": lambda run, make, world, folder: check_queries_counted(run, world),
}
RULES = {name: " ".join((globals()[f"check_{name}"].__doc__ or "").split()) for name in CHECKS}  # what each asserts


@dataclass(frozen=True)
class CheckOutcome:
    """One contract check of one method: passed, and what it asserts (passed) or why it failed."""

    name: str
    passed: bool
    reason: str


def _method_class(method: type[FingerprintMethod] | str) -> type[FingerprintMethod]:
    return METHODS.get(METHODS.resolve(method)) if isinstance(method, str) else method


def method_config(cls: type[FingerprintMethod], config: Any = None) -> Any:
    """`config` as an instance of `cls.Config`: a mapping of its fields (None: the defaults) is merged and checked.

    Raises:
        ValueError: a key that is not a field, a value of the wrong type or out of range; naming the valid keys.
    """
    if config is not None and not isinstance(config, dict):
        return config
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Config), config or {}))
    except (OmegaConfBaseException, ValueError, TypeError) as err:
        valid = ", ".join(f.name for f in fields(cls.Config))
        raise ValueError(f"method '{cls.name}': config {config} is not valid ({str(err).splitlines()[0]}). Valid "
                         f"keys: {valid}.") from None


def _prepare(method: type[FingerprintMethod] | str, config: Any,
             world: World | None) -> tuple[Callable[[], FingerprintMethod], Any]:
    """A factory of fresh configured instances and the world to check them on (built here when None)."""
    cls = _method_class(method)
    config = method_config(cls, config)

    def make() -> FingerprintMethod:
        return cls(copy.deepcopy(config))

    return make, world if world is not None else small_world(pools=make().pool_spec() is not None)


def check_method(method: type[FingerprintMethod] | str, config: Any = None, world: World | None = None) -> None:
    """Run every contract check on one method; raise AssertionError naming the first broken rule.

    Args:
        method: the class, a registered name or a `package.module:Class` reference.
        config: its Config instance, a mapping of Config fields, or None for the defaults (keep it small).
        world: the models to check on; None: `small_world`, with pools when the method asks for them.
    """
    make, world = _prepare(method, config, world)
    run = generate_run(make(), world)
    with tempfile.TemporaryDirectory() as folder:
        for check in CHECKS.values():
            check(run, make, world, Path(folder) / "fingerprint")


def _why(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if isinstance(err, AssertionError) and text else f"{type(err).__name__}: {text or 'assertion failed'}"


def contract_outcomes(method: type[FingerprintMethod] | str, config: Any = None,
                      world: World | None = None) -> list[CheckOutcome]:
    """Every contract check on one method, each run even when an earlier one fails (`fpbench check-method`).

    The first outcome, `generate`, is the fingerprint's generation; when it fails no other check can run and
    each says so. Arguments as `check_method`'s.

    Raises:
        ValueError: a bad config (before any model is trained).
        bench.registry.RegistryError: an unknown name or a reference that does not import.
    """
    make, world = _prepare(method, config, world)
    try:
        run = generate_run(make(), world)
    except Exception as err:  # whatever the method raises is the outcome to report
        return [CheckOutcome("generate", False, _why(err)),
                *(CheckOutcome(name, False, "not run: no fingerprint was generated") for name in CHECKS)]
    outcomes = [CheckOutcome("generate", True, "the fingerprint generates from the source and the owner's data")]
    with tempfile.TemporaryDirectory() as folder:
        for name, check in CHECKS.items():
            try:
                check(run, make, world, Path(folder) / name)
            except Exception as err:  # an AssertionError names the rule; anything else is a failure too
                outcomes.append(CheckOutcome(name, False, _why(err)))
            else:
                outcomes.append(CheckOutcome(name, True, RULES[name]))
    return outcomes
