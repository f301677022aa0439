"""bench.report: leaderboard (deterministic, golden file), plots, result checks.

The golden files are ``tests/golden/leaderboard.{md,csv}`` and ``leaderboard_comparisons.csv``. After an intended change to the
leaderboard format, regenerate them with::

    FPBENCH_UPDATE_GOLDEN=1 pytest tests/test_report.py

and review the diff before committing.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.metrics import BootstrapConfig
from bench.report import build_board, check_results, paper_value, write_leaderboard, write_plots
from bench.results import make_result, result_path, write_result

GOLDEN = Path(__file__).parent / "golden"
ATTACKS = ("ftll", "rtal", "prune")  # Table 2 attacks only: one positives view
KINDS = ("SAST", "SADT", "DAST", "DADT")
# (method, seeds, how far positives' scores are lifted above negatives')
RUNS = (("adv_tra", (0, 1, 2), 0.5), ("ipguard", (0, 1, 2), 0.2), ("akh", (0,), 0.35))



def _version(method: str) -> str:
    """The registered version of a registered method (`--check` flags a row of an older one), else "1"."""
    from bench.methods import METHODS

    return str(METHODS.get(method).version) if method in METHODS else "1"

def synthetic_result(
    method: str, seed: int, lift: float, n: int = 12, fpr_targets: tuple[float, ...] = (0.01, 0.1)
) -> dict[str, Any]:
    """A result on zoo `tiny` (cifar10) with scores from `random.Random`, stable across versions."""
    rng = random.Random(f"{method}-{seed}")
    per_model = []
    for i in range(2 * n):
        positive = i < n
        attack, kind = (ATTACKS[i % 3], None) if positive else (None, KINDS[i % 4])
        per_model.append({
            "model_id": f"m{i:03d}", "role": "positive" if positive else "negative",
            "attack": attack, "kind": kind, "group": attack or kind,
            "score": round(rng.random() * 0.6 + (lift if positive else 0.0), 4), "queries": 100 + 10 * len(method),
        })  # fmt: skip
    return make_result(
        seed=seed,
        method={"name": method, "version": _version(method), "access": "label", "config": {}},
        config={"method": method, "zoo": "tiny"},
        zoo={
            "name": "tiny", "manifest_sha256": "ab" * 32, "dataset": "cifar10",
            "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"},
            "source_id": "src", "source_test_acc": 0.9,
        },  # fmt: skip
        per_model=per_model,
        timing_s={"generate": 2.0 + seed, "verify": 0.5, "total": 2.5 + seed, "fingerprint_cached": False},
        fpr_targets=fpr_targets,
        bootstrap=BootstrapConfig(n=200, seed=seed),
        git_path=None,
    )


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    for method, seeds, lift in RUNS:
        for seed in seeds:
            result = synthetic_result(method, seed, lift)
            write_result(result, result_path(tmp_path, "tiny", method, result["config_sha256"], seed))
    return tmp_path


def test_leaderboard_rows(results_dir: Path) -> None:
    frame = build_board(results_dir).rows
    assert list(frame["method"]) == ["adv_tra", "ipguard", "akh"]  # by rank, the unranked row last
    assert dict(zip(frame["method"], frame["trials"])) == {"adv_tra": 3, "ipguard": 3, "akh": 1}
    rows = frame.set_index("method")
    assert rows.loc["adv_tra", "paper"] == "1.00/1.00/1.00" and rows.loc["akh", "paper"] == ""
    # One trial: the result's own bootstrap CI over suspects; several: a t-interval over trials.
    assert math.isnan(rows.loc["akh", "auc_std"]) and rows.loc["akh", "ci_over"] == "suspects"
    assert rows.loc["akh", "auc_ci_low"] < rows.loc["akh", "auc"] <= rows.loc["akh", "auc_ci_high"]
    assert rows.loc["adv_tra", "ci_over"] == "trials" and rows.loc["adv_tra", "auc_std"] >= 0
    assert rows.loc["adv_tra", "result_files"][0].startswith("runs/tiny/adv_tra/")
    assert (rows.loc["adv_tra", "n_pos"], rows.loc["adv_tra", "n_neg"]) == (12, 12)
    assert len(set(frame["benchmark"])) == 1 and list(frame["variant"]) == list(frame["method"])
    ranks = dict(zip(frame["method"], frame["rank"]))
    assert (ranks["adv_tra"], ranks["ipguard"]) == (1, 2) and pd.isna(ranks["akh"])  # akh: 1 trial, not tested


def test_paper_value_matches_dataset_spelling() -> None:
    assert paper_value("adv_tra", "CIFAR-100") == "1.00/1.00/1.00"
    assert paper_value("adv_tra", "fashion_mnist") == ""


def test_leaderboard_is_byte_identical(results_dir: Path) -> None:
    md, csv = write_leaderboard(results_dir)
    pairs = results_dir / "leaderboard_comparisons.csv"
    first = (md.read_bytes(), csv.read_bytes(), pairs.read_bytes())
    assert write_leaderboard(results_dir) == (md, csv)
    assert (md.read_bytes(), csv.read_bytes(), pairs.read_bytes()) == first


@pytest.mark.parametrize("name", ["leaderboard.md", "leaderboard.csv", "leaderboard_comparisons.csv"])
def test_leaderboard_golden(results_dir: Path, name: str) -> None:
    write_leaderboard(results_dir)
    got = (results_dir / name).read_text(encoding="utf-8")
    golden = GOLDEN / name
    if os.environ.get("FPBENCH_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got, encoding="utf-8")
    assert got == golden.read_text(encoding="utf-8"), f"{name} changed; see this module's docstring to regenerate"


def test_empty_results_dir(tmp_path: Path) -> None:
    md, _ = write_leaderboard(tmp_path)
    assert "No result files found." in md.read_text()
    assert write_plots(tmp_path) == [] and check_results(tmp_path) == []


def test_plots_are_png(results_dir: Path) -> None:
    from matplotlib.image import imread

    paths = write_plots(results_dir)
    names = ["roc.png", "scores_box.png", "groups_heatmap.png"]
    assert paths == [results_dir / "plots" / "tiny" / n for n in names]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert imread(path).shape[0] > 100


def test_check_results_flags_edits(results_dir: Path) -> None:
    assert check_results(results_dir) == []
    path = sorted((results_dir / "runs").rglob("*.json"))[0]
    data = json.loads(path.read_text())
    data["metrics"]["auc"] = 0.999
    path.write_text(json.dumps(data))
    problems = check_results(results_dir)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: metrics.auc")
    del data["per_model"]
    path.write_text(json.dumps(data))
    problems = check_results(results_dir)
    assert len(problems) == 1 and str(path) in problems[0] and "'per_model'" in problems[0]


def _write(root: Path, runs: list[tuple[str, int, float, tuple[float, ...]]]) -> Path:
    for method, seed, lift, targets in runs:
        result = synthetic_result(method, seed, lift, fpr_targets=targets)
        write_result(result, result_path(root, "tiny", method, result["config_sha256"], seed))
    return root


def test_custom_fpr_targets_in_leaderboard_md_csv_html(tmp_path: Path) -> None:
    from bench.report.site import render_site

    for method, seed, lift in (("adv_tra", 0, 0.5), ("adv_tra", 1, 0.5), ("akh", 0, 0.35)):
        result = synthetic_result(method, seed, lift, n=60, fpr_targets=(0.05,))  # 60 negatives certify 5 %
        write_result(result, result_path(tmp_path, "tiny", method, result["config_sha256"], seed))
    md, csv = write_leaderboard(tmp_path)
    text, table = md.read_text(), csv.read_text().splitlines()
    head = next(line for line in text.splitlines() if line.startswith("| zoo"))
    assert "| T5%F |" in head and "T1%F" not in head and "T10%F" not in head and "TPR@0FP" not in head
    assert "- **T5%F**: the largest true-positive rate" in text and "at most 5 %," in text and "n− ≥ 59 for 5 %" in text
    frame = build_board(tmp_path).rows.set_index("method")
    want = sum(synthetic_result("adv_tra", s, 0.5, n=60, fpr_targets=(0.05,))["metrics"]["tpr_at_fpr"]["0.05"]
               for s in (0, 1)) / 2  # fmt: skip
    assert frame.loc["adv_tra", "t5f"] == pytest.approx(want) and not math.isnan(frame.loc["akh", "t5f"])
    assert frame.loc["adv_tra", "t5f_label"] == "T5%F"
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| tiny")]
    assert all(row[head.split(" | ").index("T5%F")] not in ("", "n/a") for row in rows)
    assert "t5f,t5f_std,t5f_ci_low,t5f_ci_high,t5f_label" in table[0] and "t1f" not in table[0]
    page = render_site(tmp_path)
    assert 'data-key="t5f"' in page and ">T5%F<" in page and "n− ≥ 59 for 5 %" in page
    assert 'data-key="t1f"' not in page and ", T5%F 0." in page  # per-file details carry the value too


def test_fpr_targets_union_over_results(tmp_path: Path) -> None:
    root = _write(tmp_path, [("adv_tra", 0, 0.5, (0.05,)), ("akh", 0, 0.35, (0.1, 0.01))])
    frame = build_board(root).rows.set_index("method")
    tprs = [c for c in frame.columns if c.startswith("t") and c.endswith("f") and c != "trials"]
    assert tprs == ["t1f", "t5f", "t10f"]  # ascending, whatever order the results give
    assert math.isnan(frame.loc["adv_tra", "t1f"]) and not math.isnan(frame.loc["akh", "t1f"])
    # 12 negatives certify none of the targets: each figure is the TPR at zero false positives.
    assert frame.loc["akh", "t1f"] == frame.loc["akh", "t10f"] == frame.loc["akh", "tpr0fp"]
    assert set(frame["t1f_label"]) == {"TPR@0FP"}
    md, _ = write_leaderboard(root)
    text = md.read_text()
    assert "| AUC CI | TPR@0FP | ARUC |" in text and "| T1%F |" not in text
    assert "shown instead of T1%F / T5%F / T10%F" in text and "FPR ≤ 22 % at 95 %, n− = 12" in text


def test_run_summary_follows_fpr_targets() -> None:
    from bench.evaluate import BenchmarkOutcome, summary_lines

    result = synthetic_result("akh", 0, 0.35, n=60, fpr_targets=(0.05, 0.2))  # 60 negatives certify 5 % and 20 %
    lines = summary_lines(BenchmarkOutcome(zoo=None, results={"r.json": result}))
    head, cells = lines[0].split(), lines[1].split()
    assert head[:2] == ["method", "AUC"] and "T1%F" not in head
    tpr = result["metrics"]["tpr_at_fpr"]
    assert cells[:2] == ["akh", f"{result['metrics']['auc']:.3f}"]
    assert head.index("T5%F") < head.index("T20%F") and tpr["0.05"] != tpr["0.2"]
    assert lines[1].index(f" {tpr['0.05']:.3f} ") < lines[1].index(f" {tpr['0.2']:.3f} ")  # in the headings' order
    default = summary_lines(BenchmarkOutcome(zoo=None, results={"r.json": synthetic_result("akh", 0, 0.35)}))
    assert "TPR@0FP" in default[0].split() and "T1%F" not in default[0]  # 12 negatives certify neither 1 % nor 10 %
