"""Shared zoos: `fpbench zoo export NAME` writes one `.tar`; `fpbench zoo pull URI` verifies and installs one.

The archive (docs/sharing.md) holds `archive.json` first, then `manifest.jsonl`, every model's
`models/<id>.safetensors` and `models/<id>.json`, and `recipe.yaml` when the zoo folder keeps one.
`archive.json` records the sha256 and size of every other member. A pull checks every member's
name and type before a byte is written, hashes each one while writing it into a temporary folder
beside the zoo, checks the manifest against the checkpoints, and only then renames that folder into
place: a refused archive leaves the zoo folder as it was. Nothing is unpickled or loaded.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.io import inside, is_temp_name, name_problem, sha256_file
from bench.tar_archive import (
    INDEX,
    NOT_CONTENT,
    ArchiveError,
    ArchiveFormat,
    fpbench_version,
    hashed_files,
    same_tree,
    verify_extract,
    write_tar,
)
from bench.zoo.archive_fetch import fetch
from bench.zoo.store import ZooError, ZooStore

ZOO_ARCHIVE = ArchiveFormat("fpbench-zoo-archive", 1, max_depth=2, writer="`fpbench zoo export`")  # models/<file>
RECIPE = "recipe.yaml"  # written into the zoo folder by `fpbench zoo import`


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
        write_tar(target, index, {rel: store.root / rel for rel in files})
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


def _zoo_files(store: ZooStore, records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Archive name -> {sha256, size} of every file to export; refuses files the manifest does not know."""
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
    _refuse_local_paths(store, [n for n in names if not n.endswith(".safetensors")])
    return hashed_files({rel: store.root / rel for rel in names})


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


def _index(store: ZooStore, name: str, records: dict[str, dict[str, Any]], files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    source = next(r for r in records.values() if r["role"] == "source")
    recipe = store.root / RECIPE
    return {"format": ZOO_ARCHIVE.name, "format_version": ZOO_ARCHIVE.version, "zoo": name, "dataset": source.get("dataset"),
            "split_hashes": source.get("split_hashes"), "models": len(records),
            "roles": dict(sorted(Counter(r["role"] for r in records.values()).items())),
            "manifest_sha256": files["manifest.jsonl"]["sha256"],
            "recipe": recipe.read_text(encoding="utf-8") if recipe.is_file() else None,
            "fpbench_version": fpbench_version(),
            "files": dict(sorted(files.items()))}


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
        index = verify_extract(archive, staged, uri, ZOO_ARCHIVE, lambda index: _check_index(index, uri))
        _check_manifest(staged, index, uri)
        name = name or index["zoo"]
        final = inside(zoo_dir, name)
        report = ArchiveReport(final, archive.stat().st_size, index["models"], sha256_file(archive),
                               index["manifest_sha256"], index["roles"])
        if os.path.lexists(final) and not (final.is_dir() and not final.is_symlink() and not any(final.iterdir())):
            if same_tree(final, index["files"]):
                report.identical = True
                return report
            raise ArchiveError(f"{final} already exists with other content than {uri}; it was left as it is. Pull under "
                               f"another name (--name {name}-2) or move that folder away first.")
        os.replace(staged, final)  # an empty folder of that name is replaced; nothing else can be
    return report


def _check_index(index: dict[str, Any], uri: str) -> None:
    """The zoo archive's own index fields (the format, members and hashes are `verify_extract`'s)."""
    if name_problem(index.get("zoo")) or not isinstance(index.get("models"), int):
        raise ArchiveError(f"{uri}: {INDEX} lacks a valid 'zoo' or 'models' entry.")


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
    manifest_sha256 = files["manifest.jsonl"]["sha256"]
    if set(files) != expected or index["models"] != len(records) or index.get("manifest_sha256") != manifest_sha256:
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
