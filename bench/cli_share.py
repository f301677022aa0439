"""The sharing commands of `fpbench`: `fingerprint export|pull`, `reproduce`, `submit` and `leaderboard
--check-submission` (docs/sharing.md, docs/submitting.md), and `check-method` for a method of one's own
(docs/extending.md), with `--method REF`, which imports a method class the way a recipe naming it does.

Kept beside `bench.cli` (which dispatches to them) so that the light commands do not import them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench.config import ConfigError
from bench.methods import METHODS
from bench.registry import RegistryError


def use_methods(references: Sequence[str], flag: str = "--method") -> list[str]:
    """Import and register each method a user names (`package.module:Class`, or a registered name) with the
    recipe's resolver (`Registry.resolve`), so that results made with it can be read; return their keys.

    Names read from files are never imported; a class a result names is usable once the user names it here.

    Raises:
        ConfigError: an unknown name or a reference that does not import, naming it and the fix (exit 2).
    """
    keys = []
    for reference in references:
        try:
            keys.append(METHODS.resolve(reference))
        except RegistryError as err:
            raise ConfigError(f"{flag} {reference}: {err}") from None
    return keys


def check_method(args: argparse.Namespace) -> int:
    """`fpbench check-method REF [key=value ...]`: one PASS/FAIL line per contract check.

    Returns:
        0 when every check passed, 1 when any failed (a bad REF or config raises ConfigError first: exit 2).
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from bench.testing import contract_outcomes, method_config  # optional: heavy (trains the digits world)

    key = use_methods([args.method], "check-method")[0]
    try:
        config = method_config(METHODS.get(key), OmegaConf.to_container(OmegaConf.from_dotlist(args.overrides)))
    except (ValueError, OmegaConfBaseException) as err:
        raise ConfigError(f"check-method {args.method}: {' '.join(str(err).split())} Give key=value fields of its "
                          "Config (fpbench show RECIPE lists a method's defaults).") from None
    outcomes = contract_outcomes(key, config)
    width = max(len(o.name) for o in outcomes)
    for outcome in outcomes:
        print(f"{'PASS' if outcome.passed else 'FAIL'}  {outcome.name:<{width}}  {outcome.reason}")
    failed = sum(not o.passed for o in outcomes)
    print(f"{key} ({METHODS.origin(key)}): {len(outcomes) - failed} of {len(outcomes)} checks passed"
          + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


def fingerprint_share(args: argparse.Namespace) -> int:
    """`fpbench fingerprint export RESULTS_DIR [--zoo NAME] [--out PATH]` and `fpbench fingerprint pull URI`."""
    from bench.fingerprint_archive import (  # optional: heavy (torch, methods)
        export_fingerprints,
        pull_fingerprints,
    )

    _no_import_flags(args)
    if args.action == "export":
        if args.results_out:
            raise ConfigError("--results-out is for `fpbench fingerprint pull` only.")
        report = export_fingerprints(args.target, args.cache_dir, args.out, args.zoo)
        print(f"exported {report.fingerprints} fingerprint(s) measured by {report.results} result file(s) of zoo(s) "
              f"{', '.join(report.zoos)}: {report.size:,} bytes -> {report.path}\nsha256 {report.sha256}")
        return 0
    if args.out or args.zoo:
        raise ConfigError("--out and --zoo are for `fpbench fingerprint export` only.")
    report = pull_fingerprints(args.target, args.cache_dir, args.results_out, progress=not args.quiet)
    written = f"; {len(report.results_written or [])} result file(s) -> {args.results_out}/runs" if args.results_out else ""
    if args.results_out and report.results_written:
        from bench.submission import record_pulled  # optional: heavy (torch, methods)

        marked = record_pulled(args.results_out, report)
        written += f"; marked as submitted in {marked}" if marked else ""
    print(f"verified {report.fingerprints} fingerprint(s) of zoo(s) {', '.join(report.zoos)}: {report.installed} "
          f"installed, {report.identical} already there -> {report.path}{written}\n"
          f"archive sha256 {report.sha256} ({report.size:,} bytes)")
    return 0


def import_flags(args: argparse.Namespace) -> dict[str, str | None]:
    """The flags only `fpbench fingerprint import` takes, with their values (None: not given)."""
    return {"--method": args.method, "--inputs": args.inputs, "--labels": args.labels}


def _no_import_flags(args: argparse.Namespace) -> None:
    given = [flag for flag, value in import_flags(args).items() if value is not None]
    if given or args.overrides:
        raise ConfigError(f"`fpbench fingerprint {args.action}` takes no {', '.join(given) or 'key=value overrides'}; "
                          "those are for `fpbench fingerprint import RECIPE` (docs/byo.md).")


def reproduce(args: argparse.Namespace) -> int:
    """`fpbench reproduce`: pull what is asked, re-score, print one line per result file, write the JSON report.

    Returns:
        0 when every result file re-scored identically, 1 when any differs or could not be re-scored.
    """
    from bench.fingerprint_archive import pull_fingerprints  # optional: heavy (torch, methods)
    from bench.reproduce import (  # optional: heavy (the loop)
        DIFFERS,
        NOT_RESCORED,
        report_lines,
        write_report,
    )
    from bench.reproduce import reproduce as rescore  # optional: heavy (the loop)
    from bench.zoo.archive import pull_zoo  # optional: heavy (the zoo store)

    use_methods(args.method)
    if args.pull_zoo:
        zoo = pull_zoo(args.pull_zoo, args.zoo_dir, progress=not args.quiet)
        print(f"zoo {zoo.path.name}: {'already there, identical' if zoo.identical else 'verified and installed'} "
              f"({zoo.models} models, manifest sha256 {zoo.manifest_sha256[:12]}…)")
    if args.pull_fingerprints:
        fps = pull_fingerprints(args.pull_fingerprints, args.cache_dir, progress=not args.quiet)
        print(f"fingerprints: {fps.installed} installed, {fps.identical} already there (archive sha256 {fps.sha256[:12]}…)")
    report = rescore(args.results_dir, args.zoo, args.zoo_dir, args.cache_dir, args.overrides, progress=not args.quiet)
    out = Path(args.out) if args.out else Path("local_results") / "reproduce" / f"{args.zoo or 'all'}.json"
    write_report(report, out)
    print("\n".join([*report_lines(report), f"report: {out}"]))
    counts = report.counts()
    return 1 if counts[DIFFERS] or counts[NOT_RESCORED] else 0


def submit(args: argparse.Namespace) -> int:
    """`fpbench submit RESULTS_DIR --zoo NAME [--out PATH]` (docs/submitting.md)."""
    from bench.submission import submit as bundle  # optional: heavy (torch, methods)

    use_methods(args.method)
    report = bundle(args.results_dir, args.zoo, args.cache_dir, args.out, submitter=args.submitter)
    print(f"submission of zoo {args.zoo}: {report.results} result file(s), {report.fingerprints} fingerprint(s), "
          f"{report.size:,} bytes -> {report.path}\nsha256 {report.sha256}\ncheck it: fpbench leaderboard "
          f"--check-submission {report.path} --zoo-dir DIR")
    return 0


def check_submission(args: argparse.Namespace) -> int:
    """`fpbench leaderboard --check-submission BUNDLE --zoo-dir DIR`: 0 accepted, 1 refused."""
    from bench.submission import check_lines  # optional: heavy (the evaluation loop)
    from bench.submission import check_submission as check  # optional: heavy (the evaluation loop)

    if args.check or args.html or args.readme:
        raise ConfigError("--check-submission runs alone; drop --check, --html and --readme.")
    if args.zoo_dir is None:
        raise ConfigError("--check-submission needs --zoo-dir DIR, the folder holding the benchmark's zoo.")
    use_methods(args.method)
    outcome = check(args.check_submission, args.zoo_dir, progress=not args.quiet)
    print("\n".join(check_lines(outcome)))
    return 0 if outcome.accepted else 1

