"""Shared zoos: `fpbench zoo export NAME` writes one `.tar`; `fpbench zoo pull URI` verifies and installs one.

The archive (docs/sharing.md) holds `archive.json` first, then `manifest.jsonl`, every model's
`models/<id>.safetensors` and `models/<id>.json`, and `recipe.yaml` when the zoo folder keeps one.
`archive.json` records the sha256 and size of every other member. A pull checks every member's
name and type before a byte is written, hashes each one while writing it into a temporary folder
beside the zoo, checks the manifest against the checkpoints, and only then renames that folder into
place: a refused archive leaves the zoo folder as it was. Nothing is unpickled or loaded.
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
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.io import inside, is_temp_name, name_problem, sha256_file
from bench.zoo.archive_fetch import ArchiveError, fetch
from bench.zoo.store import ZooError, ZooStore

FORMAT, FORMAT_VERSION, INDEX = "fpbench-zoo-archive", 1, "archive.json"
INDEX_MAX_BYTES = 64 << 20  # a million files' hashes fit
MAX_MEMBERS = 1_000_000
RECIPE = "recipe.yaml"  # written into the zoo folder by `fpbench zoo import`
NOT_CONTENT = (".lock",)  # the store's lock file: never exported, ignored when comparing zoos
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BLOCK = 1 << 20


@dataclass
class ArchiveReport:
    """What an export wrote or a pull installed."""

    path: Path  # the archive (export) or the zoo folder (pull)
    size: int  # bytes of the archive
    models: int
    sha256: str  # of the archive file
    manifest_sha256: str
    roles: dict[str, int]
    identical: bool = False  # pull: the zoo was already there with exactly this content


def _fpbench_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fpbench")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- export --------------------------------------------------------------------------------------
def export_zoo(name: str, zoo_dir: str | os.PathLike = "zoo", out: str | os.PathLike | None = None) -> ArchiveReport:
    """Write the built zoo `<zoo_dir>/<name>` as one archive (default `<name>.tar`), atomically.

    Raises:
        ArchiveError: an unknown zoo, a model without its files, a checkpoint whose sha256 differs from
            its record, a file the manifest does not know, an absolute path of this machine in a record.
    """
    if (problem := name_problem(name)) is not None:
        raise ArchiveError(f"zoo name {name!r} {problem}.")
    store = ZooStore(inside(zoo_dir, name))
    if not store.manifest_path.is_file():
        known = sorted(p.parent.name for p in Path(zoo_dir).glob("*/manifest.jsonl"))
        raise ArchiveError(f"No zoo '{name}' under {zoo_dir} (no {store.manifest_path}); zoos there: {known or 'none'}. "
                           "Build it first (fpbench zoo RECIPE) or pass --zoo-dir.")
    target = Path(out) if out is not None else Path(f"{name}.tar")
    if not target.name.endswith(".tar"):
        raise ArchiveError(f"--out {target}: the archive is an uncompressed tar; name it NAME.tar (docs/sharing.md).")
    with store.lock():  # no build writes while the files are hashed and copied
        records = _checked_records(store)
        files = _zoo_files(store, records)
        index = _index(store, name, records, files)
        _write_tar(target, index, store.root, list(files))
    return ArchiveReport(target, target.stat().st_size, len(records), sha256_file(target), index["manifest_sha256"],
                         index["roles"])


def _checked_records(store: ZooStore) -> dict[str, dict[str, Any]]:
    try:
        records = store.records()
    except ZooError as err:
        raise ArchiveError(str(err)) from None
    fix = "Rerun `fpbench zoo RECIPE` to finish the build (it rebuilds what is missing or changed), then export."
    if not any(r["role"] == "source" for r in records.values()):
        raise ArchiveError(f"{store.manifest_path} records no source model: the zoo is not built. {fix}")
    for model_id, record in records.items():
        if (problem := name_problem(model_id)) is not None:
            raise ArchiveError(f"{store.manifest_path}: model id {model_id!r} {problem}.")
        path = store.checkpoint_path(model_id)
        if not path.is_file() or not (store.models_dir / f"{model_id}.json").is_file():
            raise ArchiveError(f"Model {model_id} ({record['provenance']}) is unbuilt: {path} or its .json is missing. {fix}")
        actual = sha256_file(path)
        if actual != record["sha256"]:
            raise ArchiveError(f"{path}: sha256 {actual} but its manifest record says {record['sha256']}: the checkpoint "
                               f"changed after it was built. Restore the file, or delete it and {fix[0].lower()}{fix[1:]}")
    return records


def _zoo_files(store: ZooStore, records: dict[str, dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """Archive name -> (sha256, size) of every file to export; refuses files the manifest does not know."""
    names = ["manifest.jsonl", *([RECIPE] if (store.root / RECIPE).is_file() else [])]
    names += [f"models/{i}{suffix}" for i in records for suffix in (".safetensors", ".json")]
    expected = set(names)
    for folder in (store.root, store.models_dir):
        for entry in os.scandir(folder):
            rel = os.path.relpath(entry.path, store.root).replace(os.sep, "/")
            if rel in expected or rel == "models" or entry.name in NOT_CONTENT or is_temp_name(entry.name):
                continue
            raise ArchiveError(f"{entry.path} is not part of the zoo's manifest (a model of a failed or interrupted "
                               "build?). Rerun `fpbench zoo RECIPE` to finish the build, or move the file away, then export.")
    out = {}
    for rel in names:
        path = store.root / rel
        out[rel] = (sha256_file(path), path.stat().st_size)
    _refuse_local_paths(store, [n for n in names if not n.endswith(".safetensors")])
    return out


def _refuse_local_paths(store: ZooStore, text_files: list[str]) -> None:
    """Refuse to publish a record or recipe that holds an absolute path of this machine (home, cwd, zoo folder)."""
    roots = {os.path.expanduser("~"), os.getcwd(), str(store.root.resolve().parent)}
    roots = {r.rstrip("/") for r in roots if r.count("/") >= 2 or (r.count("/") == 1 and len(r) > 4)}
    for rel in text_files:
        text = (store.root / rel).read_text(encoding="utf-8", errors="replace")
        for root in sorted(roots):
            if root and root in text:
                line = text[:text.index(root)].count("\n") + 1
                fix = ("Edit it to a relative path." if rel == RECIPE else "Give that file by a relative path in "
                       "the recipe and rebuild the model (delete its checkpoint and manifest line, rerun `fpbench zoo RECIPE`).")
                raise ArchiveError(f"{store.root / rel}:{line} holds the absolute path {root} of this machine; a shared "
                                   f"zoo must not. {fix}")


def _index(store: ZooStore, name: str, records: dict[str, dict[str, Any]], files: dict[str, tuple[str, int]]) -> dict[str, Any]:
    source = next(r for r in records.values() if r["role"] == "source")
    recipe = store.root / RECIPE
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "zoo": name, "dataset": source.get("dataset"),
            "split_hashes": source.get("split_hashes"), "models": len(records),
            "roles": dict(sorted(Counter(r["role"] for r in records.values()).items())),
            "manifest_sha256": files["manifest.jsonl"][0],
            "recipe": recipe.read_text(encoding="utf-8") if recipe.is_file() else None,
            "fpbench_version": _fpbench_version(),
            "files": {rel: {"sha256": digest, "size": size} for rel, (digest, size) in sorted(files.items())}}


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)  # fixed owner, mode and time: the same zoo gives the same archive bytes
    info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0o644, 0, 0, 0, "", ""
    return info


def _write_tar(target: Path, index: dict[str, Any], root: Path, names: list[str]) -> None:
    """`archive.json` first, then the files in order; written to a temp file beside `target`, then renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    try:
        with open(tmp, "xb") as handle:
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_tarinfo(INDEX, len(data)), io.BytesIO(data))
                for rel in names:
                    with open(root / rel, "rb") as src:
                        tar.addfile(_tarinfo(rel, index["files"][rel]["size"]), src)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


# -- pull ----------------------------------------------------------------------------------------
def pull_zoo(uri: str, zoo_dir: str | os.PathLike = "zoo", name: str | None = None, progress: bool = True) -> ArchiveReport:
    """Fetch the archive `uri`, verify every member, then install it as `<zoo_dir>/<name>` in one rename.

    Args:
        uri: a path, file://, http(s)://, wandb:// or hf:// URI (`bench.zoo.archive_fetch.SCHEMES`).
        zoo_dir: where zoos live (`paths.zoo_dir`).
        name: the zoo's folder name (default: the name in the archive).
        progress: a progress bar for large downloads.

    Raises:
        ArchiveError: a bad URI or download, any member that is not a plain file with a safe name, a
            sha256 or size that differs from archive.json, a manifest that does not match its
            checkpoints, or an existing different zoo of that name; `<zoo_dir>/<name>` is left untouched.
    """
    if name is not None and (problem := name_problem(name)) is not None:
        raise ArchiveError(f"--name {name!r} {problem}.")
    created = not os.path.isdir(zoo_dir)
    Path(zoo_dir).mkdir(parents=True, exist_ok=True)
    try:
        return _pull(uri, Path(zoo_dir), name, progress)
    except BaseException:
        if created and not any(Path(zoo_dir).iterdir()):
            Path(zoo_dir).rmdir()  # a refused pull leaves no trace, not even the --zoo-dir it made
        raise


def _pull(uri: str, zoo_dir: Path, name: str | None, progress: bool) -> ArchiveReport:
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=zoo_dir) as tmp:  # beside the zoo: the rename is atomic
        archive = fetch(uri, Path(tmp), progress)
        staged = Path(tmp) / "zoo"
        index = _verify_extract(archive, staged, uri)
        name = name or index["zoo"]
        final = inside(zoo_dir, name)
        report = ArchiveReport(final, archive.stat().st_size, index["models"], sha256_file(archive),
                               index["manifest_sha256"], index["roles"])
        if os.path.lexists(final) and not (final.is_dir() and not final.is_symlink() and not any(final.iterdir())):
            if _same_tree(final, index):
                report.identical = True
                return report
            raise ArchiveError(f"{final} already exists with other content than {uri}; it was left as it is. Pull under "
                               f"another name (--name {name}-2) or move that folder away first.")
        os.replace(staged, final)  # an empty folder of that name is replaced; nothing else can be
    return report


def _open_tar(path: Path, uri: str) -> tarfile.TarFile:
    with open(path, "rb") as handle:
        gz = handle.read(2) == b"\x1f\x8b"
    try:
        return tarfile.open(path, mode="r:gz" if gz else "r:")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArchiveError(f"{uri}: not a tar archive ({err}); `fpbench zoo export` writes one.") from None


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why `member` cannot be extracted from a zoo archive, or None: plain files with safe relative names only."""
    if member.issym() or member.islnk():
        return f"is a link (-> {member.linkname!r})"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.sparse is not None:
        return "is not a plain file (a folder, device, FIFO or sparse file)"
    parts = member.name.split("/")
    if member.name.startswith("/") or "\\" in member.name or len(parts) > 2 or any(name_problem(p) for p in parts):
        return "is not a safe relative name (no absolute path, '..', hidden or nested names)"
    return None


def _verify_extract(archive: Path, staged: Path, uri: str) -> dict[str, Any]:
    """Check every header, read archive.json, then extract while hashing; the manifest is checked last."""
    with _open_tar(archive, uri) as tar:
        members: list[tarfile.TarInfo] = []
        for member in tar:
            if len(members) == MAX_MEMBERS:
                raise ArchiveError(f"{uri}: over {MAX_MEMBERS:,} members; not a zoo archive.")
            if (problem := _member_problem(member)) is not None:
                raise ArchiveError(f"{uri}: member {member.name!r} {problem}. Refused before extracting anything: a "
                                   "zoo archive holds plain files only. Ask its publisher for the archive "
                                   "`fpbench zoo export` wrote.")
            members.append(member)
        index = _read_index(tar, members, uri)
        need, free = sum(m.size for m in members), shutil.disk_usage(staged.parent).free
        if need > free:
            raise ArchiveError(f"{uri}: {need:,} bytes to extract, {free:,} free under {staged.parent.parent}. Free "
                               "disk space or pull into a --zoo-dir on a larger disk.")
        staged.mkdir()
        for member in members[1:]:
            _extract(tar, member, staged / member.name, index["files"][member.name], uri)
    _check_manifest(staged, index, uri)
    return index


def _read_index(tar: tarfile.TarFile, members: list[tarfile.TarInfo], uri: str) -> dict[str, Any]:
    if not members or members[0].name != INDEX or members[0].size > INDEX_MAX_BYTES:
        raise ArchiveError(f"{uri}: the first member must be {INDEX} (at most {INDEX_MAX_BYTES:,} bytes); "
                           "not an archive `fpbench zoo export` wrote.")
    try:
        index = json.loads(tar.extractfile(members[0]).read().decode("utf-8"))  # type: ignore[union-attr]
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchiveError(f"{uri}: {INDEX} is not JSON ({err}).") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("format_version") != FORMAT_VERSION:
        found = (index.get("format"), index.get("format_version")) if isinstance(index, dict) else type(index).__name__
        raise ArchiveError(f"{uri}: {INDEX} is not format {FORMAT} version {FORMAT_VERSION} (found {found}); an "
                           "archive of a newer fpbench needs that version (pip install -U fpbench).")
    files = index.get("files")
    if not isinstance(files, dict) or name_problem(index.get("zoo")) or not isinstance(index.get("models"), int):
        raise ArchiveError(f"{uri}: {INDEX} lacks a valid 'files', 'zoo' or 'models' entry.")
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
    path.parent.mkdir(exist_ok=True)
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


def _check_manifest(staged: Path, index: dict[str, Any], uri: str) -> None:
    """The staged zoo as the store sees it: every record's checkpoint present with its sha256, nothing else."""
    store, files = ZooStore(staged), index["files"]
    try:
        records = store.records()
    except ZooError as err:
        raise ArchiveError(f"{uri}: manifest.jsonl: {err}") from None
    expected = {"manifest.jsonl", *((RECIPE,) if RECIPE in files else ())}
    for model_id, record in records.items():
        if name_problem(model_id):
            raise ArchiveError(f"{uri}: manifest.jsonl: model id {model_id!r} is not a safe file name.")
        rel = f"models/{model_id}.safetensors"
        expected |= {rel, f"models/{model_id}.json"}
        if rel not in files or files[rel]["sha256"] != record["sha256"]:
            actual = files.get(rel, {}).get("sha256", "no such file")
            raise ArchiveError(f"{uri}: {rel}: manifest.jsonl records sha256 {record['sha256']}, the file has {actual}: "
                               "the checkpoint does not belong to its record (tampered or corrupted). Nothing installed.")
        if index.get("split_hashes") not in (None, record.get("split_hashes")) or index.get("dataset") != record.get("dataset"):
            raise ArchiveError(f"{uri}: model {model_id} records dataset/split hashes other than {INDEX}'s.")
    if set(files) != expected or index["models"] != len(records) or index.get("manifest_sha256") != files["manifest.jsonl"]["sha256"]:
        raise ArchiveError(f"{uri}: files the manifest does not name {sorted(set(files) - expected)[:5]}, or a model count "
                           f"/ manifest_sha256 in {INDEX} other than the manifest's. Nothing installed.")
    try:  # the store's own check, as `fpbench zoo RECIPE --list` and `fpbench run` make it
        unbuilt = store.unbuilt([_Job(i) for i in records])
    except ZooError as err:
        raise ArchiveError(f"{uri}: {err}") from None
    if unbuilt:
        raise ArchiveError(f"{uri}: the store finds no checkpoint of {[j.model_id for j in unbuilt][:5]}.")


@dataclass
class _Job:
    """What `ZooStore.unbuilt` reads of a job."""

    model_id: str


def _same_tree(final: Path, index: dict[str, Any]) -> bool:
    """True when `final` holds exactly the archive's files with their sha256 (the lock and temp files aside)."""
    found: dict[str, Path] = {}
    for folder, dirs, names in os.walk(final):
        for entry in (*dirs, *names):
            path = Path(folder) / entry
            if path.is_symlink():
                return False
        for entry in names:
            if entry not in NOT_CONTENT and not is_temp_name(entry):
                found[os.path.relpath(Path(folder) / entry, final).replace(os.sep, "/")] = Path(folder) / entry
    files = index["files"]
    return set(found) == set(files) and all(sha256_file(p) == files[rel]["sha256"] for rel, p in found.items())
