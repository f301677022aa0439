"""The verified tar archives fpbench shares: zoos (`bench.zoo.archive`) and fingerprints (`bench.fingerprint_archive`).

One layout for both (docs/sharing.md): an uncompressed POSIX tar whose first member `archive.json` (the
index) names its format and version and records the sha256 and size of every other member. Writing
is deterministic (fixed owner, mode and time, members in the order given) and atomic (a temp file
beside the target, fsynced, then renamed). Reading treats the archive as hostile until verified:
every header is checked (plain files with safe relative names only, at most `max_depth` name parts)
before a byte is written, the index must list exactly the members with their sizes, the total must
fit the free disk, and each member is hashed while fpbench itself writes it (`O_EXCL | O_NOFOLLOW`)
into a staging folder. What the members mean (a manifest, a fingerprint's own hashes) is checked by
the caller, after this module has verified the bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import DISTRIBUTION
from bench.errors import ConfigError
from bench.io import is_temp_name, name_problem, sha256_file

INDEX = "archive.json"
INDEX_MAX_BYTES = 64 << 20  # a million files' hashes fit
MAX_MEMBERS = 1_000_000
NOT_CONTENT = (".lock",)  # a store's lock file: never exported, ignored when comparing folders
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BLOCK = 1 << 20


class ArchiveError(ConfigError):
    """An archive, its URI or the folder it would replace is not acceptable (bad input: exit 2)."""


@dataclass(frozen=True)
class ArchiveFormat:
    """What one kind of archive is called, how deep its member names go, and which command writes it."""

    name: str  # archive.json's "format", e.g. "fpbench-zoo-archive"
    version: int  # archive.json's "format_version"; a reader refuses any other
    max_depth: int  # name parts a member may have: 2 allows `models/<file>`
    writer: str  # the command that writes it, named in refusals: "`fpbench zoo export`"


def fpbench_version() -> str:
    """The installed fpbench's version ("unknown" from a checkout that was never installed)."""
    from importlib import metadata  # optional: only an archive's index needs it

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def hashed_files(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """`{member name: {"sha256", "size"}}` of the files `paths` names: an index's "files"."""
    return {rel: {"sha256": sha256_file(path), "size": path.stat().st_size} for rel, path in paths.items()}


# -- write ---------------------------------------------------------------------------------------
def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)  # fixed owner, mode and time: the same content gives the same archive bytes
    info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0o644, 0, 0, 0, "", ""
    return info


def write_tar(target: Path, index: dict[str, Any], paths: dict[str, Path]) -> None:
    """`archive.json` (`index`) first, then each file of `paths` (member name -> file) in order.

    Written to a temp file beside `target`, fsynced, then renamed: never a half archive under the final name.
    `index["files"]` must hold each member's size (`hashed_files`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    try:
        with open(tmp, "xb") as handle:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_tarinfo(INDEX, len(data)), io.BytesIO(data))
                for rel, path in paths.items():
                    with open(path, "rb") as src:
                        tar.addfile(_tarinfo(rel, index["files"][rel]["size"]), src)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- read ----------------------------------------------------------------------------------------
def _open_tar(path: Path, uri: str, fmt: ArchiveFormat) -> tarfile.TarFile:
    with open(path, "rb") as handle:
        gz = handle.read(2) == b"\x1f\x8b"
    try:
        return tarfile.open(path, mode="r:gz" if gz else "r:")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArchiveError(f"{uri}: not a tar archive ({err}); {fmt.writer} writes one.") from None


def _member_problem(member: tarfile.TarInfo, max_depth: int) -> str | None:
    """Why `member` cannot be extracted, or None: plain files with safe relative names only."""
    if member.issym() or member.islnk():
        return f"is a link (-> {member.linkname!r})"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse is not None:
        return "is not a plain file (a folder, device, FIFO or sparse file)"
    parts = member.name.split("/")
    if member.name.startswith("/") or "\\" in member.name or len(parts) > max_depth or any(name_problem(p) for p in parts):
        return "is not a safe relative name (no absolute path, '..', hidden or too deeply nested names)"
    return None


def verify_extract(archive: Path, staged: Path, uri: str, fmt: ArchiveFormat,
                   check_index: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Check every header, read and check the index, then extract every member into `staged` while hashing it.

    Args:
        archive: the local archive file (`bench.zoo.archive_fetch.fetch`).
        staged: a folder that does not exist yet, on the file system of the final destination.
        uri: what the user named, for messages.
        fmt: the expected format.
        check_index: the caller's checks of its own index fields, run before anything is extracted.

    Returns:
        The index (`archive.json`).

    Raises:
        ArchiveError: any member that is not a plain file with a safe name, an index of another format, members
            and index that disagree, not enough disk, a member whose sha256 or size differs from the index.
    """
    with _open_tar(archive, uri, fmt) as tar:
        members: list[tarfile.TarInfo] = []
        for member in tar:
            if len(members) == MAX_MEMBERS:
                raise ArchiveError(f"{uri}: over {MAX_MEMBERS:,} members; not an archive {fmt.writer} wrote.")
            if (problem := _member_problem(member, fmt.max_depth)) is not None:
                raise ArchiveError(f"{uri}: member {member.name!r} {problem}. Refused before extracting anything: an "
                                   f"archive holds plain files only. Ask its publisher for the archive {fmt.writer} wrote.")
            members.append(member)
        index = _read_index(tar, members, uri, fmt)
        if check_index is not None:
            check_index(index)
        need, free = sum(m.size for m in members), shutil.disk_usage(staged.parent).free
        if need > free:
            raise ArchiveError(f"{uri}: {need:,} bytes to extract, {free:,} free under {staged.parent.parent}. Free "
                               "disk space or pull onto a larger disk.")
        staged.mkdir()
        for member in members[1:]:
            _extract(tar, member, staged / member.name, index["files"][member.name], uri)
    return index


def _read_index(tar: tarfile.TarFile, members: list[tarfile.TarInfo], uri: str, fmt: ArchiveFormat) -> dict[str, Any]:
    if not members or members[0].name != INDEX or members[0].size > INDEX_MAX_BYTES:
        raise ArchiveError(f"{uri}: the first member must be {INDEX} (at most {INDEX_MAX_BYTES:,} bytes); "
                           f"not an archive {fmt.writer} wrote.")
    try:
        index = json.loads(tar.extractfile(members[0]).read().decode("utf-8"))  # type: ignore[union-attr]
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchiveError(f"{uri}: {INDEX} is not JSON ({err}).") from None
    if not isinstance(index, dict) or index.get("format") != fmt.name or index.get("format_version") != fmt.version:
        found = (index.get("format"), index.get("format_version")) if isinstance(index, dict) else type(index).__name__
        raise ArchiveError(f"{uri}: {INDEX} is not format {fmt.name} version {fmt.version} (found {found}); an "
                           "archive of a newer fpbench needs that version (pip install -U fpbench).")
    files = index.get("files")
    if not isinstance(files, dict):
        raise ArchiveError(f"{uri}: {INDEX} lacks a valid 'files' entry.")
    for rel, entry in files.items():
        if not (isinstance(entry, dict) and _HEX64.fullmatch(str(entry.get("sha256"))) and type(entry.get("size")) is int):
            raise ArchiveError(f"{uri}: {INDEX}: the entry of {rel!r} needs a 64-hex 'sha256' and an integer 'size'.")
    names = [m.name for m in members[1:]]
    extra, missing = sorted(set(names) - set(files)), sorted(set(files) - set(names))
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if extra or missing or dupes or INDEX in names:
        raise ArchiveError(f"{uri}: members and {INDEX} disagree: not listed {extra[:5]}, listed but absent "
                           f"{missing[:5]}, repeated {dupes[:5]}. Refused before extracting anything.")
    for member in members[1:]:
        if member.size != files[member.name]["size"]:
            raise ArchiveError(f"{uri}: {member.name} is {member.size:,} bytes, {INDEX} says {files[member.name]['size']:,}.")
    return index


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, expected: dict[str, Any], uri: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, got = hashlib.sha256(), 0
    source = tar.extractfile(member)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with os.fdopen(fd, "wb") as out, source:  # type: ignore[union-attr]
        for block in iter(lambda: source.read(_BLOCK), b""):
            digest.update(block)
            got += len(block)
            out.write(block)
    if digest.hexdigest() != expected["sha256"] or got != expected["size"]:
        raise ArchiveError(f"{uri}: {member.name} has sha256 {digest.hexdigest()} ({got:,} bytes), {INDEX} expects "
                           f"{expected['sha256']} ({expected['size']:,} bytes): the archive is corrupted or was "
                           "tampered with. Nothing was installed; download it again or ask its publisher.")


def same_tree(final: Path, files: dict[str, dict[str, Any]]) -> bool:
    """True when `final` holds exactly `files` (names relative to it) with their sha256 (lock and temp files aside)."""
    found: dict[str, Path] = {}
    for folder, dirs, names in os.walk(final):
        for entry in (*dirs, *names):
            if (Path(folder) / entry).is_symlink():
                return False
        for entry in names:
            if entry not in NOT_CONTENT and not is_temp_name(entry):
                found[os.path.relpath(Path(folder) / entry, final).replace(os.sep, "/")] = Path(folder) / entry
    return set(found) == set(files) and all(sha256_file(p) == files[rel]["sha256"] for rel, p in found.items())
