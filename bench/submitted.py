"""Which published result files came in through a submission: ``<results_dir>/submissions.json``.

`fpbench fingerprint pull BUNDLE --results-out DIR` of an accepted submission (docs/submitting.md) records
here, per result file it wrote, who submitted it (`fpbench submit --submitter`), the archive's sha256 and the
submitter's fpbench version. The board reads it to mark those rows; `fpbench leaderboard --check` flags an
entry whose file is gone. A leaf (JSON only): the report layer and the sharing layer both import it.

Layout::

    {"format": 1, "results": {"runs/<zoo>/<method>/<file>.json":
                              {"submitter": "Ada <ada@lab>" | null, "archive_sha256": "...", "fpbench_version": "..."}}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.io import atomic_write_text

SUBMISSIONS_FILE = "submissions.json"
FORMAT = 1
MAX_BYTES = 16 << 20  # a board's record of submissions; anything larger is not one
ANONYMOUS = "anonymous"  # what the board shows for a submission made without --submitter


class SubmissionsFileError(ValueError):
    """``submissions.json`` is not a record this fpbench writes: what is wrong and how to mend it."""


def read_submissions(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Result file (relative POSIX path) -> its submission record; empty when the folder has no record.

    Raises:
        SubmissionsFileError: the file is too large, not JSON, or not the layout above.
    """
    path = Path(results_dir) / SUBMISSIONS_FILE
    if not path.is_file():
        return {}
    fix = f"Restore it from git (`git checkout -- {SUBMISSIONS_FILE}`) or delete it to drop every submission mark."
    if path.stat().st_size > MAX_BYTES:
        raise SubmissionsFileError(f"{path} is over {MAX_BYTES} bytes, not a record of submissions. {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SubmissionsFileError(f"{path} is not valid JSON ({err}). {fix}") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(results, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("submitter"), (str, type(None)))
            for k, v in results.items()):
        raise SubmissionsFileError(f"{path} is not a format-{FORMAT} record ({{'format': {FORMAT}, 'results': "
                                   f"{{file: {{'submitter': ..., ...}}}}}}). {fix}")
    return results


def record_submission(results_dir: str | Path, files: Iterable[str], submitter: str | None, archive_sha256: str,
                      fpbench_version: str | None) -> Path:
    """Add (or replace) the records of ``files`` (POSIX paths relative to ``results_dir``); atomic."""
    results = read_submissions(results_dir)
    for rel in files:
        results[rel] = {"submitter": submitter, "archive_sha256": archive_sha256, "fpbench_version": fpbench_version}
    path = Path(results_dir) / SUBMISSIONS_FILE
    atomic_write_text(path, json.dumps({"format": FORMAT, "results": dict(sorted(results.items()))}, indent=1) + "\n")
    return path


def submitted_by(files: Iterable[str], record: dict[str, dict[str, Any]]) -> str:
    """Who submitted any of ``files`` ("" for none): the submitters, sorted, joined with ", "."""
    names = {(record[f]["submitter"] or ANONYMOUS)[:60] for f in files if f in record}  # a label, not an essay
    return ", ".join(sorted(names))


def submission_problems(results_dir: str | Path) -> list[str]:
    """`--check`'s findings: an unreadable record, or an entry whose result file is not there."""
    try:
        results = read_submissions(results_dir)
    except SubmissionsFileError as err:
        return [str(err)]
    root = Path(results_dir)
    return [f"{root / SUBMISSIONS_FILE}: entry {rel} names no result file under {root}; drop the entry or restore the file."
            for rel in sorted(results) if not (root / rel).is_file()]
