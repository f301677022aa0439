"""The command line: exit codes, error messages before any work, listings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, SMOKE, smoke_overrides


def fpbench(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=cwd or REPO,
                          timeout=300)


def test_unknown_recipe_key_exits_2_and_writes_nothing(tmp_path):
    out = fpbench("zoo", str(SMOKE), *smoke_overrides(tmp_path), "zoo.sourse.epochs=3", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "sourse" in out.stderr and "source" in out.stderr and "negatives" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_method_exits_2_with_suggestion(tmp_path):
    out = fpbench("run", str(SMOKE), *smoke_overrides(tmp_path), "methods=[ipgaurd]", cwd=tmp_path)
    assert out.returncode == 2
    assert "Did you mean 'ipguard'" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_list_families():
    out = fpbench("list", "attacks")
    assert out.returncode == 0
    for name in ("ftll", "ftal", "rtll", "rtal", "prune", "adv_train", "extract", "quantize"):
        assert any(line.startswith(name + " ") for line in out.stdout.splitlines()), name


def test_zoo_list_shows_plan_without_building(tmp_path):
    out = fpbench("zoo", str(SMOKE), *smoke_overrides(tmp_path), "--list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "planned" in out.stdout and "SAST" in out.stdout and "source" in out.stdout
    assert not (tmp_path / "zoo" / "smoke" / "manifest.jsonl").exists()


def test_overrides_after_a_flag_reach_the_recipe(tmp_path):
    # Before: argparse refused `zoo.x=1` after `--list` ("unrecognized arguments"); now it is an override,
    # so the recipe check names the bad key.
    out = fpbench("zoo", str(SMOKE), "--list", *smoke_overrides(tmp_path), "zoo.x=1", cwd=tmp_path)
    assert out.returncode == 2 and "Unknown key 'x'" in out.stderr and "unrecognized" not in out.stderr
    good = fpbench("zoo", str(SMOKE), "--list", *smoke_overrides(tmp_path), "zoo.name=after_flag", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "after_flag" in good.stdout


def test_version_names_fpbench_and_torch():
    from importlib.metadata import version

    from bench import DISTRIBUTION

    out = fpbench("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"fpbench {version(DISTRIBUTION)} (torch {version('torch')})"


def test_help_has_an_example_per_subcommand():
    from bench.cli import EXAMPLES

    top = fpbench("-h")
    assert top.returncode == 0 and all(example in top.stdout for example in EXAMPLES.values())
    for command in ("show", "zoo"):
        out = fpbench(command, "-h")
        assert out.returncode == 0 and f"example:\n  {EXAMPLES[command]}" in out.stdout


def test_quiet_after_the_subcommand(tmp_path):
    from bench.cli import _parse

    assert _parse(["list", "methods", "-q"]).quiet and _parse(["-q", "list", "methods"]).quiet
    assert not _parse(["list", "methods"]).quiet
    args = _parse(["zoo", str(SMOKE), "a=1", "-q", "--list", "b=2", "--c=3"])
    assert args.quiet and args.list and args.overrides == ["a=1", "b=2", "--c=3"]
    assert _parse(["leaderboard", "--results-dir", "x=y"]).results_dir == "x=y"  # an option's value stays one
    out = fpbench("list", "archs", "-q")
    assert out.returncode == 0 and "convnet" in out.stdout


def test_show_prints_resolved_recipe_with_method_defaults(tmp_path):
    import yaml

    from bench.config import load_recipe, to_dict

    overrides = [*smoke_overrides(tmp_path), "methods=[cae,akh]", "eval.fpr_targets=[0.05]"]
    out = fpbench("show", str(SMOKE), *overrides, "-q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == to_dict(load_recipe(SMOKE, overrides))  # the whole resolved recipe
    lines = out.stdout.splitlines()
    assert "  n_samples: 100  # default" in lines  # akh's default; the smoke recipe does not set it
    assert "  pool_seeds: 1  # set (default: 2)" in lines  # cae: the recipe's value, the default beside it
    assert list(tmp_path.iterdir()) == []  # shows, builds nothing


def test_show_bad_recipe_exits_2(tmp_path):
    out = fpbench("show", str(SMOKE), *smoke_overrides(tmp_path), "methods=[ipgaurd]", cwd=tmp_path)
    assert out.returncode == 2 and "Did you mean 'ipguard'" in out.stderr and out.stdout == ""


@pytest.mark.parametrize("argv, code", [(["--version"], 0), (["--help"], 0), (["run", "-h"], 0), (["rnu"], 2), ([], 2)])
def test_help_version_and_a_mistyped_command_answer_without_heavy_imports(argv, code):
    """The entry answers these from the light parser: no torch, Lightning or W&B is imported (issue 29)."""
    script = ("import sys, contextlib, io\nfrom bench.entry import main\n"
              "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
              f"    code = main({argv!r})\n"
              "print(code, sorted(m for m in ('torch', 'pytorch_lightning', 'wandb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split(None, 1) == [str(code), "[]\n"]


@pytest.mark.parametrize("argv", [["verify", "--fingerprint", "r.json", "--suspect", "m"], ["reproduce"],
                                  ["submit", "results", "--zoo", "smoke"],
                                  ["leaderboard", "--check-submission", "b.tar", "--zoo-dir", "zoo"]])
def test_an_unimportable_method_reference_exits_2_before_any_work(argv, tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--method", "no_such_pkg_xyz.mod:Cls"]) == 2
    err = capsys.readouterr().err
    assert ("--method no_such_pkg_xyz.mod:Cls: method 'no_such_pkg_xyz.mod:Cls': cannot import module "
            "'no_such_pkg_xyz.mod'") in err and "put its folder on PYTHONPATH" in err
    assert list(tmp_path.iterdir()) == []  # nothing pulled, written or reported


def test_check_method_has_help_and_an_example():
    from bench.cli import EXAMPLES

    out = fpbench("check-method", "-h")
    assert out.returncode == 0 and "PASS/FAIL line per check" in out.stdout
    assert f"example:\n  {EXAMPLES['check-method']}" in out.stdout
