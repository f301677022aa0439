"""Shared fingerprints: `fpbench fingerprint export RESULTS_DIR` and `fpbench fingerprint pull URI`.

A board's fingerprints are what lets a reader re-score its suspects without generating anything
(`fpbench reproduce`, `bench.reproduce`). The archive (docs/sharing.md) is the layout of
`bench.tar_archive`: `archive.json`, then every cached fingerprint the result files under RESULTS_DIR
measured (`fingerprints/<method>/<key>/<file>`, the cache's own layout) and those result files
(`results/<zoo>/<method>/<file>.json`). An export refuses a fingerprint that is not cached or is not the
one its result recorded (`fingerprint.sha256`). A pull verifies every member's sha256, then each
fingerprint's own hashes (`sha256.json`) against the index and against every result it is listed
for, and installs nothing until all of them pass; an existing cache entry is never replaced.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.io import inside, name_problem, sha256_file
from bench.methods.base import (
    FINGERPRINT_FILES,
    HASHES_FILE,
    TIMING_FILE,
    Fingerprint,
    FingerprintIntegrityError,
    verify_fingerprint_files,
)
from bench.plugins import key_reference
from bench.results import ResultError, iter_results, read_result
from bench.tar_archive import (
    INDEX,
    ArchiveError,
    ArchiveFormat,
    fpbench_version,
    hashed_files,
    verify_extract,
    write_tar,
)
from bench.verification import VerifyError, cached_fingerprint_dir, method_of, result_entry
from bench.zoo.archive_fetch import fetch

# fingerprints/<method>/<key>/<file> and results/<zoo>/<method>/<file>: four name parts at most
FINGERPRINT_ARCHIVE = ArchiveFormat("fpbench-fingerprint-archive", 1, max_depth=4, writer="`fpbench fingerprint export`")
FOLDER_FILES = (*FINGERPRINT_FILES, HASHES_FILE)  # TIMING_FILE travels too when present (not hashed by the cache)


@dataclass
class FingerprintArchiveReport:
    """What an export wrote or a pull installed."""

    path: Path  # the archive (export) or the cache folder (pull)
    size: int  # bytes of the archive
    sha256: str  # of the archive file
    fingerprints: int  # distinct fingerprint folders
    results: int  # result files listed
    zoos: list[str]
    installed: int = 0  # pull: folders written into the cache
    identical: int = 0  # pull: folders already in the cache with exactly these files
    results_written: list[Path] | None = None  # pull with results_out
    index: dict[str, Any] | None = None  # pull: the verified archive.json (a submission's provenance is in it)


# -- export --------------------------------------------------------------------------------------
def export_fingerprints(results_dir: str | os.PathLike, cache_dir: str | os.PathLike = ".cache/fpbench",
                        out: str | os.PathLike | None = None, zoo: str | None = None,
                        extra: dict[str, Any] | None = None) -> FingerprintArchiveReport:
    """Write every fingerprint the results under `results_dir` measured, with those results, as one archive.

    Args:
        results_dir: a results tree (its `runs/` holds the result files), e.g. `results` or `local_results`.
        cache_dir: the runs' `paths.cache_dir`.
        out: the archive to write (default `fingerprints-<zoo or results folder name>.tar`).
        zoo: only the results of this zoo (e.g. `quickstart`).
        extra: more index fields (a submission's provenance, `bench.submission`); they may not replace the format's own.

    Raises:
        ArchiveError: no result files, a fingerprint that is not cached, damaged, or not the one its result recorded.
    """
    results = [(p, r) for p, r in iter_results(results_dir) if zoo is None or r["zoo"]["name"] == zoo]
    if not results:
        raise ArchiveError(f"No result files under {Path(results_dir) / 'runs'}{f' of zoo {zoo!r}' if zoo else ''}; "
                           "name the results tree a run wrote (paths.results_dir, e.g. results or local_results).")
    target = Path(out) if out is not None else Path(f"fingerprints-{zoo or Path(results_dir).resolve().name}.tar")
    if not target.name.endswith(".tar"):
        raise ArchiveError(f"--out {target}: the archive is an uncompressed tar; name it NAME.tar (docs/sharing.md).")
    runs = Path(results_dir) / "runs"
    folders: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    for path, result in results:
        rel_folder, folder = _checked_folder(path, result, cache_dir)
        entry = folders.setdefault(rel_folder, {"method": result["method"]["name"], "sha256": None, "results": []})
        entry["sha256"] = result["fingerprint"]["sha256"]
        rel_result = "results/" + path.relative_to(runs).as_posix()
        entry["results"].append(rel_result)
        for name in (*FOLDER_FILES, TIMING_FILE):
            if (folder / name).is_file():
                paths[f"{rel_folder}/{name}"] = folder / name
        paths[rel_result] = path
    files = hashed_files(paths)
    index = {"format": FINGERPRINT_ARCHIVE.name, "format_version": FINGERPRINT_ARCHIVE.version,
             "zoos": sorted({r["zoo"]["name"] for _, r in results}), "fingerprints": folders,
             "results": len(results), "fpbench_version": fpbench_version(), "files": dict(sorted(files.items()))}
    index |= {k: v for k, v in (extra or {}).items() if k not in index}
    write_tar(target, index, paths)
    return FingerprintArchiveReport(target, target.stat().st_size, sha256_file(target), len(folders), len(results),
                                    index["zoos"])


def _checked_folder(path: Path, result: dict[str, Any], cache_dir: str | os.PathLike) -> tuple[str, Path]:
    """(`fingerprints/<method>/<key>`, the cache folder) of the fingerprint `result` measured, verified."""
    try:
        folder = cached_fingerprint_dir(result, method_of(result_entry(result)), cache_dir, path)
    except VerifyError as err:
        raise ArchiveError(str(err)) from None
    fix = ("Regenerate it with the run's recipe (fpbench run RECIPE, with its paths.cache_dir) or pass --cache-dir, "
           "then export.")
    try:
        found = verify_fingerprint_files(folder)  # the files against their sha256.json; no tensors are read
    except (FingerprintIntegrityError, OSError, ValueError, KeyError) as err:
        raise ArchiveError(f"{path}: its fingerprint is not usable at {folder} ({type(err).__name__}: {err}). {fix}") from None
    recorded = (result.get("fingerprint") or {}).get("sha256")
    if recorded is None or found != recorded:
        raise ArchiveError(f"{path} measured fingerprint {str(recorded)[:12]}…, but {folder} holds "
                           f"{str(found)[:12]}… (regenerated since, or an old result without one). "
                           "Export the results that match the cache: rerun `fpbench run` first.")
    return folder.relative_to(Path(cache_dir)).as_posix(), folder


# -- pull ----------------------------------------------------------------------------------------
def pull_fingerprints(uri: str, cache_dir: str | os.PathLike = ".cache/fpbench",
                      results_out: str | os.PathLike | None = None, progress: bool = True) -> FingerprintArchiveReport:
    """Fetch the archive `uri`, verify every member and fingerprint, then install the fingerprints into `cache_dir`.

    Args:
        uri: a path, file://, http(s)://, wandb:// or hf:// URI (`bench.zoo.archive_fetch.SCHEMES`).
        cache_dir: the cache to install into (`paths.cache_dir`); its `fingerprints/<method>/<key>` layout.
        results_out: also write the archive's result files under `<results_out>/runs/` (none by default).
        progress: a progress bar for large downloads.

    Raises:
        ArchiveError: a bad URI or download, a member that is not a plain file with a safe name, a sha256 that
            differs from archive.json, a fingerprint whose own hashes or recorded sha256 disagree, or an existing
            cache entry (or result file) with other content; nothing is installed then.
    """
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=cache_dir) as tmp:  # beside the cache: renames are atomic
        archive = fetch(uri, Path(tmp), progress)
        staged = Path(tmp) / "staged"
        index = verify_extract(archive, staged, uri, FINGERPRINT_ARCHIVE, lambda index: _check_index(index, uri))
        _check_fingerprints(staged, index, uri)
        folders, results = _install_plan(staged, index, Path(cache_dir), results_out, uri)  # refusals before any write
        for source, final in [*folders, *results]:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, final)
        report = FingerprintArchiveReport(Path(cache_dir), archive.stat().st_size, sha256_file(archive),
                                          len(index["fingerprints"]), int(index["results"]), list(index["zoos"]),
                                          installed=len(folders), identical=len(index["fingerprints"]) - len(folders),
                                          results_written=[final for _, final in results], index=index)
    return report


def _check_index(index: dict[str, Any], uri: str) -> None:
    """The fingerprint archive's own fields: every member belongs to a listed folder or a listed result."""
    folders = index.get("fingerprints")
    if not isinstance(folders, dict) or not isinstance(index.get("zoos"), list) or type(index.get("results")) is not int:
        raise ArchiveError(f"{uri}: {INDEX} lacks a valid 'fingerprints', 'zoos' or 'results' entry.")
    listed_results: list[str] = []
    for rel, entry in folders.items():
        parts = str(rel).split("/")
        if len(parts) != 3 or parts[0] != "fingerprints" or any(name_problem(p) for p in parts) or not isinstance(entry, dict) \
                or not isinstance(entry.get("results"), list) or not isinstance(entry.get("sha256"), str):
            raise ArchiveError(f"{uri}: {INDEX}: fingerprint entry {rel!r} is not fingerprints/<method>/<key> with "
                               "'sha256' and 'results'.")
        listed_results += entry["results"]
    if len(set(listed_results)) != len(listed_results) or len(listed_results) != index["results"]:
        raise ArchiveError(f"{uri}: {INDEX}: {index['results']} results announced, {len(listed_results)} listed "
                           f"({len(listed_results) - len(set(listed_results))} listed twice).")
    for name in index["files"]:
        folder = name.rsplit("/", 1)[0]
        if not (folder in folders and name.rsplit("/", 1)[1] in (*FOLDER_FILES, TIMING_FILE)) and name not in listed_results:
            raise ArchiveError(f"{uri}: member {name} belongs to no listed fingerprint or result. Refused before "
                               "extracting anything.")
    for name in listed_results:
        if not name.startswith("results/") or name.count("/") != 3 or name not in index["files"]:
            raise ArchiveError(f"{uri}: {INDEX} lists result {name!r}, which is not results/<zoo>/<method>/<file> "
                               "in the archive.")


def _check_fingerprints(staged: Path, index: dict[str, Any], uri: str) -> None:
    """Each folder's own hashes (`Fingerprint.load`) equal the index's sha256 and every listed result's."""
    for rel, entry in index["fingerprints"].items():
        try:
            fingerprint = Fingerprint.load(staged / rel)
        except (FingerprintIntegrityError, OSError, ValueError, KeyError) as err:
            raise ArchiveError(f"{uri}: {rel}: not a usable fingerprint ({type(err).__name__}: {err}). "
                               "Nothing installed.") from None
        method_folder = rel.split("/")[1]
        foreign = fingerprint.method != method_folder and key_reference(method_folder) is None
        if fingerprint.sha256 != entry["sha256"] or foreign:
            raise ArchiveError(f"{uri}: {rel} holds {fingerprint.method} fingerprint {fingerprint.sha256}, {INDEX} says "
                               f"{entry['sha256']}: tampered or corrupted. Nothing installed.")
        for name in entry["results"]:
            try:
                result = read_result(staged / name)
            except (ResultError, ValueError, OSError) as err:
                raise ArchiveError(f"{uri}: {name} is not a valid result file ({err}). Nothing installed.") from None
            if (result.get("fingerprint") or {}).get("sha256") != fingerprint.sha256:
                raise ArchiveError(f"{uri}: {name} measured another fingerprint than {rel}. Nothing installed.")


def _install_plan(staged: Path, index: dict[str, Any], cache_dir: Path, results_out: str | os.PathLike | None,
                  uri: str) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """(staged, final) paths of the fingerprint folders and result files to move in, those already there left out.

    A cache folder already holding the same fingerprint (its own sha256, timing aside) counts as there; one holding
    anything else, or a result file with other bytes, refuses the whole pull.
    """
    folders, results = [], []
    for rel, entry in index["fingerprints"].items():
        final = inside(cache_dir, *rel.split("/"))
        if os.path.lexists(final):
            try:
                same = not final.is_symlink() and verify_fingerprint_files(final) == entry["sha256"]
            except (FingerprintIntegrityError, OSError, ValueError, KeyError):
                same = False
            if same:
                continue
            raise ArchiveError(f"{final} already holds another fingerprint than {uri}'s {rel}; it was left as it is, "
                               "and nothing was installed. Pull into another --cache-dir, or move that folder away first.")
        folders.append((staged / rel, final))
    for entry in index["fingerprints"].values() if results_out is not None else ():
        for name in entry["results"]:
            final = inside(Path(results_out) / "runs", *name.split("/")[1:])
            if final.is_file() and not final.is_symlink() and sha256_file(final) == index["files"][name]["sha256"]:
                continue
            if os.path.lexists(final):
                raise ArchiveError(f"{final} exists with other content than {uri}'s {name}; nothing was installed. "
                                   "Pull the results into another folder.")
            results.append((staged / name, final))
    return folders, results
