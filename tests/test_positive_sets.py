"""bench.report.positive_sets and the leaderboard's `positives` views (`all`, `paper`), on constructed
results whose answers are known, and on the published quickstart results (read only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.metrics import BootstrapConfig, compute_metrics
from bench.report import build_board, write_leaderboard
from bench.report import positive_sets as ps
from bench.report.site import render_site
from bench.results import make_result, result_path, write_result

REPO = Path(__file__).resolve().parent.parent
BOOT = {"n": 200, "confidence": 0.9, "seed": 3}  # the results' eval.bootstrap: the view must reuse it


def result(
    method: str, suspects: list[tuple[str, str | None, float]], seed: int = 0, positives: list | None = None
) -> dict[str, Any]:
    """A result on zoo `tiny`; ``suspects`` are ``(role, attack label or negative kind, score)``."""
    per_model = [{"model_id": f"m{i:03d}", "role": role, "attack": label if role == "positive" else None,
                  "kind": None if role == "positive" else label, "group": label, "score": score, "queries": 10,
                  "extras": {"agreement": score / 2}}
                 for i, (role, label, score) in enumerate(suspects)]  # fmt: skip
    config = {"seed": seed, "data": {"name": "cifar10"}, "eval": {"bootstrap": BOOT},
              "zoo": {"name": "tiny", "source": {"seed": 0}, "positives": positives or []},
              "method": {"name": method}}  # fmt: skip
    return make_result(
        seed=seed, method={"name": method, "version": "1", "access": "label", "config": {}}, config=config,
        zoo={"name": "tiny", "manifest_sha256": "ab" * 32, "dataset": "cifar10",
             "split_hashes": {"owner": "o", "attacker": "a", "independent": "i", "test": "t"},
             "source_id": "src", "source_test_acc": 0.9},
        per_model=per_model, timing_s={"generate": 1.0, "verify": 0.5, "total": 1.5, "fingerprint_cached": False},
        bootstrap=BootstrapConfig(**BOOT), git_path=None,
    )  # fmt: skip


# 2 Table 2 positives, 1 extraction positive scoring below every negative, 2 negatives.
MIXED = [("positive", "ftll", 0.9), ("positive", "prune(rate=0.4)", 0.8),
         ("positive", "extract(labels_kind=hard)", 0.05), ("negative", "SAST", 0.1), ("negative", "DADT", 0.2)]  # fmt: skip


def write(root: Path, res: dict[str, Any]) -> Path:
    path = result_path(root, "tiny", res["method"]["name"], res["config_sha256"], res["seed"])
    write_result(res, path)
    return path


def test_table2_constant_names_registered_attacks() -> None:
    from bench.zoo.attacks import ATTACKS

    assert ps.PAPER_TABLE2_ATTACKS < set(ATTACKS.names())  # a renamed attack fails here
    assert "extract" in ATTACKS.names() and "quantize" in ATTACKS.names()  # the others exist, not in Table 2


@pytest.mark.parametrize(("label", "paper"), [
    ("ftll", True), ("adv_train(eps=0.01)", True), ("prune(rate=0.4)+rtal", True),  # chain of Table 2 steps
    ("prune(rate=0.2)+extract", False), ("extract(labels_kind=soft)", False), ("quantize(bits=8)", False),
    ("adv_train(eps=1e+16)", True), (None, False), ("", False),  # a '+' inside parentheses does not split
    ("strong", True), ("stolen", False),  # recipe labels, resolved through zoo.positives
])  # fmt: skip
def test_is_paper_positive(label: str | None, paper: bool) -> None:
    config = {"zoo": {"positives": [{"label": "strong", "chain": [{"attack": ["ftal", "rtll"]}, {"attack": "prune"}]},
                                    {"label": "stolen", "attack": "extract"}]}}  # fmt: skip
    assert ps.is_paper_positive(label, ps.custom_labels(config)) is paper


def test_paper_view_known_answers_and_equals_direct_metrics() -> None:
    res = result("m", MIXED)
    assert res["metrics"]["auc"] == pytest.approx(4 / 6)  # the extraction positive loses both pairs
    assert res["metrics"]["tpr_at_fpr"]["0.01"] == pytest.approx(2 / 3)
    view = ps.paper_view(res)
    assert view is not None and [r["model_id"] for r in view["per_model"]] == ["m000", "m001", "m003", "m004"]
    assert view["metrics"]["auc"] == 1.0 and view["metrics"]["tpr_at_fpr"] == {"0.01": 1.0, "0.1": 1.0}
    assert (view["metrics"]["n_positive"], view["metrics"]["n_negative"]) == (2, 2)
    kept = [MIXED[i] for i in (0, 1, 3, 4)]
    direct = compute_metrics([s for _, _, s in kept], [1, 1, 0, 0], [g for _, g, _ in kept], fpr_targets=[0.01, 0.1],
                             bootstrap=BootstrapConfig(**BOOT), extras={"agreement": [s / 2 for _, _, s in kept]})  # fmt: skip
    assert view["metrics"] == direct  # CI included: same bootstrap settings as the loop
    assert res["metrics"]["auc"] == pytest.approx(4 / 6)  # the original is not modified


def test_view_only_when_both_kinds_exist() -> None:
    negatives = MIXED[3:]
    assert ps.paper_view(result("m", [MIXED[0], MIXED[1], *negatives])) is None  # all Table 2
    assert ps.paper_view(result("m", [MIXED[2], *negatives])) is None  # none Table 2
    assert [v for v, _ in ps.views(result("m", MIXED))] == ["all", "paper"]


def test_views_are_ranked_apart_and_shown(tmp_path: Path) -> None:
    paper = [("positive", ("ftll", "prune(rate=0.2)")[i % 2], 0.9) for i in range(12)]
    negatives = [("negative", "SAST", 0.5) for _ in range(12)]
    # A misses every extraction positive; B finds them: B is better on `all`, equal on `paper`. Three trials:
    # ranks are tested from 3 on; six extraction configs make the clusters the bootstrap draws.
    extract = [f"extract(k={i % 6})" for i in range(12)]
    for seed in range(3):
        write(tmp_path, result("a", paper + [("positive", e, 0.0) for e in extract] + negatives, seed=seed))
        write(tmp_path, result("b", paper + [("positive", e, 0.9) for e in extract] + negatives, seed=seed))
    board = build_board(tmp_path)
    rows = {(r["positives"], r["method"]): r for r in board.rows.to_dict("records")}
    order = list(zip(board.rows["positives"], board.rows["method"]))
    assert order == [("all", "b"), ("all", "a"), ("paper", "a"), ("paper", "b")]
    assert (rows[("all", "a")]["auc"], rows[("all", "b")]["auc"]) == (0.5, 1.0)
    assert (rows[("paper", "a")]["auc"], rows[("paper", "b")]["auc"]) == (1.0, 1.0)
    assert (rows[("all", "b")]["rank"], rows[("all", "a")]["rank"]) == (1, 2)
    assert (rows[("paper", "a")]["rank"], rows[("paper", "b")]["rank"]) == (1, 1)
    assert rows[("paper", "a")]["n_pos"] == 12 and rows[("all", "a")]["n_pos"] == 24
    assert rows[("paper", "a")]["benchmark"] == rows[("all", "a")]["benchmark"]  # same suspects' bench id
    pairs = {r["positives"]: r for r in board.comparisons.to_dict("records")}
    assert pairs["all"]["distinguishable"] == "yes" and pairs["paper"]["delta_auc"] == 0.0
    md, csv = write_leaderboard(tmp_path)
    text, table = md.read_text(), csv.read_text().splitlines()
    assert "| zoo | dataset | bench | positives | rank |" in text
    assert "`all`: every positive (with extraction etc.)" in text and "(fine-tuning, pruning, adversarial training)" in text
    assert ", positives paper" in text and ", positives all" in text
    assert table[0].startswith("zoo,dataset,benchmark,positives,rank,")
    assert sorted(line.split(",")[3] for line in table[1:]) == ["all", "all", "paper", "paper"]
    comparisons = (tmp_path / "leaderboard_comparisons.csv").read_text().splitlines()
    assert comparisons[0].startswith("zoo,dataset,benchmark,positives,a,b,")
    page = render_site(tmp_path, board)
    assert 'data-key="positives"' in page and 'id="filter-positives"' in page
    assert "6 result file(s)" in page  # each file counted once, though it feeds two views
    # Per-trial details show the view's AUC: 0.5 only for A on `all`; 1.0 for B on `all` and both on `paper`.
    assert page.count("seed=0,source_seed=0: AUC 0.500") == 1 and page.count("seed=0,source_seed=0: AUC 1.000") == 3


def test_quickstart_results_show_both_views() -> None:
    runs = REPO / "results" / "runs" / "quickstart"
    if not runs.is_dir():
        pytest.skip("no published quickstart results")
    rows = build_board(REPO / "results").rows  # reads only
    quick = rows[rows["zoo"] == "quickstart"]
    assert set(quick["positives"]) == {"all", "paper"}
    for method in set(quick["method"]):
        views = quick[quick["method"] == method]
        assert {"all", "paper"} <= set(views["positives"]), method
        assert views[views["positives"] == "paper"]["n_pos"].min() < views[views["positives"] == "all"]["n_pos"].min()
