"""The wheel stands alone (issue 29): built recipes ship as package data and run by name outside a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from bench import DISTRIBUTION
from bench.builtin_recipes import builtin_names, is_builtin_name, recipes_folder
from bench.config import ConfigError, load_recipe
from tests.conftest import REPO

SOURCES = ("pyproject.toml", "README.md", "bench", "datamodules", "recipes")  # what a wheel is built from


def _package_folders(root: Path) -> set[str]:
    """Every folder under bench/ and datamodules/ holding Python or the page's assets (CSS, JS, templates), as a package name."""
    found = set()
    for top in ("bench", "datamodules"):
        for folder in [root / top, *(p for p in (root / top).rglob("*") if p.is_dir())]:
            if folder.name != "__pycache__" and any(f.suffix in (".py", ".css", ".js", ".html") for f in folder.iterdir()):
                found.add(".".join(folder.relative_to(root).parts))
    return found


def test_pyproject_lists_every_package() -> None:
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _package_folders(REPO) | {"fpbench_recipes", "fpbench_recipes.sweeps"}
    assert setuptools["package-dir"] == {"fpbench_recipes": "recipes"}


def test_bare_name_loads_the_packaged_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no recipes/ here: the name alone finds it
    assert recipes_folder() is not None and {"quickstart", "smoke", "cifar10", "cifar100"} <= set(builtin_names())
    cfg = load_recipe("smoke", ["zoo.name=by_name"])
    assert cfg.zoo.name == "by_name" and Path(cfg.paths.recipe_dir) == recipes_folder()
    assert cfg.paths.zoo_dir == "zoo" and cfg.paths.results_dir == "local_results"  # relative to the current folder
    cifar100 = load_recipe("cifar100")  # includes cifar10.yaml, which includes paper_zoo.yaml, beside it
    assert cifar100.data.name == "cifar100" and len(cifar100.zoo.negatives) == len(load_recipe("cifar10").zoo.negatives)


def test_unknown_name_lists_the_builtin_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"Recipe 'quikstart' is neither a file nor a built-in recipe\. "
                                          r"Built-in recipes: .*quickstart, smoke"):
        load_recipe("quikstart")
    with pytest.raises(ConfigError, match="Recipe file not found"):  # a path stays a path
        load_recipe("quikstart.yaml")


def test_a_file_of_that_name_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").write_text(f"include: {(REPO / 'recipes' / 'smoke.yaml').as_posix()}\nzoo: {{name: mine}}\n")
    assert not is_builtin_name("smoke") and is_builtin_name("quickstart")
    assert not is_builtin_name("recipes/smoke") and not is_builtin_name("smoke.yml")
    assert load_recipe("smoke").zoo.name == "mine"
    assert load_recipe(REPO / "recipes" / "smoke.yaml").zoo.name == "smoke"


def _run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """The wheel, built from a copy of the checkout's sources (no build/ or egg-info left in the checkout)."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist", src], tmp, env)
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


def _check_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert wheel.name.startswith(DISTRIBUTION.replace("-", "_") + "-")
    expected = {p.relative_to(REPO).as_posix() for top in ("bench", "datamodules") for p in (REPO / top).rglob("*")
                if p.suffix in (".py", ".css", ".js", ".html") and "__pycache__" not in p.parts}
    expected |= {"fpbench_recipes/" + p.relative_to(REPO / "recipes").as_posix() for p in (REPO / "recipes").rglob("*.yaml")}
    assert {"bench/report/static/site.css", "bench/report/templates/page.html", "fpbench_recipes/quickstart.yaml",
            "fpbench_recipes/sweeps/smoke.yaml"} <= expected
    assert expected - names == set()


def _fresh_venv(tmp: Path, env: dict[str, str]) -> Path:
    """A venv outside the checkout that sees this venv's packages (torch ...) as a plain path, so the
    editable install's own .pth finder is not run and `bench` can come only from the wheel."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (purelib / "checkout_venv.pth").write_text("".join(f"{p}\n" for p in ours))
    return python


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    wheel = _build_wheel(tmp_path, env)
    _check_wheel_contents(wheel)
    python = _fresh_venv(tmp_path, env)
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel], tmp_path, env)
    work = tmp_path / "work"
    work.mkdir()
    where = _run([python, "-c", "import bench, datamodules, fpbench_recipes; "
                  "print(bench.__file__, datamodules.__file__, *fpbench_recipes.__path__, sep='\\n')"], work, env)
    assert all(Path(line).resolve().is_relative_to(tmp_path / "venv") for line in where.stdout.split()), where.stdout
    fpbench = python.parent / "fpbench"
    version = _run([fpbench, "--version"], work, env)
    assert version.stdout.startswith("fpbench 0.1.0 (torch ")
    assert "akh" in _run([fpbench, "list", "methods"], work, env).stdout
    run = _run([fpbench, "run", "smoke", "methods=[akh,random]", "tracking.wandb.mode=disabled", "eval.progress=false",
                "compute.trainer.enable_progress_bar=false"], work, env, timeout=1200)
    results = sorted((work / "local_results").rglob("*.json"))
    assert {p.parent.name for p in results} >= {"akh", "random"}, run.stdout
    assert (work / "zoo" / "smoke" / "manifest.jsonl").is_file()
    assert "published results: none found" in run.stdout  # no checkout: nothing to compare with, no failure
    page = _run([fpbench, "leaderboard", "--results-dir", "local_results", "--html"], work, env)  # templates from the wheel
    assert "<!DOCTYPE html>" in (work / "local_results" / "site" / "index.html").read_text(), page.stdout
