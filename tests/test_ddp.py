"""Multi-device jobs: one zoo model trained by 2 CPU processes (DDP over gloo) is recorded once and learns.

DDP runs in a subprocess: `ddp_spawn` from a small script (Lightning spawns the second process and
copies the trained weights back), and `ddp` through the CLI (Lightning re-runs the command line for
rank 1; running `ddp` inside pytest would re-launch pytest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, SMOKE, smoke_overrides

DDP = ["compute.trainer.accelerator=cpu", "compute.trainer.devices=2", "compute.trainer.num_nodes=1",
       "zoo.source.epochs=6", "zoo.negatives=[]"]

SCRIPT = textwrap.dedent("""
    import json, sys
    from bench.config import load_recipe
    from bench.zoo.build import build_zoo

    if __name__ == "__main__":  # spawned ranks import this file as __mp_main__ and must not build
        report = build_zoo(load_recipe(sys.argv[1], sys.argv[2:]), progress=False)
        print("REPORT " + json.dumps({"built": report.built, "failed": report.failed}))
""")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def _check_zoo(root: Path, expected_roles: list[str]) -> None:
    """Every model recorded exactly once, loadable, and accurate (> 80% on digits)."""
    from bench.config import load_recipe
    from bench.training import accuracy
    from bench.zoo import load_model
    from datamodules import build_datamodule

    manifest = root / "zoo" / "smoke" / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    assert sorted(r["role"] for r in lines) == sorted(expected_roles)
    assert len({r["model_id"] for r in lines}) == len(lines)
    cfg = load_recipe(SMOKE, smoke_overrides(root))
    x, y = build_datamodule(cfg.data, cfg.paths.data_dir, cfg.zoo.split_seed).tensors("test")
    for record in lines:
        measured = accuracy(load_model(manifest.parent, record["model_id"]), x, y)
        assert measured == pytest.approx(record["test_acc"], abs=1e-9)
        assert measured > 0.8, f"{record['role']} {record['model_id']}: accuracy {measured:.3f}"


def test_ddp_spawn_trains_one_model_recorded_once(tmp_path: Path) -> None:
    script = tmp_path / "build_ddp.py"
    script.write_text(SCRIPT)
    overrides = smoke_overrides(tmp_path, *DDP, "zoo.positives=[]", "compute.trainer.strategy=ddp_spawn")
    proc = subprocess.run([sys.executable, str(script), str(SMOKE), *overrides], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.split("REPORT ", 1)[1].splitlines()[0])
    assert len(report["built"]) == 1 and not report["failed"]
    _check_zoo(tmp_path, ["source"])


@pytest.mark.slow
def test_ddp_cli_relaunch_builds_source_and_attack_once(tmp_path: Path) -> None:
    """`ddp` re-runs `fpbench zoo` for rank 1: only rank 0 may lock and write the zoo."""
    # methods=[akh]: no defender pools (`fpbench zoo` also builds those the recipe's methods ask for)
    overrides = smoke_overrides(tmp_path, *DDP, "zoo.positives=[{attack: ftal, epochs: 2}]", "methods=[akh]",
                                "compute.trainer.strategy=ddp")
    proc = subprocess.run([sys.executable, "-m", "bench", "-q", "zoo", str(SMOKE), *overrides], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _check_zoo(tmp_path, ["source", "positive"])
