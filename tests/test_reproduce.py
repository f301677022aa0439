"""`fpbench fingerprint export|pull`, `fpbench reproduce` and submissions (bench/fingerprint_archive.py,
bench/reproduce.py, bench/submission.py).

One smoke board (the session's smoke zoo, three methods, one of them pooled) is run once per module;
its fingerprints are exported once, and hostile variants of that archive are rewritten in memory.
A refused pull must install nothing; reproduce must neither train nor generate.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import load_recipe
from bench.evaluate import run_benchmark
from bench.fingerprint_archive import ArchiveError, export_fingerprints, pull_fingerprints
from bench.report.reproduce_block import reproduce_block
from bench.reproduce import DIFFERS, IDENTICAL, NOT_RESCORED, ReproduceError, reproduce, write_report
from bench.submission import submit
from tests.conftest import SMOKE, smoke_overrides
from tests.tar_helpers import flip, members, rehash, rewrite

METHODS = "methods=[akh,ipguard,cae]"  # cae: a pooled method, so the zoo's pool models must be there too


def files_of(root: Path) -> dict[str, str]:
    """Every file under `root` -> its sha256."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def board(smoke_zoo, smoke_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A smoke board: results and cache of its own, on the session's zoo."""
    root = tmp_path_factory.mktemp("board")
    cfg = load_recipe(SMOKE, smoke_overrides(smoke_root, METHODS, f"paths.results_dir={root / 'results'}",
                                             f"paths.cache_dir={root / 'cache'}"))
    run_benchmark(cfg, progress=False)
    return {"results": root / "results", "cache": root / "cache", "zoo_dir": smoke_root / "zoo"}


@pytest.fixture(scope="module")
def archive(board, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_fingerprints(board["results"], board["cache"], tmp_path_factory.mktemp("fp") / "fp.tar").path


def test_export_pull_installs_the_same_fingerprints_and_results(board, archive, tmp_path):
    index = json.loads(members(archive)[0][1])
    assert index["format"] == "fpbench-fingerprint-archive" and index["results"] == 3 and index["zoos"] == ["smoke"]
    assert len(index["fingerprints"]) == 3
    report = pull_fingerprints(str(archive), tmp_path / "cache", results_out=tmp_path / "pulled", progress=False)
    assert (report.installed, report.identical, len(report.results_written)) == (3, 0, 3)
    for folder in index["fingerprints"]:  # byte for byte the board's cache entries
        assert files_of(tmp_path / "cache" / folder) == files_of(board["cache"] / folder)
    again = pull_fingerprints(str(archive), tmp_path / "cache", progress=False)
    assert (again.installed, again.identical) == (0, 3)
    # the same board exports to the same bytes
    assert export_fingerprints(board["results"], board["cache"], tmp_path / "again.tar").sha256 == report.sha256


def test_pulled_results_equal_the_board(board, archive, tmp_path):
    pull_fingerprints(str(archive), tmp_path / "cache", results_out=tmp_path / "pulled", progress=False)
    pulled = files_of(tmp_path / "pulled" / "runs")
    original = {k: v for k, v in files_of(board["results"] / "runs").items() if k.endswith(".json")}
    assert pulled == original


@pytest.mark.parametrize("case", ["flipped byte", "rehashed fingerprint", "extra member", "another result"])
def test_a_tampered_archive_installs_nothing(archive, tmp_path, case):
    def edit(items):
        if case == "flipped byte":  # the index no longer matches the member
            i = next(i for i, (m, _) in enumerate(items) if m.name.endswith("fingerprint.safetensors"))
            items[i] = (items[i][0], flip(items[i][1]))
            return items
        if case == "rehashed fingerprint":  # the index fixed too: the fingerprint's own sha256.json still disagrees
            i = next(i for i, (m, _) in enumerate(items) if m.name.endswith("fingerprint.safetensors"))
            items[i] = (items[i][0], flip(items[i][1]))
            return rehash(items)
        if case == "extra member":
            info = items[-1][0]
            stray = type(info)(info.name.rsplit("/", 1)[0] + "/run.py")
            return rehash([*items, (stray, b"import os\n")])
        # a result listed for one fingerprint that measured another
        index = json.loads(items[0][1])
        folders = list(index["fingerprints"])
        moved = index["fingerprints"][folders[0]]["results"].pop()
        index["fingerprints"][folders[1]]["results"].append(moved)
        return [(items[0][0], json.dumps(index).encode()), *items[1:]]

    bad = rewrite(archive, tmp_path / "bad.tar", edit)
    cache = tmp_path / "cache"
    (cache / "fingerprints").mkdir(parents=True)
    (cache / "fingerprints" / "keep.txt").write_text("mine")
    before = files_of(cache)
    with pytest.raises(ArchiveError) as err:
        pull_fingerprints(str(bad), cache, results_out=tmp_path / "pulled", progress=False)
    expected = {"flipped byte": "expects", "rehashed fingerprint": "not a usable fingerprint",
                "extra member": "belongs to no listed", "another result": "measured another fingerprint"}[case]
    assert expected in str(err.value)
    assert files_of(cache) == before and not (tmp_path / "pulled").exists()


def test_pull_refuses_a_different_fingerprint_under_the_same_key(archive, board, tmp_path):
    index = json.loads(members(archive)[0][1])
    folder = next(iter(index["fingerprints"]))
    target = tmp_path / "cache" / folder
    shutil.copytree(board["cache"] / folder, target)
    (target / "fingerprint.json").write_text("{}")
    before = files_of(tmp_path / "cache")
    with pytest.raises(ArchiveError, match="already holds another fingerprint"):
        pull_fingerprints(str(archive), tmp_path / "cache", progress=False)
    assert files_of(tmp_path / "cache") == before


def test_export_refuses_a_missing_or_replaced_fingerprint(board, tmp_path):
    with pytest.raises(ArchiveError, match="not usable"):
        export_fingerprints(board["results"], tmp_path / "empty-cache", tmp_path / "x.tar")
    results = tmp_path / "results"
    shutil.copytree(board["results"], results)
    path = next((results / "runs").rglob("*.json"))
    data = json.loads(path.read_text())
    data["fingerprint"]["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ArchiveError, match="regenerated since"):
        export_fingerprints(results, board["cache"], tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


def test_reproduce_from_pulled_fingerprints_is_identical(board, archive, tmp_path, capsys):
    code = main(["reproduce", "--results-dir", str(board["results"]), "--pull-fingerprints", str(archive),
                 "--cache-dir", str(tmp_path / "cache"), "--zoo-dir", str(board["zoo_dir"]),
                 "--out", str(tmp_path / "tree" / "reproduce" / "smoke.json"), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads((tmp_path / "tree" / "reproduce" / "smoke.json").read_text())
    assert report["counts"] == {IDENTICAL: 3, DIFFERS: 0, NOT_RESCORED: 0}
    assert all(f["fingerprint_identical"] and f["differing"] == 0 and f["suspects"] == 18 for f in report["files"])
    assert "3 identical, 0 differ" in out
    assert str(tmp_path) not in json.dumps(report["files"])  # paths relative to the results tree


def test_reproduce_reports_an_edited_score_by_how_much(board, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(board["results"], results)
    path = next(p for p in (results / "runs").rglob("*.json") if "/akh/" in p.as_posix())
    data = json.loads(path.read_text())
    data["per_model"][3]["score"] += 0.25
    path.write_text(json.dumps(data))
    report = reproduce(results, zoo_dir=board["zoo_dir"], cache_dir=board["cache"], progress=False)
    edited = next(f for f in report.files if f.method == "akh")
    assert (edited.status, edited.differing) == (DIFFERS, 1)
    assert edited.max_abs_diff == pytest.approx(0.25)
    assert [f.status for f in report.files if f.method != "akh"] == [IDENTICAL, IDENTICAL]


def test_reproduce_never_generates_or_trains(board, smoke_root, tmp_path):
    with pytest.raises(ReproduceError, match="never generates"):
        reproduce(board["results"], zoo_dir=board["zoo_dir"], cache_dir=tmp_path / "empty", progress=False)
    assert not (tmp_path / "empty" / "fingerprints").exists()
    with pytest.raises(ReproduceError, match="never trains"):
        reproduce(board["results"], zoo_dir=tmp_path / "no-zoo", cache_dir=board["cache"], progress=False)
    assert not any((tmp_path / "no-zoo").rglob("*.safetensors"))


def test_an_override_that_changes_the_measurement_is_not_rescored(board):
    report = reproduce(board["results"], zoo_dir=board["zoo_dir"], cache_dir=board["cache"],
                       overrides=["eval.fpr_targets=[0.05]"], progress=False)
    assert [f.status for f in report.files] == [NOT_RESCORED] * 3
    assert "another config_sha256" in report.files[0].note


def test_the_generated_block_shows_each_report(board, tmp_path):
    tree = tmp_path / "tree"
    for name, overrides in (("smoke.json", []), ("smoke-other.json", ["eval.fpr_targets=[0.05]"])):
        report = reproduce(board["results"], "smoke", board["zoo_dir"], board["cache"], overrides, progress=False)
        write_report(report, tree / "reproduce" / name)
    body = reproduce_block(tree, "smoke", lambda rel: f"../x/{rel}")
    lines = body.strip().splitlines()
    assert len(lines) == 4  # header, separator, two reports
    assert lines[2].startswith("| [smoke-other.json](../x/reproduce/smoke-other.json) |")
    assert lines[2].endswith("| 3 | 0 | 0 | 3 | 0 of 0 | 0 | 0 |")  # nothing re-scored under another measurement
    assert lines[3].endswith("| 3 | 3 | 0 | 0 | 0 of 54 | 0 | 0 |")
    assert "No `fpbench reproduce` report of zoo `other`" in reproduce_block(tree, "other", str)



# -- submissions (bench/submission.py) ------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(board, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return submit(board["results"], "smoke", board["cache"], tmp_path_factory.mktemp("sub") / "sub.tar").path


def test_a_faithful_submission_is_accepted(board, bundle, capsys):
    index = json.loads(members(bundle)[0][1])
    assert set(index["submission"]["methods"]) == {"akh", "ipguard", "cae"}
    assert all(len(m["source_sha256"]) == 64 for m in index["submission"]["methods"].values())
    code = main(["leaderboard", "--check-submission", str(bundle), "--zoo-dir", str(board["zoo_dir"]), "-q"])
    assert code == 0 and "ACCEPTED" in capsys.readouterr().out


@pytest.mark.parametrize("edit", ["score", "version"])
def test_a_submission_with_one_altered_score_or_another_version_is_refused(board, bundle, tmp_path, capsys, edit):
    def alter(items):
        i = next(i for i, (m, _) in enumerate(items) if m.name.startswith("results/") and "/akh/" in m.name)
        if edit == "score":
            result = json.loads(items[i][1])
            result["per_model"][0]["score"] += 1e-6
            items[i] = (items[i][0], json.dumps(result).encode())
            return rehash(items)
        index = json.loads(items[0][1])
        index["submission"]["methods"]["akh"]["version"] = "0"
        return [(items[0][0], json.dumps(index).encode()), *items[1:]]

    bad = rewrite(bundle, tmp_path / "bad.tar", alter)
    code = main(["leaderboard", "--check-submission", str(bad), "--zoo-dir", str(board["zoo_dir"]), "-q"])
    out = capsys.readouterr().out
    assert code == 1 and "REFUSED" in out
    assert ("1 of 18 suspects" if edit == "score" else "method akh: submitted with version 0") in out


def test_a_plain_fingerprint_archive_is_not_a_submission(board, archive, capsys):
    code = main(["leaderboard", "--check-submission", str(archive), "--zoo-dir", str(board["zoo_dir"]), "-q"])
    assert code == 2 and "not a submission" in capsys.readouterr().err


def test_a_pulled_submission_marks_its_rows_and_check_watches_the_record(board, tmp_path, capsys):
    """`submit --submitter`, then the maintainer's `fingerprint pull --results-out`: the board marks exactly the
    rows whose files the record lists (Markdown, CSV), and `--check` flags a dangling entry."""
    from bench.report import build_board, write_leaderboard
    from bench.submitted import SUBMISSIONS_FILE, read_submissions, record_submission

    bundle = tmp_path / "ada.tar"
    code = main(["submit", str(board["results"]), "--zoo", "smoke", "--cache-dir", str(board["cache"]), "--out",
                 str(bundle), "--submitter", "Ada | Lab", "-q"])
    assert code == 0
    published = tmp_path / "published"
    capsys.readouterr()
    assert main(["fingerprint", "pull", str(bundle), "--cache-dir", str(tmp_path / "cache"), "--results-out",
                 str(published), "-q"]) == 0
    assert f"marked as submitted in {published / SUBMISSIONS_FILE}" in capsys.readouterr().out
    record = read_submissions(published)
    assert len(record) == 3 and {entry["submitter"] for entry in record.values()} == {"Ada | Lab"}
    own = next(rel for rel in record if "/cae/" in rel)  # pretend the maintainers ran cae themselves
    (published / SUBMISSIONS_FILE).unlink()
    record_submission(published, [rel for rel in record if rel != own], "Ada | Lab", "ab" * 32, None)
    rows = build_board(published).rows
    assert set(rows.loc[rows["method"] == "cae", "submitted_by"]) == {""}
    assert set(rows.loc[rows["method"] != "cae", "submitted_by"]) == {"Ada | Lab"}
    md, csv = write_leaderboard(published)
    assert "(submitted: Ada \\| Lab)" in md.read_text() and "submitted_by" in csv.read_text().splitlines()[0]
    assert main(["leaderboard", "--check", "--results-dir", str(published)]) == 0
    gone = next(rel for rel in record if rel != own)
    (published / gone).unlink()
    capsys.readouterr()
    assert main(["leaderboard", "--check", "--results-dir", str(published)]) == 1
    assert f"entry {gone} names no result file" in capsys.readouterr().out
