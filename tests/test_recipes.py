"""Every recipe in `recipes/` and every sweep in `recipes/sweeps/` loads, validates and plans its zoo.

Planning only: no data is read or downloaded and nothing is trained. The planner takes the data's
split hashes as an argument (`plan_zoo(cfg, split_hashes, pool_specs)`; `build_zoo` passes the
datamodule's), so fake hashes stand in for them. Each recipe and sweep is also broken on purpose,
in a copy of `recipes/`, to show that the same check fails: a misspelt key (caught by loading) and
two identical zoo models (caught only by planning).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bench.config import ConfigError, load_recipe
from bench.evaluate import method_pool_specs
from bench.sweep import load_sweep, point_overrides
from bench.zoo.plan import plan_zoo
from bench.zoo.plan_base import ZooPlan
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
SWEEPS = sorted((REPO / "recipes" / "sweeps").glob("*.yaml"))
FAKE_SPLIT_HASHES = {split: f"{split}-0000" for split in ("owner", "attacker", "independent", "test")}
DUPLICATE_NEGATIVES = "zoo.negatives=[{kind: SAST, seed: 7}, {kind: SAST, seed: 7}]"  # one model, twice
# Fragments, included by other recipes, leave required keys to them: given here as the includer would.
FRAGMENTS = {"paper_zoo.yaml": ["zoo.name=paper_zoo"]}


def plan_recipe(path: Path, overrides: list[str] | None = None) -> ZooPlan:
    """Load and validate the recipe, then plan its zoo with the pools its methods ask for."""
    cfg = load_recipe(path, [*FRAGMENTS.get(path.name, []), *(overrides or [])])
    plan = plan_zoo(cfg, FAKE_SPLIT_HASHES, method_pool_specs(cfg))
    assert len(plan.by_role("source")) == 1, path
    assert plan.by_role("positive") and plan.by_role("negative"), f"{path.name} plans no suspects"
    return plan


def plan_sweep(path: Path) -> int:
    """Load the sweep (which validates every point's recipe for every trial) and plan every point's zoo.

    Trials differ only in seeds; with `trial_zoo_seed` the last trial's zoo is planned too.
    Returns how many zoos were planned.
    """
    spec = load_sweep(path)
    trials = sorted({0, spec.trials - 1}) if spec.trial_zoo_seed else [0]
    for point in spec.points():
        for trial in trials:
            plan_recipe(spec.recipe, point_overrides(spec, point, trial))
    return len(spec.points()) * len(trials)


def test_there_are_recipes_and_sweeps():
    names = {p.name for p in RECIPES}
    assert {"smoke.yaml", "quickstart.yaml", "cifar10.yaml", "cifar100.yaml", "imagenet.yaml", "paper_zoo.yaml"} <= names
    assert len(SWEEPS) >= 4


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_plans(path):
    plan = plan_recipe(path)
    assert plan.split_hashes == FAKE_SPLIT_HASHES
    assert len({job.model_id for job in plan.jobs}) == len(plan.jobs)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_loads_and_plans_every_point(path):
    assert plan_sweep(path) >= 1


@pytest.fixture
def recipes_copy(tmp_path) -> Path:
    """A private copy of `recipes/` (includes and sweep paths are relative) to break on purpose."""
    return Path(shutil.copytree(REPO / "recipes", tmp_path / "recipes"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_broken_recipe_fails(recipes_copy, path):
    copy = recipes_copy / path.name
    plan_recipe(copy)  # the copy itself is fine
    with pytest.raises(ConfigError, match="same model"):  # loading accepts it: only planning finds the twins
        plan_recipe(copy, [DUPLICATE_NEGATIVES])
    copy.write_text(path.read_text() + "\nzooo: {name: typo}\n")
    with pytest.raises(ConfigError, match="zooo"):
        plan_recipe(copy)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
@pytest.mark.parametrize("breakage", ["misspelt_parameter", "duplicate_model"])
def test_a_broken_sweep_fails(recipes_copy, path, breakage):
    broken = recipes_copy / "sweeps" / path.name
    raw = yaml.safe_load(broken.read_text())
    if breakage == "misspelt_parameter":
        raw["parameters"]["zoo.source.epochz"] = [1, 2]
        match = "epochz"
    else:  # loading accepts it: only planning the zoo finds the two identical models
        raw["overrides"] = [*raw.get("overrides", []), DUPLICATE_NEGATIVES]
        match = "same model"
    broken.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=match):
        plan_sweep(broken)


def test_the_threat_recipe_plans_its_negatives_and_grids():
    """recipes/fmnist_threat.yaml (issue #27 items 1 and 2): >= 300 distinct negatives over >= 3 archs with
    overlap fractions, and every family's strength grid at >= 2 seeds a point (docs/threat_models.md)."""
    plan = plan_recipe(REPO / "recipes" / "fmnist_threat.yaml")
    negatives = plan.by_role("negative")
    assert len({job.model_id for job in negatives}) == len(negatives) >= 300
    assert {job.arch for job in negatives} >= {"convnet", "lenet", "mlp"}
    assert {job.kind for job in negatives} >= {"SAST", "SADT", "DAST", "DADT"}
    assert {job.overlap for job in negatives} == {None, 0.1, 0.25, 0.5}
    assert {job.arch for job in negatives if job.overlap is not None} == {"convnet", "lenet", "mlp"}

    steps = [job.spec["chain"] for job in plan.by_role("positive")]
    assert all(len(chain) == 1 for chain in steps)
    steps = [(chain[0]["attack"], chain[0]["params"]) for chain in steps]

    def grid(attack: str, key: str, **where) -> set:
        """The values of `key` among the positives of `attack` whose params match `where` (defaults filled)."""
        return {params.get(key) for name, params in steps
                if name == attack and all(params.get(k, "attacker" if k == "query_data" else None) == v
                                          for k, v in where.items())}

    for attack in ("ftll", "ftal", "rtll", "rtal"):
        assert len(grid(attack, "epochs")) >= 3
    assert len(grid("prune", "rate")) >= 5 and max(grid("prune", "rate")) == 0.95
    assert len(grid("adv_train", "eps")) >= 5 and min(grid("adv_train", "eps")) == 0.001
    for arch in (None, "lenet"):  # the source's architecture and another
        for labels in ("hard", "soft"):
            assert len(grid("extract", "query_budget", arch=arch, labels_kind=labels, query_data="attacker")) >= 3
    assert grid("extract", "query_data") == {None, "transformed", "synthetic"}  # None: the attacker split
    assert len(grid("quantize", "dtype")) == 2 and len(grid("ftsmooth", "smoothing")) >= 2
    seeds: dict[str, set[int]] = {}  # every trained point at >= 2 seeds (quantize is deterministic)
    for name, params in steps:
        point = repr(sorted((k, v) for k, v in params.items() if k != "seed"))
        seeds.setdefault(name + point, set()).add(params["seed"])
    assert all(len(s) >= 2 for point, s in seeds.items() if not point.startswith("quantize"))
