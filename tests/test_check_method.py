"""`fpbench check-method REF` (issue 29): the method contract checks of bench/testing.py, one PASS/FAIL line
each, on the example package's method (a reference on PYTHONPATH) and on `BrokenMethod` below, a method
that breaks two rules; a bad REF or config exits 2 before any model is trained."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.methods import METHODS, Fingerprint, FingerprintMethod, GenerationContext
from bench.oracle import Oracle
from bench.testing import CHECKS, TensorData, World, contract_outcomes
from tests.conftest import REPO

EXAMPLE_SRC = REPO / "docs" / "examples" / "fpbench_example_method" / "src"
BROKEN = "tests.test_check_method:BrokenMethod"


@dataclass
class AgreementConfig:
    n_samples: int = 16  # owner images kept as the fingerprint (= queries per suspect)


class Agreement(FingerprintMethod):
    """Agreement (tests, no paper): label access; score = share of the source's labels a suspect repeats."""

    name = "test_agreement"
    Config = AgreementConfig
    access = "label"

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        x, _ = ctx.owner_data(self.config.n_samples)
        with torch.no_grad():
            labels = source(x).argmax(dim=1)
        return Fingerprint(self.name, {"inputs": x.cpu(), "labels": labels.cpu()}, {"queries_per_suspect": len(x)})

    def _score(self, fp: Fingerprint, suspect: Oracle) -> float:
        return float((suspect.labels(fp.tensors["inputs"]).cpu() == fp.tensors["labels"]).float().mean())


class BrokenMethod(Agreement):
    """Broken (tests, no paper): nudges the source's weights while generating and misstates its query count."""

    name = "test_broken"

    def _generate(self, source: nn.Module, ctx: GenerationContext) -> Fingerprint:
        with torch.no_grad():
            next(source.parameters()).add_(1e-3)  # breaks generate_restores: the source's weights changed
        fp = super()._generate(source, ctx)
        fp.meta["queries_per_suspect"] += 1  # breaks queries_counted: one more query than the oracle counts
        return fp


@pytest.fixture
def forget_references():
    """A reference registers in the process-wide METHODS: take back what a test registered."""
    before = set(METHODS.names())
    yield
    for key in set(METHODS.names()) - before:
        for table in (METHODS._items, METHODS._descriptions, METHODS._origins):
            table.pop(key, None)


def test_the_example_method_passes_every_check_through_the_cli(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLE_SRC), str(REPO)])}
    done = subprocess.run([sys.executable, "-m", "bench", "check-method",
                           "fpbench_example_method.method:ExampleAgreement", "n_samples=20"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["PASS", name] for name in ["generate", *CHECKS]]
    assert lines[-1] == ("fpbench_example_method.method-ExampleAgreement (reference "
                         "fpbench_example_method.method:ExampleAgreement): 7 of 7 checks passed")


def test_a_broken_method_fails_the_rules_it_breaks_and_exits_1(capsys, forget_references):
    assert main(["check-method", BROKEN, "n_samples=12", "-q"]) == 1
    lines = capsys.readouterr().out.splitlines()
    verdicts = {line.split()[1]: line.split()[0] for line in lines[:-1]}
    assert verdicts == {"generate": "PASS", "generate_restores": "FAIL", "score_restores": "PASS",
                        "round_trip": "PASS", "same_seed": "PASS", "source_scores_as_positive": "PASS",
                        "queries_counted": "FAIL"}
    restores = next(line for line in lines if "generate_restores" in line)
    assert "test_broken changed the source or a pool model" in restores
    counted = next(line for line in lines if "queries_counted" in line)
    assert "meta['queries_per_suspect']=13, 12 counted" in counted
    assert lines[-1].endswith("5 of 7 checks passed, 2 failed")


def test_a_method_that_cannot_generate_fails_every_check(forget_references, monkeypatch):
    def explode(self, source, ctx):
        raise RuntimeError("no owner data today")

    monkeypatch.setattr(BrokenMethod, "_generate", explode)
    ctx = GenerationContext(datamodule=TensorData({}), seed=0, device=torch.device("cpu"), num_classes=10,
                            progress=False)
    outcomes = contract_outcomes(BrokenMethod, {"n_samples": 4}, World(ctx, nn.Linear(2, 10), nn.Linear(2, 10)))
    assert outcomes[0].name == "generate" and not outcomes[0].passed
    assert "RuntimeError: no owner data today" in outcomes[0].reason
    assert [o.name for o in outcomes[1:]] == list(CHECKS) and not any(o.passed for o in outcomes)


@pytest.mark.parametrize(("argv", "message"), [
    (["no_such_pkg_xyz.mod:Cls"], "check-method no_such_pkg_xyz.mod:Cls: method 'no_such_pkg_xyz.mod:Cls': cannot "
                                  "import module 'no_such_pkg_xyz.mod': ModuleNotFoundError"),
    (["tests.test_check_method:Missing"], "module 'tests.test_check_method' has no attribute 'Missing'"),
    (["tests.test_check_method:AgreementConfig"], "class AgreementConfig is not a subclass of"),
    (["ak"], "Unknown method 'ak'. Did you mean 'akh'?"),
    ([BROKEN, "n_sample=3"], "Key 'n_sample' not in 'AgreementConfig'"),
    ([BROKEN, "n_samples=many"], "Valid keys: n_samples"),
])
def test_bad_input_exits_2_before_any_training(capsys, forget_references, monkeypatch, argv, message):
    def no_training(*args, **kwargs):
        raise AssertionError("a model was trained for bad input")

    monkeypatch.setattr("bench.testing.small_world", no_training)
    assert main(["check-method", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
