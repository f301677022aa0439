"""The command line: exit codes, error messages before any work, listings."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, SMOKE, smoke_overrides


def fpbench(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd or REPO,
                          timeout=300)


def test_unknown_recipe_key_exits_2_and_writes_nothing(tmp_path):
    out = fpbench("zoo", str(SMOKE), *smoke_overrides(tmp_path), "zoo.sourse.epochs=3", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "sourse" in out.stderr and "source" in out.stderr and "negatives" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_method_exits_2_with_suggestion(tmp_path):
    out = fpbench("run", str(SMOKE), *smoke_overrides(tmp_path), "methods=[ipgaurd]", cwd=tmp_path)
    assert out.returncode == 2
    assert "Did you mean 'ipguard'" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_list_families():
    out = fpbench("list", "attacks")
    assert out.returncode == 0
    for name in ("ftll", "ftal", "rtll", "rtal", "prune", "adv_train", "extract", "quantize"):
        assert any(line.startswith(name + " ") for line in out.stdout.splitlines()), name


def test_zoo_list_shows_plan_without_building(tmp_path):
    out = fpbench("zoo", str(SMOKE), *smoke_overrides(tmp_path), "--list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "planned" in out.stdout and "SAST" in out.stdout and "source" in out.stdout
    assert not (tmp_path / "zoo" / "smoke" / "manifest.jsonl").exists()
