"""The `fpbench` command line: parse, load the recipe, call one library function, print its result.

Exit codes: 0 success; 2 bad recipe or argument (raised before any work); 1 failure during work.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from bench.config import ConfigError, load_recipe
from bench.registry import RegistryError

log = logging.getLogger("bench")


class UsageError(ValueError):
    """A bad command-line argument (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpbench", description="Benchmark DNN model fingerprinting methods.")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final output")
    sub = parser.add_subparsers(dest="command", required=True)
    zoo = sub.add_parser("zoo", help="build (or list) the zoo a recipe describes")
    zoo.add_argument("recipe")
    zoo.add_argument("--list", action="store_true", help="print the planned zoo and what is built; build nothing")
    run = sub.add_parser("run", help="build the zoo if needed, evaluate methods, write results")
    run.add_argument("recipe")
    sweep = sub.add_parser("sweep", help="a grid/random sweep of recipe keys, one result per point and trial")
    sweep.add_argument("sweep")
    sweep.add_argument("--wandb-config", metavar="PATH", help="write a W&B sweep definition to PATH and exit")
    board = sub.add_parser("leaderboard", help="regenerate results/leaderboard.md (+ .csv) from result files")
    board.add_argument("--results-dir", default="results",
                       help="results tree to aggregate (default: results, the published board; yours: local_results)")
    board.add_argument("--check", action="store_true", help="re-validate every result file; fail on any problem")
    board.add_argument("--html", action="store_true", help="also write results/site/index.html")
    board.add_argument("--readme", metavar="PATH", help="rewrite the leaderboard block of this README")
    lst = sub.add_parser("list", help="what is registered, with one-line descriptions")
    lst.add_argument("family", choices=["methods", "attacks", "archs", "datamodules"])
    perf = sub.add_parser("perf", help="run the performance benchmarks; write results/perf/<name>.json")
    perf.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    perf.add_argument("--results-dir", default="results")
    for p in (zoo, run, sweep, perf):
        p.add_argument("overrides", nargs="*", help="key=value recipe overrides (omegaconf dotlist)")
    return parser


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    # W&B agents pass `--key=value`; argparse would take those for options, so collect them first.
    argv = list(argv)
    extra = [a for a in argv if a.startswith("--") and "=" in a and a.split("=", 1)[0][2:] not in ("results-dir", "wandb-config")]
    args = _parser().parse_args([a for a in argv if a not in extra])
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *extra]
    return args


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    for noisy in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # Lightning vs newer torch, harmless


def _cmd_zoo(args: argparse.Namespace) -> int:
    from bench.evaluate import method_pool_specs
    from bench.zoo.build import build_zoo, prepare
    from bench.zoo.listing import zoo_table

    cfg = load_recipe(args.recipe, args.overrides)
    pools = method_pool_specs(cfg)  # defender pools of the recipe's methods belong to its zoo
    if args.list:
        _, plan, store = prepare(cfg, pools)
        print(zoo_table(plan, store))
        return 0
    _check_paths(cfg)
    report = build_zoo(cfg, pools, progress=_progress(cfg, args), logger_factory=_training_loggers(cfg))
    print(zoo_table(report.plan, report.store))
    print(f"\nzoo {report.plan.name}: {len(report.built)} built, {len(report.skipped)} already built "
          f"({report.seconds:.1f} s) -> {report.store.root}")
    return 1 if report.failed else 0


def _progress(cfg, args: argparse.Namespace) -> bool:  # noqa: ANN001
    return bool(cfg.compute.trainer.enable_progress_bar) and not args.quiet


def _training_loggers(cfg):  # noqa: ANN001, ANN202
    from bench.tracking import training_logger_factory

    return training_logger_factory(cfg)


def _check_paths(cfg) -> None:  # noqa: ANN001
    for key in ("zoo_dir", "results_dir", "cache_dir"):
        path = cfg.paths[key]
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"paths.{key}={path} exists and is not a folder; choose another path.")


def _cmd_run(args: argparse.Namespace) -> int:
    from bench import published as pub
    from bench.evaluate import run_benchmark, summary_lines

    cfg = load_recipe(args.recipe, args.overrides)
    if cfg.paths.published_dir is None and pub.default_published_dir() is None:  # an installed package
        found = pub.default_published_dir(args.recipe)  # then the checkout holding the recipe
        if found is not None:
            cfg = load_recipe(args.recipe, [*args.overrides, f"paths.published_dir={found}"])
    _check_paths(cfg)
    if pub.writes_published(cfg) and not cfg.paths.overwrite_published:
        log.warning("paths.results_dir=%s is the published benchmark: a result there whose numbers differ from "
                    "this run's is kept, not replaced (paths.overwrite_published=true replaces it).", cfg.paths.results_dir)
    outcome = run_benchmark(cfg, progress=_progress(cfg, args))
    print("\n".join(summary_lines(outcome)))
    folder = pub.published_dir(cfg)
    print("\n".join(pub.comparison_lines(pub.compare_with_published({**outcome.results, **outcome.refused}, folder), folder)))
    return 1 if outcome.failed else 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bench.sweep import load_sweep, run_sweep, write_wandb_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    if args.wandb_config:
        print(f"W&B sweep definition written to {write_wandb_sweep(sweep, args.wandb_config)}")
        return 0
    outcome = run_sweep(sweep, progress=not args.quiet)
    print("\n".join(outcome.summary_lines()))
    return 1 if outcome.failed else 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.report import check_results, write_leaderboard, write_plots

    if not os.path.isdir(args.results_dir):
        raise UsageError(f"--results-dir {args.results_dir} is not a folder. Run `fpbench run RECIPE` first.")
    if args.check:
        problems = check_results(args.results_dir)
        for line in problems:
            print(line)
        print(f"{'FAILED' if problems else 'OK'}: {len(problems)} problem(s) in {args.results_dir}")
        return 1 if problems else 0
    md, csv = write_leaderboard(args.results_dir)
    print(md.read_text())
    if args.html:
        from bench.report import write_site  # draws the plots too

        print(f"web page: {write_site(args.results_dir)}")
    else:
        write_plots(args.results_dir)
    if args.readme:
        from bench.report.readme import update_readme

        try:
            print(f"README table updated: {update_readme(args.readme, args.results_dir)}")
        except ValueError as err:
            raise UsageError(str(err)) from None
    print(f"leaderboard: {md}, {csv}; plots under {os.path.join(args.results_dir, 'plots')}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.family == "methods":
        from bench.methods import METHODS as registry
    elif args.family == "attacks":
        from bench.zoo.attacks import ATTACKS as registry
    elif args.family == "archs":
        from bench.nets import ARCHS as registry
    else:
        from datamodules import DATAMODULES as registry
    if args.family == "archs":
        from bench.nets import arch_descriptions

        descriptions = arch_descriptions()  # includes the timm:<name> entry
    else:
        descriptions = registry.describe()
    width = max(len(n) for n in descriptions)
    for name, description in descriptions.items():
        print(f"{name:<{width}}  {description}")
    return 0


def _cmd_perf(args: argparse.Namespace) -> int:
    from bench.perf import run_perf

    for name, path in run_perf(args.names, args.results_dir, args.overrides).items():
        print(f"{name}: {path}")
    return 0


COMMANDS = {"zoo": _cmd_zoo, "run": _cmd_run, "sweep": _cmd_sweep, "leaderboard": _cmd_leaderboard,
            "list": _cmd_list, "perf": _cmd_perf}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fpbench` console script; returns the exit code."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.quiet)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, RegistryError, UsageError) as err:
        print(f"fpbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fpbench: interrupted; finished models and results are kept, rerun to resume.", file=sys.stderr)
        return 130
    except Exception as err:  # a failure during work: say what, keep the traceback for -v debugging
        log.debug("failure", exc_info=True)
        print(f"fpbench: failed: {type(err).__name__}: {err}", file=sys.stderr)
        if os.environ.get("FPBENCH_DEBUG"):
            raise
        return 1
