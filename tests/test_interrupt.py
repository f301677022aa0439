"""Ctrl-C (issue #16 item 13): an interrupt during zoo training exits 130 and says what was kept and how
to resume. Lightning catches the KeyboardInterrupt of a fit itself and calls ``sys.exit(1)``; fpbench
turns it back into the interrupt (`bench.training.fit`) so the CLI's handler runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.training import ClassifierModule
from tests.conftest import REPO, SMOKE, smoke_overrides

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
