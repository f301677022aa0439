"""The board as Weights & Biases tables: the renderer (no W&B import here; :func:`bench.tracking.log_board`
logs what it returns).

W&B sorts and filters a table itself, so it gets the raw row fields (the column spec's
:func:`~bench.report.columns.frame_fields`, as ``leaderboard.csv`` does), not the formatted cells of
the Markdown and the page: an AUC is a number there, its interval two numbers, a missing value null.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.report.columns import frame_fields
from bench.report.model import COMPARISON_COLUMNS, Board


def _nullable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with NaN / NA as None (W&B stores null; a NaN cell would read as a number)."""
    return frame.astype(object).where(pd.notna(frame), None)


def board_frames(board: Board) -> dict[str, pd.DataFrame]:
    """The board's W&B tables as data frames: ``leaderboard`` (one row per board row, the spec's fields in
    order, ``result_files`` joined with ``;``) and ``comparisons`` (:data:`COMPARISON_COLUMNS`)."""
    rows = board.rows.reindex(columns=frame_fields(board.fpr_targets)).copy()
    rows["result_files"] = [";".join(files) if isinstance(files, (list, tuple)) else files for files in rows["result_files"]]
    comparisons = board.comparisons.reindex(columns=COMPARISON_COLUMNS)
    return {"leaderboard": _nullable(rows), "comparisons": _nullable(comparisons)}


def board_summary(board: Board) -> dict[str, int]:
    """What the run's summary says of the board: how many rows, comparisons and result files."""
    files = {f for files in board.rows.get("result_files", []) for f in files}
    return {"rows": len(board.rows), "comparisons": len(board.comparisons), "result_files": len(files)}


def board_figures(results_dir: str | Path) -> dict[str, Path]:
    """The board's figures already written under ``plots/<zoo>/`` (ROC, scores, heatmaps, the evasion-cost
    heatmap) keyed ``plots/<zoo>/<stem>``, and each row's frontier under ``plots/<zoo>/frontier/`` keyed
    ``plots/<zoo>/frontier/<stem>``; sorted."""
    root = Path(results_dir) / "plots"
    if not root.is_dir():
        return {}
    found = sorted([*root.glob("*/*.png"), *root.glob("*/frontier/*.png")])
    return {f"plots/{p.relative_to(root).with_suffix('').as_posix()}": p for p in found
            if not p.relative_to(root).parts[0].startswith(".")}
