"""Utility beside detection (issue #14 item 3): the W&B per-suspect table carries each suspect's test
accuracy, label agreement with the source and accuracy drop, and a plot shows score against accuracy
drop. W&B is disabled in tests: the table-building function is tested directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.report.plots import has_accuracy, plot_score_vs_accuracy_drop, write_plots
from bench.results import result_path, write_result
from bench.tracking import per_model_table
from tests.test_results import synthetic_result


def with_accuracies(result: dict[str, Any]) -> dict[str, Any]:
    """Give every suspect a test accuracy and source agreement; positives lose accuracy with their index."""
    for i, record in enumerate(result["per_model"]):
        record["test_acc"] = round(0.9 - 0.01 * i, 4) if record["role"] == "positive" else 0.88
        record["source_agreement"] = 0.95 if record["role"] == "positive" else 0.8
    return result


def test_per_model_table_has_accuracy_agreement_and_drop():
    result = with_accuracies(synthetic_result())
    del result["per_model"][-1]["test_acc"]  # a zoo record without an accuracy: the cells stay empty
    columns, rows = per_model_table(result)
    assert columns[:5] == ["model_id", "role", "group", "score", "queries"]
    assert columns[5:] == ["test_acc", "source_agreement", "accuracy_drop"]
    assert len(rows) == len(result["per_model"])
    for row, record in zip(rows[:-1], result["per_model"][:-1], strict=True):
        cell = dict(zip(columns, row, strict=True))
        assert cell["model_id"] == record["model_id"] and cell["score"] == record["score"]
        assert cell["test_acc"] == record["test_acc"] and cell["source_agreement"] == record["source_agreement"]
        assert cell["accuracy_drop"] == pytest.approx(result["zoo"]["source_test_acc"] - record["test_acc"])
    last = dict(zip(columns, rows[-1], strict=True))
    assert last["test_acc"] is None and last["accuracy_drop"] is None and last["source_agreement"] == 0.8


def test_per_model_table_is_a_valid_wandb_table():
    wandb = pytest.importorskip("wandb")
    columns, rows = per_model_table(with_accuracies(synthetic_result()))
    table = wandb.Table(columns=columns, data=rows)
    assert table.columns == columns and len(table.data) == len(rows)


def test_score_vs_accuracy_drop_plot_written_beside_the_others(tmp_path: Path):
    from matplotlib.image import imread

    plain = synthetic_result("ipguard")
    assert not has_accuracy([plain])  # results from before suspects' accuracies were recorded
    write_result(plain, result_path(tmp_path, "tiny", "ipguard", plain["config_sha256"], 0))
    assert [p.name for p in write_plots(tmp_path)] == ["roc.png", "scores_box.png", "groups_heatmap.png"]
    for method in ("adv_tra", "akh"):
        result = with_accuracies(synthetic_result(method))
        write_result(result, result_path(tmp_path, "tiny", method, result["config_sha256"], 0))
    written = write_plots(tmp_path)
    plot = tmp_path / "plots" / "tiny" / "score_vs_accuracy_drop.png"
    assert plot in written and imread(plot).shape[0] > 100
    direct = plot_score_vs_accuracy_drop([with_accuracies(synthetic_result())], tmp_path / "one.png")
    assert direct.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
