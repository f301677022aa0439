"""A new method and a new attack are one new file each (issue #28, item 2): nothing else is edited.

A copy of the `bench` and `datamodules` packages (and `recipes/`, `tests/`) gets one method file in
`bench/methods/` and one attack file in `bench/zoo/attacks/`, each carrying its name once and its small
test config. In a subprocess on that copy: `python -m bench list` shows both, a smoke run with the new
method scoring a positive made by the new attack exits 0, and the contract checks pass on both
(`bench.testing.check_method` on the method; the copy's own parametrised attack contract tests and its
test-config check of every method, selected with `-k`).
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

CHECK = '''
from bench.testing import check_method
from bench.zoo.attacks import ATTACKS, build_attack

check_method("dropin_agree", None)  # raises AssertionError naming a broken rule
assert ATTACKS.get("dropin_noise").Config.attack_name == "dropin_noise"
try:
    build_attack("dropin_noise", {"sigma": -1.0})
except ValueError as err:
    assert str(err).startswith("sigma=-1.0"), err
print("CONTRACT OK")
'''


@pytest.fixture(scope="module")
def copy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages, recipes and tests copied, plus the two new files; nothing else of the copy is edited."""
    root = tmp_path_factory.mktemp("drop_in")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("bench", "datamodules", "recipes", "tests"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")  # the pytest settings and markers
    (root / "bench" / "methods" / "dropin_agree.py").write_text(METHOD_FILE)
    (root / "bench" / "zoo" / "attacks" / "dropin_noise.py").write_text(ATTACK_FILE)
    return root


def run_in(root: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python *args` in the copy, which alone is on the path."""
    env = {**os.environ, "PYTHONPATH": str(root), "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_both_are_listed(copy_root: Path) -> None:
    methods = run_in(copy_root, "-m", "bench", "list", "methods").stdout
    attacks = run_in(copy_root, "-m", "bench", "list", "attacks").stdout
    assert any(line.split()[:2] == ["dropin_agree", "built-in"] for line in methods.splitlines()), methods
    assert any(line.split()[:2] == ["dropin_noise", "built-in"] for line in attacks.splitlines()), attacks
    assert "Drop-in agreement (test only" in methods and "Drop-in noise (test only" in attacks


def test_both_run_in_a_recipe(copy_root: Path) -> None:
    out = copy_root / "run"
    overrides = smoke_overrides(out, "zoo.name=dropin", "zoo.source.epochs=3", "zoo.negatives=[{kind: SAST, seed: 1}]",
                                "zoo.positives=[{attack: dropin_noise, sigma: 0.005}]", "methods=[dropin_agree]")
    run_in(copy_root, "-m", "bench", "run", "recipes/smoke.yaml", *overrides)
    results = list((out / "results" / "runs" / "dropin" / "dropin_agree").glob("*.json"))
    assert len(results) == 1, results
    result = json.loads(results[0].read_text())
    assert result["method"]["name"] == "dropin_agree"
    positives = [row for row in result["per_model"] if row["role"] == "positive"]
    assert [row["attack"] for row in positives] == ["dropin_noise"], positives


def test_both_pass_the_contract_checks(copy_root: Path) -> None:
    assert "CONTRACT OK" in run_in(copy_root, "-c", CHECK).stdout
    # the copy's own parametrised tests pick both up: every attack contract test, and the method's test config
    # (its generation checks are `check_method`'s above; the suite's method world is slower to build)
    tests = run_in(copy_root, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/zoo/test_attacks.py",
                   "tests/methods/test_contract.py::test_every_method_has_a_test_config", "-k", "dropin").stdout
    summary = tests.strip().splitlines()[-1]
    assert summary.startswith("5 passed") and "failed" not in summary and "error" not in summary, tests
