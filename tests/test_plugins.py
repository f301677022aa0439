"""Methods, attacks and deployments from outside the repository (issue 29, item 3): entry points loaded on a
registry's first read, `package.module:Class` references in recipes, origins in `fpbench list`, and the
example package of docs/examples installed and run end to end."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import plugins
from bench.config import ConfigError, load_recipe
from bench.io import _SAFE_NAME, SAFE_NAME_RULE
from bench.methods import METHODS, FingerprintMethod
from bench.methods.random_guard import RandomGuard
from bench.registry import Registry, RegistryError
from bench.results import result_path
from tests.conftest import REPO, SMOKE, smoke_overrides

EXAMPLE = REPO / "docs" / "examples" / "fpbench_example_method"
MODULE = '''
from bench.methods.random_guard import RandomGuard


class Mine(RandomGuard):
    """Mine: a copy of the random guard in a user's module."""

    name = "mine"


def not_a_class():
    return 1
'''


class Good(RandomGuard):
    """Good: an entry point's method."""

    name = "good"


class Misnamed(RandomGuard):
    """Misnamed: its `name` differs from its entry point's."""

    name = "other"


def candidate(name: str, obj: object = None, error: Exception | None = None) -> plugins.Candidate:
    def load() -> object:
        if error is not None:
            raise error
        return obj

    return plugins.Candidate(name, f"pkg.mod:{name}", "pkg-dist 1.2", load)


def test_the_key_rule_is_the_folder_name_rule():
    assert plugins.SAFE_KEY.pattern == _SAFE_NAME.pattern and plugins.SAFE_KEY_RULE == SAFE_NAME_RULE


def test_entry_points_load_on_first_read_and_broken_ones_are_skipped(monkeypatch, caplog):
    found = [candidate("good", Good), candidate("random", Good), candidate("gone", error=ImportError("no module x")),
             candidate("plain", object), candidate("misnamed", Misnamed), candidate("bad name!", Good)]
    calls = []
    monkeypatch.setattr(plugins, "find_entry_points", lambda group: calls.append(group) or found)
    registry: Registry[type[FingerprintMethod]] = Registry("method")
    registry.add("random", RandomGuard)
    registry.use_entry_points("fpbench.methods", FingerprintMethod)
    assert calls == []  # nothing is imported before the registry is read
    with caplog.at_level(logging.WARNING, logger="bench.registry"):
        assert registry.names() == ["good", "random"]
        assert registry.names() == ["good", "random"]
    assert calls == ["fpbench.methods"]  # loaded once
    assert registry.origin("random") == "built-in" and registry.origin("good") == "entry point pkg-dist 1.2"
    assert registry.get("random") is RandomGuard  # a colliding entry point never replaces a built-in
    assert sorted(registry.broken) == ["bad name!", "gone", "misnamed", "plain", "random"]
    assert "already registered: rename the entry point" in registry.broken["random"]
    assert "cannot be imported (ImportError: no module x): fix the package" in registry.broken["gone"]
    assert "not a subclass of bench.methods.base.FingerprintMethod" in registry.broken["plain"]
    assert "says name = 'other'" in registry.broken["misnamed"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 5 and all("of pkg-dist 1.2" in w and "uninstall pkg-dist" in w for w in warnings)
    with pytest.raises(RegistryError, match="'gone' is an entry point that could not be loaded: pkg-dist 1.2"):
        registry.get("gone")


def test_a_reference_registers_under_a_safe_key(tmp_path, monkeypatch):
    (tmp_path / "user_methods.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    key = METHODS.resolve("user_methods:Mine")
    try:
        assert key == "user_methods-Mine" and METHODS.origin(key) == "reference user_methods:Mine"
        assert METHODS.resolve("user_methods:Mine") == key and METHODS.resolve(key) == key
        assert result_path(tmp_path, "smoke", key, "ab" * 32, 0).parent.name == key
        cfg = load_recipe(SMOKE, smoke_overrides(tmp_path, "methods=[user_methods:Mine,random]"))
        assert [m["name"] for m in cfg.methods] == [key, "random"]
    finally:
        METHODS._items.pop(key, None)
        METHODS._descriptions.pop(key, None)


@pytest.mark.parametrize(("name", "message"), [
    ("no_such_module_xyz:Cls", "cannot import module 'no_such_module_xyz': ModuleNotFoundError"),
    ("user_methods:Missing", "module 'user_methods' has no attribute 'Missing'"),
    ("user_methods:not_a_class", "it is a function, not a class"),
    ("bench.methods.base:Fingerprint", "class Fingerprint is not a subclass of bench.methods.base.FingerprintMethod"),
    ("bench.methods.base:FingerprintMethod", "is abstract: implement _generate, _score"),
    ("user methods:Mine", "must read 'package.module:Class'"),
])
def test_a_bad_reference_is_a_recipe_error(tmp_path, monkeypatch, name, message):
    (tmp_path / "user_methods.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="method '" + name.split(":")[0]) as err:
        load_recipe(SMOKE, smoke_overrides(tmp_path, f"methods=[{name!r}]"))
    assert message in str(err.value)


def test_a_reference_entry_is_validated_like_a_built_in(tmp_path, monkeypatch):
    (tmp_path / "user_methods.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"include: {SMOKE}\nmethods:\n  - {{name: 'user_methods:Mine', n_sample: 3}}\n")
    try:
        with pytest.raises(ConfigError, match="Unknown key 'n_sample'.*in method 'user_methods-Mine'"):
            load_recipe(recipe, smoke_overrides(tmp_path))
    finally:
        METHODS._items.pop("user_methods-Mine", None)
        METHODS._descriptions.pop("user_methods-Mine", None)


def test_list_shows_origins_and_broken_entry_points(monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setitem(METHODS.broken, "zz_broken", "pkg-dist 1.2: it cannot be imported (ImportError: x)")
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["adv_tra", "built-in"]
    assert lines[-1].split()[:2] == ["zz_broken", "broken"] and lines[-1].endswith("(ImportError: x)")


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_the_example_package_installs_and_runs_end_to_end(tmp_path, smoke_zoo, smoke_root):
    source = shutil.copytree(EXAMPLE, tmp_path / "example")  # pip builds in the source folder: build a copy
    site = tmp_path / "site"
    run(["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site),
         str(source)], dict(os.environ), tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    listed = run(["-m", "bench", "list", "methods"], env, tmp_path).stdout
    assert any(line.split()[:4] == ["example_agreement", "entry", "point", "fpbench-example-method"]
               for line in listed.splitlines()), listed
    check = "from bench.testing import check_method; check_method('example_agreement', {'n_samples': 20}); print('ok')"
    assert run(["-c", check], env, tmp_path).stdout.strip() == "ok"
    reference = "fpbench_example_method.method:ExampleAgreement"
    overrides = smoke_overrides(tmp_path, f"paths.zoo_dir={smoke_root / 'zoo'}",
                                f"methods=[example_agreement,{reference}]")
    run(["-m", "bench", "run", str(SMOKE), *overrides], env, tmp_path)
    runs = tmp_path / "results" / "runs" / "smoke"
    assert sorted(p.name for p in runs.iterdir()) == ["example_agreement", "fpbench_example_method.method-ExampleAgreement"]
    assert all(len(list(folder.glob("*.json"))) == 1 for folder in runs.iterdir())
    run(["-m", "bench", "leaderboard", "--results-dir", str(tmp_path / "results"), "--check"], env, tmp_path)


def test_an_uninstalled_example_is_unknown_with_the_reference_hint(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown method 'example_agreement'.*package\.module:Class"):
        load_recipe(SMOKE, smoke_overrides(tmp_path, "methods=[example_agreement]"))


# -- a method named by reference, after the process that ran it (issue 29: verify, reproduce, submissions) -----
REFERENCE = "fpbench_example_method.method:ExampleAgreement"
REFERENCE_KEY = "fpbench_example_method.method-ExampleAgreement"


def forget(key: str) -> None:
    """Unregister `key`: a later process knows a reference only when it is named again."""
    for table in (METHODS._items, METHODS._descriptions, METHODS._origins):
        table.pop(key, None)


@pytest.fixture(scope="module")
def reference_board(smoke_zoo, smoke_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A smoke board of one method named by reference (the example package on sys.path), then forgotten."""
    from bench.evaluate import run_benchmark

    root = tmp_path_factory.mktemp("reference-board")
    recipe = root / "recipe.yaml"  # noisier inputs than the default's: its fingerprint passes the self-check here
    recipe.write_text(f"include: {SMOKE}\nmethods:\n  - {{name: '{REFERENCE}', n_samples: 100, noise: 0.3}}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLE / "src"))
        cfg = load_recipe(recipe, smoke_overrides(smoke_root, f"paths.results_dir={root / 'results'}",
                                                  f"paths.cache_dir={root / 'cache'}"))
        run_benchmark(cfg, progress=False)
    forget(REFERENCE_KEY)
    [result] = (root / "results" / "runs" / "smoke" / REFERENCE_KEY).glob("*.json")
    return {"root": root, "result": result, "cache": root / "cache", "zoo_dir": smoke_root / "zoo",
            "data_dir": smoke_root / "data"}


@pytest.fixture
def example_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    yield
    forget(REFERENCE_KEY)


def test_verify_a_reference_methods_result_with_method(reference_board, example_importable, capsys):
    from bench.cli import main

    result = json.loads(reference_board["result"].read_text())
    positive = next(m["model_id"] for m in result["per_model"] if m["role"] == "positive")
    argv = ["verify", "--fingerprint", str(reference_board["result"]), "--suspect", positive, "--cache-dir",
            str(reference_board["cache"]), "--zoo-dir", str(reference_board["zoo_dir"]), "--data-dir",
            str(reference_board["data_dir"]), "-q"]
    assert main(argv) == 2  # the name in the result is never imported
    assert f"pass --method {REFERENCE} (it imports that module" in capsys.readouterr().err
    assert main([*argv, "--method", "akh"]) == 2
    assert f"measured by '{REFERENCE_KEY}': drop --method, or give --method {REFERENCE}" in capsys.readouterr().err
    assert main([*argv, "--method", REFERENCE]) == 0
    out = capsys.readouterr().out
    assert f"fingerprint: {reference_board['result']} (example_agreement" in out
    score = next(m["score"] for m in result["per_model"] if m["model_id"] == positive)
    assert f"score: {score:.6g}" in out and "decision: " in out


def submission_argv(board: dict[str, Path], bundle: Path) -> list[str]:
    return ["submit", str(board["root"] / "results"), "--zoo", "smoke", "--cache-dir", str(board["cache"]), "--out",
            str(bundle), "-q"]


def test_reproduce_and_submit_a_reference_method(reference_board, example_importable, tmp_path, capsys):
    from bench.cli import main

    reproduce = ["reproduce", "--results-dir", str(reference_board["root"] / "results"), "--cache-dir",
                 str(reference_board["cache"]), "--zoo-dir", str(reference_board["zoo_dir"]), "--out",
                 str(tmp_path / "reproduce.json"), "-q"]
    assert main(reproduce) == 2 and f"pass --method {REFERENCE}" in capsys.readouterr().err
    assert main([*reproduce, "--method", REFERENCE]) == 0, capsys.readouterr()
    assert "1 identical, 0 differ, 0 not re-scored" in capsys.readouterr().out
    forget(REFERENCE_KEY)
    submit = submission_argv(reference_board, tmp_path / "submission.tar")
    assert main(submit) == 2 and f"pass --method {REFERENCE}" in capsys.readouterr().err
    assert main([*submit, "--method", REFERENCE]) == 0 and (tmp_path / "submission.tar").is_file()


def test_check_a_submission_of_a_reference_method(reference_board, example_importable, tmp_path, capsys):
    from bench.cli import main

    bundle = tmp_path / "submission.tar"
    assert main([*submission_argv(reference_board, bundle), "--method", REFERENCE]) == 0
    forget(REFERENCE_KEY)  # the maintainer's process: it has not seen the class
    capsys.readouterr()
    check = ["leaderboard", "--check-submission", str(bundle), "--zoo-dir", str(reference_board["zoo_dir"]), "-q"]
    assert main(check) == 2 and f"pass --method {REFERENCE}" in capsys.readouterr().err
    assert main([*check, "--method", REFERENCE]) == 0
    assert "ACCEPTED" in capsys.readouterr().out


def test_method_is_refused_where_nothing_reads_a_method(capsys):
    from bench.cli import main

    assert main(["leaderboard", "--results-dir", "results", "--method", REFERENCE]) == 2
    assert "--method is for `fpbench leaderboard --check-submission BUNDLE` only" in capsys.readouterr().err
    assert REFERENCE_KEY not in METHODS  # refused before anything was imported


def test_a_key_reads_back_as_its_reference():
    assert plugins.key_reference(REFERENCE_KEY) == REFERENCE and plugins.key_reference("akh") is None
    assert "pass --method package.module:Class" in plugins.unregistered_fix("example_agreement")
