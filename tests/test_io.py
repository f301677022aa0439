"""bench.io: atomic writes leave no temporary files and honour the user's umask (not tempfile's 0600)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.io import atomic_save_tensors, atomic_write_json, atomic_write_text


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that sets it."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _write_all(folder: Path) -> list[Path]:
    text, data, tensors = folder / "a.txt", folder / "sub" / "b.json", folder / "c.safetensors"
    atomic_write_text(text, "hello\n")
    atomic_write_json(data, {"b": 1, "a": [1, 2]})
    atomic_save_tensors(tensors, {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, metadata={"k": "v"})
    return [text, data, tensors]


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: None, mask: int, mode: int) -> None:
    os.umask(mask)
    for path in _write_all(tmp_path):
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path.name, oct(path.stat().st_mode))


def test_overwrite_keeps_umask_mode_and_content(tmp_path: Path, umask: None) -> None:
    os.umask(0o022)
    paths = _write_all(tmp_path)
    paths = _write_all(tmp_path)  # replacing an existing file goes through a fresh temporary file too
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [0o644] * 3
    assert paths[0].read_text() == "hello\n"
    assert json.loads(paths[1].read_text()) == {"a": [1, 2], "b": 1}
    assert load_file(paths[2])["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_leaderboard_is_readable_by_others(tmp_path: Path, umask: None) -> None:
    from bench.report import write_leaderboard

    os.umask(0o022)
    md, csv = write_leaderboard(tmp_path)
    assert stat.S_IMODE(md.stat().st_mode) == 0o644 and stat.S_IMODE(csv.stat().st_mode) == 0o644
