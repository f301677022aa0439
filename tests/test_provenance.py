"""bench.provenance: package versions and the git state recorded in every result."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.provenance import collect_versions, git_info


def test_versions_read_from_metadata() -> None:
    versions = collect_versions()
    assert versions["python"] and versions["torch"] and versions["fpbench"]
    assert versions["torch"].split("+")[0] == __import__("torch").__version__.split("+")[0]


def test_git_info_outside_a_checkout(tmp_path: Path) -> None:
    assert git_info(tmp_path / "missing") == {"commit": None, "dirty": None}
    assert git_info(tmp_path) == {"commit": None, "dirty": None}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs a git executable")
def test_git_info_commit_and_dirty_ignores_results(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}\n")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    assert git_info(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "results" / "run.json").write_text('{"a": 1}\n')  # writing results is what runs do
    assert git_info(tmp_path / "results") == {"commit": head, "dirty": False}
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_info(tmp_path) == {"commit": head, "dirty": True}


def test_hardware_names_the_cpu_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import torch

    from bench.provenance import collect_hardware

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    hardware = collect_hardware()
    assert hardware["torch_threads"] == 3
    assert hardware["cpu_count"] == os.cpu_count()
    assert 1 <= hardware["cpus_available"] <= os.cpu_count()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        names = {line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")}
        assert hardware["cpu"] in names
    else:
        assert hardware["cpu"]
    assert hardware["gpus"] == ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                                if torch.cuda.is_available() else [])
