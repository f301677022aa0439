"""Atomic file writes and content hashes: nothing half-written is ever visible to a reader.

Files come out with the permissions the user's umask gives (0o644 under umask 022), as plain ``open()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
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
        name = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"  # see `is_temp_name`
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


def atomic_save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
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


# -- names that become path components -------------------------------------------------------
SAFE_NAME_RULE = "letters, digits and . _ -, starting with a letter, digit or _, at most 100 characters"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._\-]{0,99}")  # a leading '-' would read as a CLI option


def name_problem(value: Any) -> str | None:
    """Why ``value`` cannot be one path component (a zoo, sweep or label name), or None if it can.

    The rule is :data:`SAFE_NAME_RULE`: no separators, no ``..``, no hidden or absolute names, and no
    leading ``-`` (a name like ``-x`` would be taken for an option where it is passed on a command line).
    """
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not _SAFE_NAME.fullmatch(value):
        return f"must be {SAFE_NAME_RULE}"
    return None


def inside(root: str | os.PathLike, *parts: str | os.PathLike) -> Path:
    """``root / parts...``, refused unless it stays inside ``root``.

    The check is lexical (``..`` and absolute parts are normalised, links are not followed), so a
    zoo folder the user symlinked to another disk still works.

    Raises:
        ValueError: naming the parts and the root, when the joined path escapes ``root``.
    """
    base = Path(root)
    path = base.joinpath(*parts)
    real_root, real = os.path.abspath(base), os.path.abspath(path)
    if real == real_root and parts or os.path.commonpath([real_root, real]) != real_root:
        shown = "/".join(str(p) for p in parts)
        raise ValueError(f"Path '{shown}' escapes its folder {base}: names must be {SAFE_NAME_RULE}.")
    return path


# -- bounded reads of files named by data or found in folders ----------------------------------
class FileReadError(ValueError):
    """A file that is not a regular file or is over its size bound (the message starts with the path)."""


def read_bytes_bounded(path: str | os.PathLike, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, read without trusting what ``path`` is.

    Links are followed; the target must be a regular file: a device (``/dev/zero`` never ends), a
    pipe (opening it would block) or a socket is refused before it is opened. The size is checked
    before reading, then at most ``max_bytes + 1`` bytes are read, so a file growing meanwhile is
    refused too. The descriptor is re-checked after opening, in case the path was swapped.

    Args:
        path: The file.
        max_bytes: The largest size accepted, in bytes.
        what: What the file should be (e.g. ``"result file"``), named in errors.

    Raises:
        FileReadError: naming the file, when it is not a regular file or is larger than ``max_bytes``.
        OSError: when the file is missing or cannot be read.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise FileReadError(f"{path}: not a regular file (a device, pipe, socket or a link to one), so not a {what}; "
                            f"replace it with the {what} itself or delete it.")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # never blocks on a pipe swapped in
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileReadError(f"{path}: not a regular file, so not a {what}; replace it with the {what} itself.")
        if info.st_size > max_bytes:
            raise FileReadError(_too_large(path, f"{info.st_size:,} bytes", max_bytes, what))
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileReadError(_too_large(path, f"more than {max_bytes:,} bytes (it grew while being read)", max_bytes, what))
    return data


def _too_large(path: str | os.PathLike, size: str, max_bytes: int, what: str) -> str:
    return (f"{path}: {size}, over the {max_bytes:,}-byte bound of a {what}, so not one; check where it came "
            "from, or delete it.")


# -- temporary files of the atomic writes -----------------------------------------------------
_TEMP_NAME = re.compile(r"\.(.+)\.[0-9a-f]{12}\.tmp")  # what `_temp_path` creates; the group: the target's name
STALE_TEMP_S = 600.0  # a temp file unmodified this long has no live writer (a write renames within seconds)


def is_temp_name(name: str) -> bool:
    """True for a file name of the form ``_temp_path`` gives: ``.<target>.<12 hex>.tmp``."""
    return _TEMP_NAME.fullmatch(name) is not None


def temp_target(name: str) -> str | None:
    """The name of the file an atomic-write temp stands for (``.manifest.jsonl.0123456789ab.tmp`` ->
    ``manifest.jsonl``), or None when ``name`` is not such a temp."""
    found = _TEMP_NAME.fullmatch(name)
    return found.group(1) if found else None


def temp_files(folder: str | os.PathLike, modified_before: float | None = None) -> list[Path]:
    """Regular files directly in ``folder`` named like atomic-write temps, sorted.

    Links and other names are never listed. For a folder whose every writer holds a lock the caller
    holds too, all of them are left over by killed writers; elsewhere use :func:`stale_temp_files`.

    Args:
        folder: The folder (a missing one lists nothing).
        modified_before: Epoch seconds: only files last modified before then (None: all).
    """
    found: list[Path] = []
    if not os.path.isdir(folder):
        return found
    with os.scandir(Path(folder)) as entries:
        for entry in entries:
            if (is_temp_name(entry.name) and entry.is_file(follow_symlinks=False)
                    and (modified_before is None or entry.stat(follow_symlinks=False).st_mtime < modified_before)):
                found.append(Path(entry.path))
    return sorted(found)


def stale_temp_files(folder: str | os.PathLike, before: float) -> list[Path]:
    """Temp files directly in ``folder`` (:func:`temp_files`) last modified before ``before - STALE_TEMP_S``
    (epoch seconds): the rule for a folder written without a lock, where a fresher one may be a live write."""
    return temp_files(folder, before - STALE_TEMP_S)
