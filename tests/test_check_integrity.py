"""`fpbench leaderboard --check` recomputes every stored metric (ROC points included), ties a result to its
zoo by the manifest's sha256 and its folder by zoo and method name, and reads result files bounded: an
edited or NaN ROC point, an edited AUC, a renamed or escaping zoo.name and a result linked to /dev/zero
each fail the check with a message naming the file and the problem (issue 24, items 7 and 8)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.config import load_recipe
from bench.evaluate import run_benchmark
from bench.io import FileReadError, name_problem, read_bytes_bounded, sha256_json
from bench.results import read_result
from tests.conftest import SMOKE, smoke_overrides


@pytest.fixture(scope="module")
def measured_smoke(smoke_cfg, smoke_zoo, tmp_path_factory) -> tuple[Path, Path]:
    """(results dir, zoo dir) of one real result: the `random` guard method run on the smoke zoo."""
    root = tmp_path_factory.mktemp("measured")
    cfg = load_recipe(SMOKE, [*smoke_overrides(Path(smoke_cfg.paths.zoo_dir).parent), "methods=[random]",
                              f"paths.cache_dir={root / 'cache'}", f"paths.results_dir={root / 'results'}"])
    run_benchmark(cfg, progress=False)
    return root / "results", Path(smoke_cfg.paths.zoo_dir)


@pytest.fixture
def copied(measured_smoke, tmp_path) -> tuple[Path, Path, Path]:
    """(results dir, zoo dir, the result file): a private copy of the measured results tree."""
    results, zoo_dir = measured_smoke
    shutil.copytree(results, tmp_path / "results")
    (path,) = (tmp_path / "results" / "runs").rglob("*.json")
    return tmp_path / "results", zoo_dir, path


def _edit(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))  # json writes NaN as the (invalid JSON) token NaN, as a hand edit would


def _check(results: Path, capsys: pytest.CaptureFixture[str], zoo_dir: Path | None = None) -> tuple[int, str]:
    """Exit status and output of `fpbench leaderboard --check` (with `--zoo-dir` when given)."""
    extra = ["--zoo-dir", str(zoo_dir)] if zoo_dir is not None else []
    code = main(["leaderboard", "--check", "--results-dir", str(results), *extra])
    return code, capsys.readouterr().out


def _problem_lines(out: str, path: Path) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{path}: ")]


def test_the_unmodified_result_passes(copied, capsys):
    results, zoo_dir, path = copied
    assert read_result(path)["zoo"]["name"] == "smoke"
    assert _check(results, capsys) == (0, f"OK: 0 problem(s) in {results}\n")
    assert _check(results, capsys, zoo_dir) == (0, f"OK: 0 problem(s) in {results}\n")


def _shift_roc_point(d: dict[str, Any]) -> None:
    tpr = d["metrics"]["roc"]["tpr"]
    tpr[1] = tpr[1] + 0.05 if tpr[1] < 0.9 else tpr[1] - 0.05


@pytest.mark.parametrize(("change", "message"), [
    (_shift_roc_point, "metrics.roc.tpr[1] is"),
    (lambda d: d["metrics"]["roc"]["fpr"].__setitem__(2, float("nan")),
     "metrics.roc.fpr[2] is nan: a result holds finite numbers only"),
    (lambda d: d["metrics"]["roc"]["fpr"].pop(), "metrics.roc.fpr has"),
    (lambda d: d["metrics"].__setitem__("auc", d["metrics"]["auc"] + 0.01), "metrics.auc is"),
    (lambda d: d["metrics"]["groups"]["ftll"].__setitem__("label", 0), "metrics.groups['ftll'].label is 0 but per_model gives 1"),
    (lambda d: d["metrics"].__setitem__("resolution_note", None), "metrics.resolution_note is None but per_model gives"),
    (lambda d: d["config"].__setitem__("note", float("inf")), "config.note is inf: a result holds finite numbers only"),
])
def test_every_stored_metric_is_recomputed(copied, capsys, change, message):
    results, _, path = copied
    _edit(path, change)
    code, out = _check(results, capsys)
    assert code == 1 and any(message in line for line in _problem_lines(out, path)), out


def test_a_renamed_zoo_is_caught_by_folder_and_by_manifest_hash(copied, capsys):
    results, zoo_dir, path = copied
    _edit(path, lambda d: d["zoo"].__setitem__("name", "other"))
    code, out = _check(results, capsys)
    assert code == 1 and any("is in runs/smoke/random/ but zoo.name 'other' and method.name 'random' put it in "
                             "runs/other/random/" in line for line in _problem_lines(out, path)), out
    # Rewritten consistently: moved to its new folder, config and its hash (hence the name) rewritten too.
    data = json.loads(path.read_text())
    data["config"]["zoo"]["name"] = "other"
    data["config_sha256"] = sha256_json(data["config"])
    moved = results / "runs" / "other" / "random" / f"{data['config_sha256'][:8]}-s{data['seed']}.json"
    moved.parent.mkdir(parents=True)
    moved.write_text(json.dumps(data))
    path.unlink()
    assert _check(results, capsys)[0] == 0  # nothing in the file contradicts the rename
    code, out = _check(results, capsys, zoo_dir)
    assert code == 1 and any(f"zoo.name is 'other' but zoo.manifest_sha256 {data['zoo']['manifest_sha256'][:12]}… is "
                             f"that of the zoo in {zoo_dir / 'smoke'}" in line for line in _problem_lines(out, moved)), out


def test_a_result_whose_zoo_is_not_found_by_hash_fails(copied, capsys, tmp_path):
    results, zoo_dir, path = copied
    _edit(path, lambda d: d["zoo"].__setitem__("manifest_sha256", "e" * 64))
    code, out = _check(results, capsys, zoo_dir)
    assert code == 1 and any("zoo.manifest_sha256 eeeeeeeeeeee… matches neither" in line
                             for line in _problem_lines(out, path)), out
    empty = tmp_path / "no_zoos"
    empty.mkdir()
    code, out = _check(results, capsys, empty)  # neither the hash nor the name: an error, not a skip
    assert code == 1 and any(f"no zoo under {empty} has manifest sha256 eeeeeeeeeeee…, and none is named 'smoke'" in line
                             for line in _problem_lines(out, path)), out


def test_a_zoo_name_leaving_the_results_tree_is_refused(copied, capsys):
    results, zoo_dir, path = copied
    _edit(path, lambda d: d["zoo"].__setitem__("name", "../../outside"))
    for zoos in (None, zoo_dir):
        code, out = _check(results, capsys, zoos)
        lines = _problem_lines(out, path)
        assert code == 1 and any("zoo.name is '../../outside' but must be letters" in line for line in lines), out
    assert any("zoo.name is '../../outside' but zoo.manifest_sha256" in line for line in lines), out  # found by hash
    assert not (results.parent / "outside").exists()


def test_a_result_linked_to_dev_zero_is_refused_unread(copied, capsys):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero on this system")
    results, _, path = copied
    link = path.with_name("zero.json")
    link.symlink_to("/dev/zero")
    code, out = _check(results, capsys)
    assert code == 1 and _problem_lines(out, link) == [f"{link}: not a regular file (a device, pipe, socket or a link "
                                                       "to one), so not a result file; replace it with the result file "
                                                       "itself or delete it."], out
    assert not _problem_lines(out, path)  # the good file beside it still passes


# -- the bounded reader and names ---------------------------------------------------------------
def test_read_bytes_bounded(tmp_path):
    small = tmp_path / "small.json"
    small.write_bytes(b"0123456789")
    assert read_bytes_bounded(small, 10, "thing") == b"0123456789"
    with pytest.raises(FileReadError, match=f"^{small}: 10 bytes, over the 9-byte bound of a thing"):
        read_bytes_bounded(small, 9, "thing")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(FileReadError, match=f"^{fifo}: not a regular file"):  # refused before an open that would block
        read_bytes_bounded(fifo, 10, "thing")
    with pytest.raises(FileReadError, match="not a regular file"):
        read_bytes_bounded(tmp_path, 10, "thing")
    with pytest.raises(FileNotFoundError):
        read_bytes_bounded(tmp_path / "missing.json", 10, "thing")


@pytest.mark.parametrize(("name", "ok"), [("smoke", True), ("_x", True), ("a-b.c", True), ("-x", False),
                                          ("--check", False), (".hidden", False), ("..", False), ("a/b", False)])
def test_names_cannot_start_like_an_option(name, ok):
    assert (name_problem(name) is None) == ok


@pytest.mark.parametrize("change, message", [
    (lambda d: d["method"].update(version="0"), "version 0 is not the registered version"),
    (lambda d: d.update(schema_version=0), "schema_version 0 is not supported"),
])
def test_a_row_from_an_older_method_or_schema_fails(copied, capsys, change, message):
    results, _, path = copied
    _edit(path, change)
    code, out = _check(results, capsys)
    assert code == 1 and any(message in line for line in _problem_lines(out, path)), out
