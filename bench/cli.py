"""The `fpbench` command line: parse, load the recipe, call one library function, print its result.

Exit codes: 0 success; 2 bad recipe or argument (raised before any work); 1 failure during work.

Imports: at module level only what `fpbench list`, `show` and a recipe error need (the recipe loader and
the registries: torch, omegaconf), so they answer without Lightning, W&B, timm, matplotlib or Ray
(`tests/test_cli_imports.py`; timed by `fpbench perf cli_start`). A command that does work imports its
library code (seconds of imports) in its own body, after its recipe is validated, marked
`# optional: heavy` for `tests/test_imports.py`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import cli_share, tracking_state
from bench.cli_parser import EXAMPLES, VALUE_OPTIONS, build_parser, version_text  # noqa: F401 (re-exported)
from bench.config import ConfigError, load_recipe
from bench.deploy import DEPLOYMENTS
from bench.log_setup import setup_logging
from bench.methods import METHODS
from bench.nets import arch_descriptions
from bench.registry import Registry, RegistryError
from bench.show import show_recipe
from datamodules import DATAMODULES

log = logging.getLogger("bench")


class UsageError(ValueError):
    """A bad command-line argument (exit 2)."""




def _is_override(arg: str) -> bool:
    """``key=value`` (a dotlist override) or ``--key=value`` (as W&B agents pass), not a known option."""
    if arg.startswith("--"):
        return "=" in arg and arg.split("=", 1)[0] not in VALUE_OPTIONS
    return "=" in arg and not arg.startswith("-")


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    # Overrides may stand anywhere (`zoo R --list a=1`); argparse's positional `overrides` only takes a
    # run of them, so every key=value after the subcommand is taken out first and handed over as overrides.
    argv = list(argv)
    command_at = next((i for i, a in enumerate(argv) if a in EXAMPLES), len(argv))
    kept, overrides, takes_value = argv[:command_at + 1], [], False
    for arg in argv[command_at + 1:]:
        if not takes_value and _is_override(arg):
            overrides.append(arg)
        else:
            kept.append(arg)
        takes_value = arg in VALUE_OPTIONS
    args = build_parser().parse_args(kept)
    if overrides and not hasattr(args, "overrides"):
        build_parser().error(f"{args.command} takes no key=value overrides, got {' '.join(overrides)}")
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *overrides]
    return args


def _setup_logging(quiet: bool) -> None:
    setup_logging(quiet)


def _cmd_zoo(args: argparse.Namespace) -> int:
    if args.recipe == "import":
        return _cmd_zoo_import(args)
    if args.recipe in ("export", "pull"):
        return _cmd_zoo_share(args)
    if args.folder is not None:
        raise UsageError(f"`fpbench zoo {args.recipe} {args.folder}`: zoo takes one recipe (a second positional "
                         "argument only with `fpbench zoo import DIR --name NAME`, `zoo export NAME`, `zoo pull URI`).")
    if args.out is not None:
        raise UsageError("--out is for `fpbench zoo export NAME --out PATH` only.")
    cfg = load_recipe(args.recipe, args.overrides)
    if not args.list:
        _warm_zoo_workers(cfg)
    from bench.evaluate import method_pool_specs  # optional: heavy (module docstring)
    from bench.tracking import training_logger_factory  # optional: heavy (module docstring)
    from bench.zoo.build import build_zoo, prepare  # optional: heavy (module docstring)
    from bench.zoo.listing import zoo_table  # optional: heavy (module docstring)

    pools = method_pool_specs(cfg)  # defender pools of the recipe's methods belong to its zoo
    if args.list:
        _, plan, store = prepare(cfg, pools)
        print(zoo_table(plan, store))
        return 0
    _check_paths(cfg)
    report = build_zoo(cfg, pools, progress=_progress(cfg, args), logger_factory=training_logger_factory(cfg))
    print(zoo_table(report.plan, report.store))
    print(f"\nzoo {report.plan.name}: {len(report.built)} built, {len(report.skipped)} already built "
          f"({report.seconds:.1f} s) -> {report.store.root}")
    return 1 if report.failed else 0


def _cmd_zoo_import(args: argparse.Namespace) -> int:
    if not args.folder or not args.name:
        raise UsageError("usage: fpbench zoo import DIR --name NAME [--zoo-dir zoo] [key=value ...] (docs/byo.md).")
    if not os.path.isdir(args.folder):
        raise UsageError(f"{args.folder} is not a folder; give the published zoo's folder (layout in docs/byo.md).")
    from bench.zoo.listing import zoo_table  # optional: heavy (module docstring)
    from bench.zoo_import import import_zoo  # optional: heavy (module docstring)

    recipe, report = import_zoo(args.folder, args.name, args.zoo_dir, args.overrides)
    print(zoo_table(report.plan, report.store))
    print(f"\nzoo {report.plan.name}: {len(report.built)} imported, {len(report.skipped)} already there -> "
          f"{report.store.root}\nrecipe: {recipe}  (fpbench run {recipe} methods=[akh,random])")
    return 1 if report.failed else 0


def _cmd_zoo_share(args: argparse.Namespace) -> int:
    """`fpbench zoo export NAME [--out PATH]` and `fpbench zoo pull URI [--name NAME]` (docs/sharing.md)."""
    target = args.folder
    urls = [o for o in args.overrides if "://" in o]  # a URL with a query string ('?a=b') reads as an override
    if target is None and len(urls) == 1 and len(args.overrides) == 1:
        target = urls[0]
    elif args.overrides:
        raise UsageError(f"`fpbench zoo {args.recipe}` takes no key=value overrides, got {' '.join(args.overrides)}.")
    from bench.zoo.archive import export_zoo, pull_zoo  # optional: heavy (module docstring)

    if args.recipe == "export":
        if not target or args.name:
            raise UsageError("usage: fpbench zoo export NAME [--zoo-dir zoo] [--out NAME.tar] (docs/sharing.md).")
        report = export_zoo(target, args.zoo_dir, args.out)
        print(f"exported zoo {target}: {report.models} models ({_roles(report.roles)}), {report.size:,} bytes "
              f"-> {report.path}\nsha256 {report.sha256}  (manifest sha256 {report.manifest_sha256})")
        return 0
    if not target or args.out:
        raise UsageError("usage: fpbench zoo pull URI [--zoo-dir zoo] [--name NAME] (docs/sharing.md).")
    report = pull_zoo(target, args.zoo_dir, args.name, progress=not args.quiet)
    state = "already there, identical:" if report.identical else "verified and installed:"
    print(f"zoo {report.path.name} {state} {report.models} models ({_roles(report.roles)}) -> {report.path}\n"
          f"archive sha256 {report.sha256} ({report.size:,} bytes); manifest sha256 {report.manifest_sha256}\n"
          f"use it: fpbench run RECIPE paths.zoo_dir={args.zoo_dir} zoo.name={report.path.name}  "
          "(RECIPE: the recipe the zoo was built from)")
    return 0


def _roles(roles: dict[str, int]) -> str:
    return ", ".join(f"{count} {role}" for role, count in roles.items())


def _progress(cfg, args: argparse.Namespace) -> bool:  # noqa: ANN001
    return bool(cfg.compute.trainer.enable_progress_bar) and not args.quiet


def _warm_zoo_workers(cfg) -> None:  # noqa: ANN001
    """Spawn the zoo's worker processes now, so their imports overlap this process's (bench.zoo.worker_pool)."""
    from bench.zoo.worker_pool import start_workers  # optional: only where a zoo may be built (no Lightning)

    start_workers(cfg)


def _check_paths(cfg) -> None:  # noqa: ANN001
    for key in ("zoo_dir", "results_dir", "cache_dir"):
        path = cfg.paths[key]
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"paths.{key}={path} exists and is not a folder; choose another path.")


def _cmd_run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    cfg = load_recipe(args.recipe, overrides)
    _warm_zoo_workers(cfg)
    from bench import published as pub  # optional: heavy (module docstring)
    from bench.evaluate import summary_lines  # optional: heavy (module docstring)
    from bench.trial_runs import (  # optional: heavy (module docstring)
        TrialRun,
        run_trials,
        timing_lines,
        timing_record,
        trial_configs,
        write_timing,
    )

    if cfg.paths.published_dir is None and pub.default_published_dir() is None:  # an installed package
        found = pub.default_published_dir(args.recipe)  # then the checkout holding the recipe
        if found is not None:
            overrides.append(f"paths.published_dir={found}")
            cfg = load_recipe(args.recipe, overrides)
    _check_paths(cfg)
    configs = trial_configs(cfg, args.recipe, overrides) if cfg.trials.count > 1 else [cfg]
    if pub.writes_published(cfg) and not cfg.paths.overwrite_published:
        log.warning("paths.results_dir=%s is the published benchmark: a result there whose numbers differ from "
                    "this run's is kept, not replaced (paths.overwrite_published=true replaces it).", cfg.paths.results_dir)
    folder = pub.published_dir(cfg)

    def report(run: TrialRun) -> None:
        if len(configs) > 1:
            print(f"\n== trial {run.trial + 1} of {len(configs)} (seed={run.seed}, source seed={run.source_seed})"
                  f"{': every result exists, skipped' if run.skipped else ''}")
        if run.outcome is not None:
            print("\n".join(summary_lines(run.outcome)))
            shown = {**run.outcome.results, **run.outcome.refused}
            print("\n".join(pub.published_lines(shown, folder)))

    outcome = run_trials(configs, progress=_progress(cfg, args), on_trial=report)
    if len(configs) > 1 and not all(run.skipped for run in outcome.runs):
        record = timing_record(configs, outcome)
        print("\n" + "\n".join(timing_lines(record)))
        path = write_timing(cfg, record)
        if path is not None:
            print(f"timing: {path}")
    return 1 if outcome.failed else 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bench.sweep import load_sweep, run_sweep, write_wandb_sweep  # optional: heavy (module docstring)

    sweep = load_sweep(args.sweep, args.overrides)
    if args.wandb_config:
        print(f"W&B sweep definition written to {write_wandb_sweep(sweep, args.wandb_config)}")
        return 0
    outcome = run_sweep(sweep, progress=not args.quiet)
    print("\n".join(outcome.summary_lines()))
    return 1 if outcome.failed else 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    if args.folder and args.results_dir and os.path.normpath(args.folder) != os.path.normpath(args.results_dir):
        raise UsageError(f"`fpbench leaderboard {args.folder} --results-dir {args.results_dir}` names two results "
                         "trees; give one (the folder, or --results-dir).")
    args.results_dir = args.folder or args.results_dir or "results"
    if args.check_submission:
        return cli_share.check_submission(args)
    if args.method:
        raise UsageError("--method is for `fpbench leaderboard --check-submission BUNDLE` only: the leaderboard "
                         "reads result files and never imports a method.")
    if not os.path.isdir(args.results_dir):
        raise UsageError(f"--results-dir {args.results_dir} is not a folder. Run `fpbench run RECIPE` first.")
    from bench.report import (  # optional: heavy (module docstring)
        build_board,
        check_results,
        write_leaderboard,
        write_plots,
        write_site,
    )
    from bench.report.blocks import stale_blocks  # optional: heavy (module docstring)
    from bench.report.frontier_plots import write_frontier_plots  # optional: heavy (module docstring)

    if args.check:
        if args.zoo_dir is not None and not os.path.isdir(args.zoo_dir):
            raise UsageError(f"--zoo-dir {args.zoo_dir} is not a folder; "
                             "name the folder holding the zoos (paths.zoo_dir, e.g. zoo).")
        problems = check_results(args.results_dir, zoo_dir=args.zoo_dir)
        boards: dict[Path, Any] = {}  # generated blocks of README.md / docs drawn from this folder, rebuilt once
        problems += stale_blocks(Path.cwd(), Path(args.results_dir),
                                 lambda d: boards.setdefault(d, build_board(d, budget=args.budget)))
        for line in problems:
            print(line)
        print(f"{'FAILED' if problems else 'OK'}: {len(problems)} problem(s) in {args.results_dir}")
        return 1 if problems else 0
    if args.budget < 1:
        raise UsageError(f"--budget {args.budget} must be a positive number of queries per suspect, e.g. --budget 100.")
    board = build_board(args.results_dir, budget=args.budget)  # read, validated and compared once for every output below
    md, csv = write_leaderboard(args.results_dir, board)
    print(md.read_text())
    if args.html:
        print(f"web page: {write_site(args.results_dir, board)}")
    else:
        write_plots(args.results_dir)
        write_frontier_plots(args.results_dir)  # plots/<zoo>/evasion_cost.png, plots/<zoo>/frontier/<row>.png
    if args.readme:
        print(f"README tables updated: {', '.join(str(p) for p in _update_readme(args, board)) or 'none changed'}")
    if args.wandb:
        from bench.tracking import leaderboard_tracking, log_board  # optional: heavy (W&B, Lightning)

        run_dir = log_board(leaderboard_tracking(args.wandb, args.wandb_dir), board, args.results_dir)
        print(f"W&B: {'run written to ' + run_dir if run_dir else 'not logged (see the error above)'}")
    print(f"leaderboard: {md}, {csv}; evasion frontier: {os.path.join(args.results_dir, 'frontier.md')}; "
          f"plots under {os.path.join(args.results_dir, 'plots')}")
    return 0


def _cmd_frontier(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.results_dir):
        raise UsageError(f"--results-dir {args.results_dir} is not a folder. Run `fpbench run RECIPE` first.")
    if not 0 <= args.fpr < 1:
        raise UsageError(f"--fpr {args.fpr} must be in [0, 1), e.g. 0.01.")
    if args.budget < 1:
        raise UsageError(f"--budget {args.budget} must be a positive number of queries per suspect, e.g. 100.")
    from bench.report.frontier import frontier_document  # optional: heavy (module docstring)

    text = frontier_document(args.results_dir, args.fpr, args.zoo, budget=args.budget)
    if args.zoo is not None and f"## {args.zoo}\n" not in text:
        raise UsageError(f"no result files of zoo '{args.zoo}' under {args.results_dir}; `fpbench frontier` without "
                         "--zoo shows every zoo there.")
    print(text)
    return 0


def _update_readme(args: argparse.Namespace, board: Any) -> list[Path]:
    """The file's full-board block (`leaderboard:start`), if any, and its compact blocks (`board:start`)."""
    readme = Path(args.readme)
    if not readme.is_file():
        raise UsageError(f"--readme {readme} is not a file; name the markdown file that holds the blocks.")
    from bench.report import build_board  # optional: heavy (module docstring)
    from bench.report.blocks import update_blocks  # optional: heavy (module docstring)
    from bench.report.readme import update_readme  # optional: heavy (module docstring)

    before = readme.read_text(encoding="utf-8")
    try:
        if "<!-- leaderboard:start" in before:  # the full-board block (bench.report.readme)
            update_readme(readme, args.results_dir, board)
        boards = {Path(args.results_dir).resolve(): board}
        update_blocks([readme], Path.cwd(),
                      lambda d: boards.setdefault(d.resolve(), build_board(d, budget=args.budget)))
    except ValueError as err:
        raise UsageError(str(err)) from None
    return [readme] if readme.read_text(encoding="utf-8") != before else []


def _cmd_list(args: argparse.Namespace) -> int:
    """One line per entry: name, description; methods, attacks and deployments also say where each comes from
    (built-in, an entry point's distribution) and list the entry points that could not be loaded."""
    if args.family == "archs":
        rows = [(name, description) for name, description in arch_descriptions().items()]  # includes timm:<name>
    elif args.family == "datamodules":
        rows = list(DATAMODULES.describe().items())
    else:
        if args.family == "attacks":
            # optional: the attack registry (its modules import Lightning only when they train)
            from bench.zoo.attacks import ATTACKS

            registry: Registry[Any] = ATTACKS
        else:
            registry = {"methods": METHODS, "deployments": DEPLOYMENTS}[args.family]
        rows = [(name, registry.origin(name), description) for name, description in registry.describe().items()]
        rows += [(name, "broken", why) for name, why in sorted(registry.broken.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([*(f"{cell:<{width}}" for cell, width in zip(row, widths)), row[-1]]))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    print(show_recipe(args.recipe, args.overrides), end="")
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    from bench.perf import run_perf  # optional: heavy (module docstring)

    for name, path in run_perf(args.names, args.results_dir, args.overrides).items():
        print(f"{name}: {path}")
    return 0


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    if args.action in ("export", "pull"):
        return cli_share.fingerprint_share(args)
    missing = [flag for flag, value in cli_share.import_flags(args).items() if value is None]
    if missing:
        raise UsageError(f"`fpbench fingerprint import RECIPE` needs {', '.join(missing)} (docs/byo.md).")
    cfg = load_recipe(args.target, args.overrides)
    from bench.api import import_fingerprint  # optional: heavy (module docstring)
    from bench.fingerprint_import import FingerprintImportError  # optional: heavy (module docstring)

    try:
        import_id, folder = import_fingerprint(cfg, args.method, args.inputs, args.labels)
    except FingerprintImportError as err:
        raise UsageError(str(err)) from None
    print(f"imported {args.method} fingerprint {import_id} -> {folder}")
    print(f"score it: fpbench run {args.target} methods=[{args.method}] methods.{args.method}.fingerprint={import_id}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from bench import verification as vf  # optional: heavy (module docstring)
    from bench.oracle import Oracle  # optional: heavy (module docstring)

    method = cli_share.use_methods([args.method])[0] if args.method else None
    try:  # every input is read and checked before the first query
        loaded = vf.load_fingerprint(args.fingerprint, args.cache_dir, method)
        options = vf.WeightsOptions(mean=_stats(args.mean, "--mean"), std=_stats(args.std, "--std"),
                                    test_acc=args.test_acc, data_dir=args.data_dir,
                                    endpoint={k: v for k, v in (("timeout_s", args.endpoint_timeout),
                                                                ("max_response_bytes", args.endpoint_max_bytes))
                                              if v is not None})
        model, suspect = vf.load_suspect(args.suspect, loaded, args.zoo_dir, args.arch, args.data,
                                         args.endpoint_access, options)
        if loaded.result is not None:
            vf.calibrated_threshold(loaded.result["per_model"], args.fpr)
        self_check = vf.fingerprint_self_check(loaded, args.zoo_dir, args.fpr)
    except vf.VerifyError as err:
        raise UsageError(str(err)) from None
    oracle = Oracle(model, access=loaded.method.access)
    lines = vf.verify_lines(vf.score_suspect(loaded.method, loaded.fingerprint, oracle, loaded.result, args.fpr),
                            loaded, suspect)
    print("\n".join([*lines, vf.self_check_line(self_check, loaded)]))
    return 0


def _stats(text: str | None, flag: str) -> list[float] | None:
    from bench import verification as vf  # optional: heavy (module docstring)
    from bench.suspect_checks import parse_stats  # optional: heavy (module docstring)

    try:
        return parse_stats(text, flag)
    except ValueError as err:
        raise vf.VerifyError(str(err)) from None


COMMANDS = {"zoo": _cmd_zoo, "run": _cmd_run, "sweep": _cmd_sweep, "leaderboard": _cmd_leaderboard, "frontier": _cmd_frontier,
            "list": _cmd_list, "perf": _cmd_perf, "show": _cmd_show, "fingerprint": _cmd_fingerprint,
            "verify": _cmd_verify, "reproduce": cli_share.reproduce, "submit": cli_share.submit,
            "check-method": cli_share.check_method}


def _interrupted_lines(args: argparse.Namespace, argv: Sequence[str], started: float) -> list[str]:
    """What Ctrl-C left behind (models in the manifest, result files written since `started`) and how to resume."""
    lines = ["fpbench: interrupted."]
    try:
        if getattr(args, "recipe", None) is not None and args.command in ("zoo", "run"):
            cfg = load_recipe(args.recipe, args.overrides)
            from bench.zoo.jobs import zoo_root  # optional: heavy (module docstring)
            from bench.zoo.store import ZooStore  # optional: heavy (module docstring)

            store = ZooStore(zoo_root(cfg))
            records = store.records()
            new = [i for i in records
                   if store.checkpoint_path(i).is_file() and store.checkpoint_path(i).stat().st_mtime >= started]
            runs = Path(cfg.paths.results_dir) / "runs" / str(cfg.zoo.name)
            written = [p for p in runs.rglob("*.json") if p.stat().st_mtime >= started] if runs.is_dir() else []
            lines.append(f"kept: {len(records)} finished model(s) in {store.manifest_path} ({len(new)} built by this "
                         f"command; a model still training is not kept); {len(written)} result file(s) written by this "
                         f"command under {runs}.")
    except Exception as err:  # the message must not fail: say what could not be counted
        lines.append(f"(could not count what was kept: {type(err).__name__}: {err})")
    lines.append(f"to resume, rerun the same command: fpbench {shlex.join(argv)}  (built models and cached fingerprints "
                 "are reused; with trials.count > 1 finished (trial, method) results are skipped)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """The `fpbench` command; returns the exit code.

    The console script and `python -m bench` enter through `bench.entry.main`, which imports this
    module and answers an interrupt that comes before the handler below is in force (during the imports).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    _setup_logging(args.quiet)
    tracking_state.reset()  # a W&B fallback of an earlier call in this process does not carry over
    started = time.time()
    try:
        code = COMMANDS[args.command](args)
        for line in tracking_state.sync_lines():  # W&B failures and how to upload offline runs
            print(line)
        return code
    except (ConfigError, RegistryError, UsageError) as err:
        print(f"fpbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        for line in [*_interrupted_lines(args, argv, started), *tracking_state.sync_lines()]:
            print(line, file=sys.stderr)
        return 130
    except Exception as err:  # a failure during work: say what, FPBENCH_DEBUG=1 re-raises it with its traceback
        log.debug("failure", exc_info=True)
        print(f"fpbench: failed: {type(err).__name__}: {err}", file=sys.stderr)
        if os.environ.get("FPBENCH_DEBUG"):
            raise
        return 1
    finally:
        warm = sys.modules.get("bench.zoo.worker_pool")
        if warm is not None:
            warm.release_pool()  # warm zoo workers no build took: stopped now, not waited for at exit
