"""A new method, attack and deployment are one new file each (issue #28, item 2): nothing else is edited.

A copy of the `bench` and `datamodules` packages (and `recipes/`, `tests/`) gets one method file in
`bench/methods/`, one attack file in `bench/zoo/attacks/` and one deployment file in `bench/deploy/`, each
carrying its name once and its small test config. In a subprocess on that copy: `python -m bench list`
shows all three, a smoke run with the new method scoring, through the new deployment (`zoo.deploy`), a
positive made by the new attack exits 0, and the contract checks pass on all three
(`bench.testing.check_method` on the method, `bench.deploy.contract.check_deployment` on the wrapper; the
copy's own parametrised attack and deployment contract tests and its test-config check of every method,
selected with `-k`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, smoke_overrides

METHOD_FILE = '''"""Drop-in method (tests/test_drop_in.py), no paper: label access; share of the source's labels repeated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.checks import check_range
from bench.methods.base import METHODS, Fingerprint, FingerprintMethod, GenerationContext
from bench.oracle import Oracle


@dataclass
class DropInAgreeConfig:
    n_samples: int = 64  # owner images kept as the fingerprint
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("n_samples", self.n_samples, 1)


@METHODS.register
class DropInAgree(FingerprintMethod):
    """Drop-in agreement (test only, no paper): label access; score = share of the source's labels repeated."""

    name = "dropin_agree"
    Config = DropInAgreeConfig
    test_config = DropInAgreeConfig(n_samples=20)
    access = "label"

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        x, _ = ctx.owner_data(self.config.n_samples)
        with torch.no_grad():
            labels = source(x).argmax(dim=1)
        return Fingerprint(self.name, {"inputs": x.cpu(), "labels": labels.cpu()}, {"queries_per_suspect": len(x)})

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return float((suspect.labels(fp.tensors["inputs"]).cpu() == fp.tensors["labels"]).float().mean())
'''

ATTACK_FILE = '''"""Drop-in attack (tests/test_drop_in.py), no paper: Gaussian noise on every weight."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.seeding import seeded_generator
from bench.zoo.attacks.base import ATTACKS, AttackContext, AttackOutput, RemovalAttack, check_range


@dataclass
class DropInNoiseConfig:
    sigma: float = 0.01  # std of the noise added to every parameter
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("sigma", self.sigma, 0)


@ATTACKS.register
class DropInNoise(RemovalAttack):
    """Drop-in noise (test only, no paper): Gaussian noise on every weight; no data, no training."""

    name = "dropin_noise"
    Config = DropInNoiseConfig
    test_config = DropInNoiseConfig(sigma=0.005)
    provenance_keys = ("sigma",)

    def _attack(self, model: nn.Module, source: nn.Module, ctx: AttackContext) -> AttackOutput:
        generator = seeded_generator(self.config.seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(self.config.sigma * torch.randn(param.shape, generator=generator))
        return AttackOutput(model.eval(), info={"sigma": self.config.sigma})
'''

DEPLOY_FILE = '''"""Drop-in deployment (tests/test_drop_in.py): every query's pixels moved towards grey."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.checks import check_range
from bench.deploy.base import DEPLOYMENTS, InputTransform


@dataclass
class DropInGreyConfig:
    amount: float = 0.1  # share of the way from each pixel to mid-grey

    def __post_init__(self) -> None:
        check_range("dropin_grey.amount", self.amount, 0, 1)


@DEPLOYMENTS.register
class DropInGrey(InputTransform):
    """Drop-in grey (test only): every pixel moved `amount` of the way to 0.5."""

    name = "dropin_grey"
    Config = DropInGreyConfig
    test_config = DropInGreyConfig(amount=0.3)

    def transform(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return x + float(self.config.amount) * (0.5 - x)
'''

CHECK = '''
from bench.deploy.contract import check_deployment
from bench.testing import check_method
from bench.zoo.attacks import ATTACKS, build_attack

check_method("dropin_agree", None)  # raises AssertionError naming a broken rule
assert ATTACKS.get("dropin_noise").Config.attack_name == "dropin_noise"
try:
    build_attack("dropin_noise", {"sigma": -1.0})
except ValueError as err:
    assert str(err).startswith("attack 'dropin_noise': sigma=-1.0"), err
check_deployment("dropin_grey")  # raises AssertionError naming a broken rule
print("CONTRACT OK")
'''

FAMILIES = ("methods", "attacks", "deployments")
LIST = f'''
from bench.entry import main

for family in {FAMILIES!r}:
    print(f"== {{family}}", flush=True)
    assert main(["list", family]) == 0, family
'''


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages, recipes and tests copied, plus the three new files; nothing else of the copy is edited."""
    root = tmp_path_factory.mktemp("drop_in")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("bench", "datamodules", "recipes", "tests"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")  # the pytest settings and markers
    (root / "bench" / "methods" / "dropin_agree.py").write_text(METHOD_FILE)
    (root / "bench" / "zoo" / "attacks" / "dropin_noise.py").write_text(ATTACK_FILE)
    (root / "bench" / "deploy" / "dropin_grey.py").write_text(DEPLOY_FILE)
    return root


def run_in(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python *args` in the copy, which alone is on the path."""
    env = {**os.environ, "PYTHONPATH": str(root), "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_all_three_are_listed(copy_root: Path) -> None:
    # `fpbench list <family>` for the three families in one process (each start costs seconds)
    out = run_in(copy_root, "-c", LIST).stdout
    methods, attacks, deployments = (out.split(f"== {family}\n")[1].split("== ")[0] for family in FAMILIES)
    assert any(line.split()[:2] == ["dropin_agree", "built-in"] for line in methods.splitlines()), methods
    assert any(line.split()[:2] == ["dropin_noise", "built-in"] for line in attacks.splitlines()), attacks
    assert any(line.split()[:2] == ["dropin_grey", "built-in"] for line in deployments.splitlines()), deployments
    assert "Drop-in agreement (test only" in methods and "Drop-in noise (test only" in attacks
    assert "Drop-in grey (test only): every pixel moved `amount` of the way to 0.5." in deployments


def test_all_three_run_in_a_recipe(copy_root: Path) -> None:
    out = copy_root / "run"
    overrides = smoke_overrides(out, "zoo.name=dropin", "zoo.source.epochs=3", "zoo.negatives=[{kind: SAST, seed: 1}]",
                                "zoo.positives=[{attack: dropin_noise, sigma: 0.005}]", "methods=[dropin_agree]",
                                "zoo.deploy=[{dropin_grey: {amount: 0.2}}]")
    run_in(copy_root, "-m", "bench", "run", "recipes/smoke.yaml", *overrides)
    results = list((out / "results" / "runs" / "dropin" / "dropin_agree").glob("*.json"))
    assert len(results) == 1, results
    result = json.loads(results[0].read_text())
    assert result["method"]["name"] == "dropin_agree"
    positives = [row for row in result["per_model"] if row["role"] == "positive"]
    assert [row["attack"] for row in positives] == ["dropin_noise"], positives
    assert {row["deploy"] for row in result["per_model"]} == {"dropin_grey(amount=0.2)"}, result["per_model"]


def test_all_three_pass_the_contract_checks(copy_root: Path) -> None:
    assert "CONTRACT OK" in run_in(copy_root, "-c", CHECK).stdout
    # the copy's own parametrised tests pick all three up: every attack contract test, the deployment contract
    # and the method's test config (its generation checks are `check_method`'s above; the suite's method world
    # is slower to build)
    tests = run_in(copy_root, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/zoo/test_attacks.py",
                   "tests/test_deploy.py::test_deployment_contract",
                   "tests/methods/test_contract.py::test_every_method_has_a_test_config", "-k", "dropin").stdout
    summary = tests.strip().splitlines()[-1]
    assert summary.startswith("6 passed") and "failed" not in summary and "error" not in summary, tests
