"""`fpbench --help`, `--version`, `list`, `show` and recipe errors import only what they need (issue 29, item 6).

Each command runs through `bench.entry.main` in a fresh interpreter; after each, the wrapper reports
which top-level modules the command added to `sys.modules`. None of Lightning, W&B, timm, matplotlib,
Ray, torchvision or torchmetrics may be among them: those take seconds to import and a command that
only reads the registries or rejects a recipe does not use them. How fast the commands are is
measured by `fpbench perf cli_start`, never asserted here (docs/architecture.md, style rule 10).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("lightning", "pytorch_lightning", "lightning_fabric", "wandb", "timm", "matplotlib", "ray", "torchvision",
         "torchmetrics")
QUICKSTART = "recipes/quickstart.yaml"

# Runs each argv (JSON on stdin) in this one interpreter, one after another, through bench.entry.main and
# prints one JSON line per command: its exit code, its output and the heavy modules present after it.
WRAPPER = """
import contextlib, io, json, sys
heavy = set(sys.argv[1].split(","))
from bench.entry import main
for argv in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if argv[0] == "import":  # the probe: a plain import, to show the check sees one
            __import__(argv[1])
            code = 0
        else:
            code = main(argv)
    loaded = sorted({name.split(".")[0] for name in sys.modules} & heavy)
    print(json.dumps({"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "heavy": loaded}))
"""


def run_in_fresh_interpreter(commands: list[list[str]]) -> list[dict]:
    """Run `commands` one after another in one new interpreter (cwd: the repository); one report each."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, ",".join(HEAVY)], input=json.dumps(commands), cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


# (argv, exit code, text the output must hold): each must answer without the heavy modules.
LIGHT = [
    (["--version"], 0, "fpbench "),
    (["--help"], 0, "usage: fpbench"),
    (["list", "methods"], 0, "adv_tra "),
    (["list", "archs"], 0, "timm:<name>"),
    (["list", "deployments"], 0, "jpeg "),
    (["list", "datamodules"], 0, "digits "),
    # the attack modules import the Lightning training loop only when they train (_ftsmooth_module.py)
    (["list", "attacks"], 0, "ftsmooth "),
    (["check-method", "-h"], 0, "PASS/FAIL"),
    (["show", QUICKSTART], 0, "- name: adv_tra"),
    (["show", QUICKSTART, "methods=[akh]", "methods.akh.n_samples=abc"], 2, "akh.n_samples='abc' has the wrong type"),
    (["show", "recipes/no_such_recipe.yaml"], 2, "Recipe file not found"),
    (["run", QUICKSTART, "zoo.source.epochs=abc"], 2, "zoo.source.epochs"),
    (["run", QUICKSTART, "methods=[adv_trx]"], 2, "Did you mean 'adv_tra'?"),
    (["zoo", QUICKSTART, "zoo.sourc.epochs=3"], 2, "Unknown key 'sourc'"),
    (["zoo", QUICKSTART, "--list", "compute.trainer.precision=17"], 2, "compute.trainer.precision"),
    # bench/sweep.py imports the benchmark, the plots and the tracking only when a sweep runs
    (["sweep", "recipes/sweeps/smoke.yaml", "zoo.sourc.epochs=3"], 2, "Unknown key 'sourc'"),
    # the datamodule checks read its DataSpec, not the Lightning class (datamodules/specs.py)
    (["show", QUICKSTART, "data.name=digts"], 2, "Unknown datamodule 'digts'. Did you mean 'digits'?"),
    (["run", QUICKSTART, "data.splits.owner=100000"], 2, "fashion_mnist's train pool has 60000"),
    (["show", QUICKSTART, "methods=[akh]", "methods.akh.n_samples=100000", "compute.max_sample_memory_gb=0.01"], 2,
     "100,000 images of 1x28x28"),
]


@pytest.fixture(scope="module")
def reports() -> list[dict]:
    """Every LIGHT command, one after another in one fresh interpreter."""
    return run_in_fresh_interpreter([argv for argv, _, _ in LIGHT])


@pytest.mark.parametrize(("index", "argv", "code", "text"), [(i, *case) for i, case in enumerate(LIGHT)],
                         ids=[" ".join(argv) for argv, _, _ in LIGHT])
def test_command_answers_without_heavy_imports(reports: list[dict], index: int, argv: list[str], code: int,
                                               text: str) -> None:
    report = reports[index]
    assert report["argv"] == argv
    assert report["code"] == code, report
    assert text in report["stdout"] + report["stderr"], report
    if code == 2:
        assert report["stderr"].startswith("fpbench: error: "), report["stderr"]
    assert report["heavy"] == [], f"`fpbench {' '.join(argv)}` imported {report['heavy']}"


def test_the_check_sees_a_heavy_import() -> None:
    """A probe that imports matplotlib after `--version`: the wrapper reports it (the check can fail)."""
    version, probe = run_in_fresh_interpreter([["--version"], ["import", "matplotlib"]])
    assert version["heavy"] == [] and probe["heavy"] == ["matplotlib"]


def test_list_prints_every_registered_name(reports: list[dict]) -> None:
    """The fast `list` still lists every method, architecture, deployment, datamodule and attack, with a description."""
    from bench.deploy import DEPLOYMENTS
    from bench.methods import METHODS
    from bench.nets import arch_descriptions
    from bench.zoo.attacks import ATTACKS
    from datamodules import DATAMODULES

    expected = {"methods": METHODS.describe(), "archs": arch_descriptions(), "deployments": DEPLOYMENTS.describe(),
                "datamodules": DATAMODULES.describe(), "attacks": ATTACKS.describe()}
    assert "ftsmooth" in expected["attacks"]
    for (argv, _, _), report in zip(LIGHT, reports, strict=True):
        if argv[0] == "list":
            lines = report["stdout"].splitlines()
            wanted = expected[argv[1]]
            assert [line.split()[0] for line in lines] == list(wanted), argv
            assert all(line.rstrip().endswith(wanted[line.split()[0]]) for line in lines), argv
