"""Ctrl-C (issue #16 item 13): an interrupt during zoo training exits 130 and says what was kept and how
to resume. Lightning catches the KeyboardInterrupt of a fit itself and calls ``sys.exit(1)``; fpbench
turns it back into the interrupt (`bench.training.fit`) so the CLI's handler runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.training import ClassifierModule
from tests.conftest import REPO, SMOKE, sigint_default, smoke_overrides

# A source and two positives, a negative: four short fits on the 8x8 digits.
TINY = ("zoo.source.epochs=1", "zoo.positives=[{attack: ftal, epochs: 1}, {attack: rtal, epochs: 1}]",
        "zoo.negatives=[{kind: SAST, seed: 1, epochs: 1}]", "methods=[akh]")


def manifest_ids(root: Path) -> list[str]:
    path = root / "zoo" / "smoke" / "manifest.jsonl"
    return [json.loads(line)["model_id"] for line in path.read_text().splitlines()] if path.is_file() else []


def test_ctrl_c_in_a_training_step_exits_130_and_keeps_finished_models(tmp_path, monkeypatch, capsys):
    trained: list[ClassifierModule] = []
    step = ClassifierModule.training_step

    def interrupting_step(self, batch, batch_idx):  # the second model's first step: as if Ctrl-C were pressed
        if self not in trained:
            trained.append(self)
        if len(trained) == 2:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", interrupting_step)
    handler = signal.getsignal(signal.SIGINT)
    argv = ["run", str(SMOKE), *smoke_overrides(tmp_path), *TINY]
    assert main(argv) == 130  # old code: Lightning's sys.exit(1) left main as SystemExit(1)
    err = capsys.readouterr().err
    (source,) = manifest_ids(tmp_path)  # the first fit's model is kept, the interrupted one is not
    assert "fpbench: interrupted." in err
    assert f"kept: 1 finished model(s) in {tmp_path / 'zoo' / 'smoke' / 'manifest.jsonl'} (1 built by this command" in err
    assert "0 result file(s) written" in err
    assert f"rerun the same command: fpbench run {SMOKE}" in err
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning had left SIGINT ignored

    monkeypatch.setattr(ClassifierModule, "training_step", step)
    checkpoint = tmp_path / "zoo" / "smoke" / "models" / f"{source}.safetensors"
    before = checkpoint.stat().st_mtime_ns
    assert main(argv) == 0  # the rerun resumes: builds the rest, keeps the source
    ids = manifest_ids(tmp_path)
    assert ids[0] == source and len(ids) == 4 and checkpoint.stat().st_mtime_ns == before
    assert list((tmp_path / "results" / "runs" / "smoke" / "akh").glob("*.json"))


def test_other_exits_of_a_fit_are_not_taken_for_an_interrupt(tmp_path, monkeypatch):
    """A SystemExit that is not Lightning answering Ctrl-C goes on as it was (no false 130)."""

    def exiting_step(self, batch, batch_idx):
        raise SystemExit(3)

    monkeypatch.setattr(ClassifierModule, "training_step", exiting_step)
    with pytest.raises(SystemExit) as exit_:
        main(["zoo", str(SMOKE), *smoke_overrides(tmp_path), *TINY])
    assert exit_.value.code == 3


@pytest.mark.slow
def test_sigint_to_a_running_fpbench_exits_130(tmp_path):
    """A real SIGINT to `python -m bench run` once the source and the negative are in the manifest
    (the plan builds them first), during the long fit of the positive."""
    overrides = [*smoke_overrides(tmp_path), "zoo.source.epochs=1", "zoo.positives=[{attack: ftal, epochs: 400}]",
                 "zoo.negatives=[{kind: SAST, seed: 1, epochs: 1}]", "methods=[akh]"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(SMOKE), *overrides], cwd=REPO, env=env,
                            preexec_fn=sigint_default,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while len(manifest_ids(tmp_path)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        time.sleep(1.0)  # into the 400-epoch fit
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "fpbench: interrupted." in err and "kept: 2 finished model(s)" in err and "rerun the same command" in err, err[-3000:]
    assert len(manifest_ids(tmp_path)) == 2


# -- an interrupt before `bench.cli.main` runs (issue #24 item 9): `bench.entry` answers it -------------
def console_script() -> list[str]:
    """The `fpbench` console script as pip writes it, from pyproject's `[project.scripts]` entry."""
    scripts = (REPO / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    module, function = re.search(r'^fpbench = "([\w.]+):(\w+)"$', scripts, re.MULTILINE).groups()
    return ["-c", f"import sys\nfrom {module} import {function}\nsys.exit({function}())"]


def test_the_console_script_enters_through_the_light_entry_module():
    assert console_script()[1].startswith("import sys\nfrom bench.entry import main\n")
    assert "from bench.entry import main" in (REPO / "bench" / "__main__.py").read_text()


def interrupted(args: list[str], delay: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=sigint_default,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.parametrize("delay", [0.5, 2.0])
@pytest.mark.parametrize("form", ["python -m bench", "fpbench"])
def test_ctrl_c_while_fpbench_starts_prints_one_line_and_exits_130(tmp_path, form, delay):
    """SIGINT 0.5 s and 2 s into `fpbench run` (torch, Lightning and W&B are still being imported):
    before, a 27-line traceback and exit -2 (or, inside numpy's extension, an ImportError and exit 1)."""
    entry = ["-m", "bench"] if form == "python -m bench" else console_script()
    done = interrupted([*entry, "run", str(SMOKE), *smoke_overrides(tmp_path)], delay)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stderr.startswith("fpbench: interrupted.\n"), done.stderr[-2000:]
    assert len(done.stderr.splitlines()) <= 3, done.stderr  # 3: it reached the command (kept, how to resume)


# The import of bench.cli stalls (as torch's does, for seconds) until SIGINT; then, as `how` says, the
# interrupt goes on, becomes another error (numpy's extension reports an ImportError), or is swallowed.
STALLED_IMPORT = """
import sys, time
from bench.entry import main

class Stall:
    def find_spec(self, name, path=None, target=None):
        if name == "bench.cli":
            print("importing bench.cli", flush=True)
            try:
                time.sleep(120)
            except KeyboardInterrupt:
                if sys.argv[1] == "error":
                    raise ImportError("cannot load module more than once per process") from None
                if sys.argv[1] == "raise":
                    raise
        return None

sys.meta_path.insert(0, Stall())
sys.exit(main(["list", "methods"]))
"""


@pytest.mark.parametrize("how", ["raise", "error", "swallow"])
def test_ctrl_c_during_the_import_of_the_cli_is_one_line_whatever_the_import_makes_of_it(how):
    proc = subprocess.Popen([sys.executable, "-c", STALLED_IMPORT, how], cwd=REPO, stdout=subprocess.PIPE,
                            preexec_fn=sigint_default,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "importing bench.cli\n", proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err) == (130, "fpbench: interrupted.\n")
    assert "akh" not in out  # the command never ran, even where a library swallowed the interrupt
