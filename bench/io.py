"""Atomic file writes and content hashes: nothing half-written is ever visible to a reader.

Files come out with the permissions the user's umask gives (0o644 under umask 022), as plain ``open()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save


def _temp_path(target: Path) -> str:
    """Create an empty, uniquely named temporary file beside ``target`` and return its path.

    The file is created with mode 0o666 filtered by the process umask, as ``open()`` would create
    ``target`` itself (0o644 under the usual umask 022). ``tempfile`` would give 0o600, and the
    rename keeps that mode, leaving results unreadable to colleagues and web servers. The kernel
    applies the umask, so it is never read or changed here (``os.umask`` is process-wide, not thread-safe).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        name = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # a name taken by another writer: draw another
            continue
        os.close(fd)
        return str(name)
    raise FileExistsError(f"No free temporary name beside {target} after 100 tries; remove stale .{target.name}.*.tmp files.")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename."""
    target = Path(path)
    tmp = _temp_path(target)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` as UTF-8 (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented, key-sorted JSON (deterministic bytes)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a safetensors file (contiguous CPU copies of `tensors`).

    Serialised in memory and written by :func:`atomic_write_bytes`: ``safetensors``' own ``save_file``
    creates its files with mode 0o600 whatever the umask.
    """
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of the canonical JSON form of `obj` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
