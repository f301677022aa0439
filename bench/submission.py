"""Board submissions: `fpbench submit RESULTS_DIR --zoo NAME` and `fpbench leaderboard --check-submission BUNDLE`.

A submission is a fingerprint archive (`bench.fingerprint_archive`) whose index also carries its
provenance (`submission`: per method its version and the sha256 of the source file that defines it,
the fpbench version; each result file already records versions, git commit and hardware). A
maintainer checks it against the benchmark's own zoo: the bundle is pulled into a temporary cache,
every suspect of every submitted result is re-scored through the evaluation loop
(`bench.reproduce`), and the bundle is refused on any difference, or when a result cannot be
re-scored at all (docs/submitting.md).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fingerprint_archive import FingerprintArchiveReport, export_fingerprints, pull_fingerprints
from bench.methods import METHODS
from bench.plugins import unregistered_fix
from bench.reproduce import IDENTICAL, ReproduceReport, report_lines, reproduce
from bench.results import iter_results
from bench.submitted import record_submission
from bench.tar_archive import ArchiveError, fpbench_version

SUBMISSION_KEY = "submission"  # the index field that makes a fingerprint archive a submission


def method_provenance(name: str) -> dict[str, Any]:
    """`{"version", "module", "source_sha256"}` of the registered method `name` (the file its class is defined in)."""
    cls = METHODS.get(name)
    source = inspect.getsourcefile(cls)
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else None
    return {"version": str(getattr(cls, "version", "")), "module": cls.__module__, "source_sha256": digest}


def submit(results_dir: str | os.PathLike, zoo: str, cache_dir: str | os.PathLike = ".cache/fpbench",
           out: str | os.PathLike | None = None, submitter: str | None = None) -> FingerprintArchiveReport:
    """Bundle the results of zoo `zoo` under `results_dir`, their fingerprints and provenance as one archive.

    Raises:
        ArchiveError: what `export_fingerprints` refuses (no results, a fingerprint not cached or not the one
            measured), or a result of a method this fpbench does not register.
    """
    names = sorted({r["method"]["name"] for _, r in iter_results(results_dir) if r["zoo"]["name"] == zoo})
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ArchiveError(f"Results of {unknown} name no registered method; a submission is re-scored with the "
                           f"methods this fpbench registers (fpbench list methods): {unregistered_fix(unknown[0])}.")
    provenance = {"fpbench_version": fpbench_version(), "zoo": zoo, "submitter": submitter,
                  "methods": {name: method_provenance(name) for name in names}}
    target = out if out is not None else f"submission-{zoo}.tar"
    return export_fingerprints(results_dir, cache_dir, target, zoo, extra={SUBMISSION_KEY: provenance})


@dataclass
class SubmissionCheck:
    """What `check_submission` found: the re-scoring and whatever makes the bundle unacceptable."""

    report: ReproduceReport
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth saying, not a reason to refuse

    @property
    def accepted(self) -> bool:
        return not self.problems


def check_submission(bundle: str, zoo_dir: str | os.PathLike, progress: bool = True) -> SubmissionCheck:
    """Pull `bundle` into a temporary cache and results tree, re-score every suspect, and judge it.

    Raises:
        ArchiveError: the bundle fails a pull's checks, or is a fingerprint archive without a submission record.
        bench.reproduce.ReproduceError: the zoo under `zoo_dir` lacks a model the results were scored on.
    """
    with tempfile.TemporaryDirectory(prefix="fpbench-submission-") as tmp:
        pulled = pull_fingerprints(bundle, Path(tmp) / "cache", results_out=Path(tmp) / "results", progress=progress)
        provenance = (pulled.index or {}).get(SUBMISSION_KEY)
        if not isinstance(provenance, dict):
            raise ArchiveError(f"{bundle} is a fingerprint archive, not a submission (no '{SUBMISSION_KEY}' record); "
                               "make one with `fpbench submit RESULTS_DIR --zoo NAME`.")
        report = reproduce(Path(tmp) / "results", None, zoo_dir, Path(tmp) / "cache", progress=progress)
    check = SubmissionCheck(report)
    for f in report.files:
        if f.status != IDENTICAL:
            check.problems.append(f"{f.path} ({f.method}): {f.status}"
                                  + (f": {f.differing} of {f.suspects} suspects, max |Δ score| {f.max_abs_diff:.4g}"
                                     if f.differing else f" ({f.note})" if f.note else ""))
    for name, submitted in (provenance.get("methods") or {}).items():
        local = method_provenance(name) if name in METHODS else {}
        if submitted.get("version") != local.get("version"):
            check.problems.append(f"method {name}: submitted with version {submitted.get('version')}, this fpbench "
                                  f"has {local.get('version')}: re-check it with that version.")
        elif submitted.get("source_sha256") != local.get("source_sha256"):
            check.notes.append(f"method {name}: its source file differs from this fpbench's ({local.get('module')}); "
                               "the scores were re-computed with this fpbench's code.")
    if pulled.results != len(report.files):
        check.problems.append(f"{pulled.results} results in the bundle, {len(report.files)} re-scored.")
    return check


def check_lines(check: SubmissionCheck) -> list[str]:
    """The console answer: the per-file re-scoring, notes, then ACCEPTED or REFUSED with every reason."""
    lines = [*report_lines(check.report), *(f"note: {n}" for n in check.notes)]
    if check.accepted:
        return [*lines, "ACCEPTED: every submitted score re-scored identically on this zoo."]
    return [*lines, f"REFUSED: {len(check.problems)} problem(s):", *(f"  {p}" for p in check.problems)]


def record_pulled(results_out: str | os.PathLike, report: FingerprintArchiveReport) -> Path | None:
    """After `fpbench fingerprint pull BUNDLE --results-out DIR`: when the bundle is a submission, record the result
    files it wrote in `DIR/submissions.json` (`bench.submitted`), so the board marks their rows. None otherwise."""
    provenance = (report.index or {}).get(SUBMISSION_KEY)
    if not isinstance(provenance, dict) or not report.results_written:
        return None
    submitter = provenance.get("submitter")
    root = Path(results_out).resolve()
    files = [Path(path).resolve().relative_to(root).as_posix() for path in report.results_written]
    return record_submission(results_out, files, submitter if isinstance(submitter, str) else None, report.sha256,
                             provenance.get("fpbench_version"))
