"""The `fpbench` command line's parser, light to import (argparse and the budget default only).

`bench.entry` answers `--help`, `--version` and a mistyped command from here without importing torch,
Lightning or W&B (`bench.cli`, which runs the commands, takes seconds to import).
"""

from __future__ import annotations

import argparse

from bench import DISTRIBUTION
from bench.budgets import DEFAULT_BUDGET

EXAMPLES = {
    "zoo": "fpbench zoo recipes/quickstart.yaml --list zoo.source.epochs=3",
    "run": "fpbench run recipes/quickstart.yaml methods=[adv_tra,akh] eval.fpr_targets=[0.05]",
    "sweep": "fpbench sweep smoke --wandb-config sweep.yaml",
    "leaderboard": "fpbench leaderboard --results-dir local_results --html",
    "frontier": "fpbench frontier --zoo fmnist_paper",
    "list": "fpbench list methods",
    "perf": "fpbench perf adv_tra_batching",
    "show": "fpbench show recipes/smoke.yaml methods=[adv_tra] methods.adv_tra.n_fingerprints=10",
    "fingerprint": "fpbench fingerprint import recipes/smoke.yaml --method adv_tra --inputs X.npy --labels Y.npy",
    "verify": "fpbench verify --fingerprint local_results/runs/smoke/akh/1a2b3c4d-s0.json --suspect 9f8e7d6c5b4a",
    "reproduce": "fpbench reproduce --zoo quickstart --pull-zoo quickstart.tar --pull-fingerprints fingerprints-quickstart.tar",
    "submit": "fpbench submit local_results --zoo fmnist_paper --out submission-fmnist_paper.tar",
    "check-method": "fpbench check-method my_methods.agreement:Agreement n_samples=20",
}
METHOD_REF_HELP = ("import and register this method class (package.module:Class) first, as a recipe naming it does, "
                   "for results made with it: a name read from a file is never imported (repeatable)")
# options that take the next argument
VALUE_OPTIONS = ("--results-dir", "--wandb-config", "--readme", "--zoo-dir", "--method", "--inputs", "--labels",
                 "--fingerprint", "--suspect", "--arch", "--data", "--cache-dir", "--fpr", "--endpoint-access", "--name",
                 "--mean", "--std", "--test-acc", "--data-dir", "--endpoint-timeout", "--endpoint-max-bytes", "--budget", "--out",
                 "--zoo", "--pull-zoo", "--pull-fingerprints", "--results-out", "--check-submission", "--wandb", "--wandb-dir",
                 "--submitter")


def version_text() -> str:
    """``fpbench <version> (torch <version>)``, from the installed distributions (no torch import)."""
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"fpbench {installed(DISTRIBUTION)} (torch {installed('torch')})"


def _subparser(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    # SUPPRESS: an absent -q here must not reset a -q given before the subcommand.
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and the final output")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The `fpbench` argument parser: every command, option and help text."""
    examples = "\n".join(f"  {line}" for line in EXAMPLES.values())
    parser = argparse.ArgumentParser(
        prog="fpbench", description="Benchmark DNN model fingerprinting methods.",
        epilog=f"examples:\n{examples}\n\nkey=value recipe overrides may go anywhere after the subcommand; "
               "`fpbench COMMAND -h` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final output")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)
    zoo = _subparser(sub, "zoo", "build (or list) the zoo a recipe describes")
    zoo.add_argument("recipe", help="a recipe; or `import` to import a published zoo: fpbench zoo import DIR --name NAME; "
                     "or `export NAME` / `pull URI` to share a built zoo as one archive (docs/sharing.md)")
    zoo.add_argument("folder", nargs="?", help="with `import`: the folder in the layout of docs/byo.md; with `export`: "
                     "the zoo's name; with `pull`: a path, file://, http(s)://, wandb://entity/project/artifact:version "
                     "or hf://owner/repo[/file]")
    zoo.add_argument("--list", action="store_true", help="print the planned zoo and what is built; build nothing")
    zoo.add_argument("--name", help="with `import`: the new zoo's name; with `pull`: its folder name (default: the "
                     "archive's)")
    zoo.add_argument("--zoo-dir", default="zoo", help="with `import`, `export`, `pull`: where zoos live (paths.zoo_dir, "
                     "default zoo)")
    zoo.add_argument("--out", metavar="PATH", help="with `export`: the archive to write (default NAME.tar)")
    run = _subparser(sub, "run", "build the zoo if needed, evaluate methods, write results")
    run.add_argument("recipe")
    sweep = _subparser(sub, "sweep", "a grid/random sweep of recipe keys, one result per point and trial")
    sweep.add_argument("sweep", help="a sweep file, or the name of a built-in sweep (smoke: recipes/sweeps/smoke.yaml)")
    sweep.add_argument("--wandb-config", metavar="PATH", help="write a W&B sweep definition to PATH and exit")
    board = _subparser(sub, "leaderboard", "regenerate results/leaderboard.md (+ .csv) from result files")
    board.add_argument("folder", nargs="?", metavar="RESULTS_DIR",
                       help="results tree to aggregate, as --results-dir (`fpbench leaderboard --check results/`)")
    board.add_argument("--results-dir", default=None,
                       help="results tree to aggregate (default: results, the published board; yours: local_results)")
    board.add_argument("--check", action="store_true", help="re-validate every result file; fail on any problem")
    board.add_argument("--zoo-dir", metavar="DIR", help="with --check: also check each result against the zoo "
                       "under DIR whose manifest has its zoo.manifest_sha256 (none found is a problem): manifest, "
                       "checkpoint sha256, roles, test_acc")
    board.add_argument("--check-submission", metavar="BUNDLE", help="re-score every suspect of a submission "
                       "(fpbench submit) on the zoo under --zoo-dir; refuse it on any difference (docs/submitting.md)")
    board.add_argument("--method", metavar="REF", action="append", default=[], help=f"with --check-submission: "
                       f"{METHOD_REF_HELP}")
    board.add_argument("--html", action="store_true", help="also write results/site/index.html")
    board.add_argument("--readme", metavar="PATH", help="rewrite the leaderboard block of this README")
    board.add_argument("--budget", type=int, default=DEFAULT_BUDGET, metavar="QUERIES",
                       help=f"queries per suspect of the matched-budget column AUC@QUERIES (default {DEFAULT_BUDGET}; "
                            "docs/metrics.md)")
    board.add_argument("--wandb", choices=("offline", "online"), metavar="MODE",
                       help="also log the board to W&B as one run (tables, figures, the CSV): offline (no account; "
                            "`wandb sync` later) or online (docs/leaderboard.md, Files)")
    board.add_argument("--wandb-dir", default=".cache/fpbench", metavar="DIR",
                       help="with --wandb: where W&B writes its files (default .cache/fpbench, as a run's)")
    frontier = _subparser(sub, "frontier", "evasion cost per attack family: detection against accuracy drop")
    frontier.add_argument("--results-dir", default="results",
                          help="results tree (default: results, the published board; yours: local_results)")
    frontier.add_argument("--zoo", metavar="NAME", help="only this zoo's rows (default: every zoo)")
    frontier.add_argument("--fpr", type=float, default=0.01,
                          help="FPR target of the calibrated threshold (default 0.01; docs/frontier.md)")
    frontier.add_argument("--budget", type=int, default=100, metavar="N",
                          help="queries per suspect of the matched-budget table (default 100; one of the "
                               "recipe's eval.budgets, else it reads 'not measured')")
    lst = _subparser(sub, "list", "what is registered, with one-line descriptions")
    lst.add_argument("family", choices=["methods", "attacks", "deployments", "archs", "datamodules"])
    perf = _subparser(sub, "perf", "run the performance benchmarks; write <results-dir>/perf/<name>.json")
    perf.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    perf.add_argument("--results-dir", default="local_results",
                      help="where perf/<name>.json goes (default local_results; the published figures: results)")
    show = _subparser(sub, "show", "print the resolved, validated recipe and every method's effective config")
    show.add_argument("recipe")
    fingerprint = _subparser(sub, "fingerprint", "import a fingerprint made elsewhere into the cache (docs/byo.md); "
                             "export or pull a board's fingerprints as one archive (docs/sharing.md)")
    fingerprint.add_argument("action", choices=["import", "export", "pull"])
    fingerprint.add_argument("target", help="with `import`: the recipe whose data (C, H, W, classes) and paths.cache_dir "
                             "it is for; with `export`: the results tree whose fingerprints to export (e.g. results); "
                             "with `pull`: a path, file://, http(s)://, wandb:// or hf:// URI of an archive")
    fingerprint.add_argument("--method", help="with `import`: the method that scores it (adv_tra, ipguard, akh, cae)")
    fingerprint.add_argument("--inputs", help="with `import`: .npy or .safetensors: adv_tra [N,S,C,H,W], others [N,C,H,W]")
    fingerprint.add_argument("--labels", help="with `import`: .npy or .safetensors: the source's labels, [N,S] or [N]")
    fingerprint.add_argument("--cache-dir", default=".cache/fpbench", help="with `export`, `pull`: the fingerprint "
                             "cache (paths.cache_dir, default .cache/fpbench)")
    fingerprint.add_argument("--zoo", metavar="NAME", help="with `export`: only the results of this zoo")
    fingerprint.add_argument("--out", metavar="PATH", help="with `export`: the archive to write (default "
                             "fingerprints-<zoo>.tar)")
    fingerprint.add_argument("--results-out", metavar="DIR", help="with `pull`: also write the archive's result "
                             "files under DIR/runs/")
    verify = _subparser(sub, "verify", "score one suspect with a fingerprint; decide at the calibrated threshold")
    verify.add_argument("--fingerprint", required=True, help="a result JSON (its cached fingerprint and negatives) "
                        "or a cached fingerprint folder")
    verify.add_argument("--suspect", required=True, help="a model id of the result's zoo, a weights file "
                        "(.safetensors, .pt/.pth state dict) with --arch, or an endpoint (http(s)://..., py:module:fn)")
    verify.add_argument("--arch", help="the weights file's architecture (fpbench list archs)")
    verify.add_argument("--method", metavar="REF", help="the method class (package.module:Class) that made the "
                        "fingerprint, imported and registered first: a name read from a result or fingerprint is "
                        "never imported")
    verify.add_argument("--endpoint-access", choices=["labels", "probabilities"], default="labels",
                        help="what an endpoint suspect (http(s)://..., py:module:function) returns (default labels)")
    verify.add_argument("--data", help="the task (datamodule name) when --fingerprint is a folder, e.g. digits")
    verify.add_argument("--cache-dir", default=".cache/fpbench", help="the run's paths.cache_dir (default .cache/fpbench)")
    verify.add_argument("--zoo-dir", default="zoo", help="the run's paths.zoo_dir, for a zoo model id (default zoo)")
    verify.add_argument("--fpr", type=float, default=0.01, help="FPR target of the calibrated threshold (default 0.01)")
    verify.add_argument("--mean", help="the weights file's input normalisation, per channel (e.g. 0.5 or 0,0,0); "
                        "default: the file's own, else the source's when --arch is the source's, else the dataset's")
    verify.add_argument("--std", help="with --mean: the normalisation's per-channel std (e.g. 1 for a model that "
                        "normalises inside forward together with --mean 0)")
    verify.add_argument("--test-acc", type=float, help="the weights file's test accuracy as its owner recorded it: "
                        "refused when the measured one differs by more than 0.02")
    verify.add_argument("--endpoint-timeout", type=float, help="an endpoint's deadline per request in seconds "
                        "(connect, send and every read together; default 30)")
    verify.add_argument("--endpoint-max-bytes", type=int, help="the longest endpoint answer read (default: scaled to "
                        "the rows and classes asked)")
    verify.add_argument("--data-dir", default="data", help="the run's paths.data_dir, to measure the suspect's test "
                        "accuracy (default data)")
    reproduce = _subparser(sub, "reproduce", "re-score a board's suspects with its own zoo and fingerprints; say per "
                           "result file whether every score is identical (docs/sharing.md)")
    reproduce.add_argument("--results-dir", default="results", help="the board's results tree (default results)")
    reproduce.add_argument("--zoo", metavar="NAME", help="only this zoo's results (e.g. quickstart)")
    reproduce.add_argument("--pull-zoo", metavar="URI", help="first pull this zoo archive into --zoo-dir")
    reproduce.add_argument("--pull-fingerprints", metavar="URI", help="first pull this fingerprint archive into "
                           "--cache-dir")
    reproduce.add_argument("--zoo-dir", default="zoo", help="where the zoo is (paths.zoo_dir, default zoo)")
    reproduce.add_argument("--cache-dir", default=".cache/fpbench", help="where the fingerprints are (paths.cache_dir, "
                           "default .cache/fpbench)")
    reproduce.add_argument("--out", metavar="PATH", help="the JSON report (default "
                           "local_results/reproduce/<zoo or all>.json)")
    reproduce.add_argument("--method", metavar="REF", action="append", default=[], help=METHOD_REF_HELP)
    submit = _subparser(sub, "submit", "bundle a board's result files, fingerprints and provenance for a published "
                        "benchmark (docs/submitting.md)")
    submit.add_argument("results_dir", help="the results tree of your runs (e.g. local_results)")
    submit.add_argument("--zoo", metavar="NAME", required=True, help="the published benchmark's zoo (e.g. fmnist_paper)")
    submit.add_argument("--cache-dir", default=".cache/fpbench", help="the runs' paths.cache_dir (default .cache/fpbench)")
    submit.add_argument("--out", metavar="PATH", help="the bundle to write (default submission-NAME.tar)")
    submit.add_argument("--method", metavar="REF", action="append", default=[], help=METHOD_REF_HELP)
    submit.add_argument("--submitter", metavar="TEXT", help="who submits (e.g. 'Ada Lovelace <ada@lab.org>'): the "
                        "board marks the accepted rows with it")
    check = _subparser(sub, "check-method", "run the method contract checks (bench.testing) on one method over a "
                       "tiny digits world; one PASS/FAIL line per check (docs/extending.md)")
    check.add_argument("method", metavar="REF", help="a registered method name (fpbench list methods) or a class "
                       "of your own, package.module:Class")
    for p in (zoo, run, sweep, show, fingerprint, reproduce):
        p.add_argument("overrides", nargs="*", help="key=value recipe overrides (omegaconf dotlist), anywhere")
    check.add_argument("overrides", nargs="*", help="key=value fields of the method's Config (keep it small: the "
                       "checks generate twice), e.g. n_samples=20")
    perf.set_defaults(overrides=[])
    submit.set_defaults(overrides=[])
    return parser
