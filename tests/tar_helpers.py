"""Reading and rewriting tar archives in memory, to build the hostile variants the archive tests pull."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

Member = tuple[tarfile.TarInfo, bytes]


def members(path: Path) -> list[Member]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()]


def write(path: Path, items: list[Member]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def rewrite(archive: Path, out: Path, edit: Callable[[list[Member]], list[Member]]) -> Path:
    return write(out, edit(members(archive)))


def flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def rehash(items: list[Member]) -> list[Member]:
    """archive.json rewritten to the members' actual sha256 and size (a tamperer who fixes the index)."""
    index = json.loads(items[0][1])
    for info, data in items[1:]:
        index["files"][info.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return [(items[0][0], json.dumps(index).encode()), *items[1:]]
