"""Reports from result files: plots (``plots``), the leaderboard (``leaderboard``, ``trials``), the page."""

from bench.report.leaderboard import (
    build_board,
    build_leaderboard,
    check_results,
    leaderboard_csv,
    leaderboard_markdown,
    write_leaderboard,
)
from bench.report.model import COLUMNS, COMPARISON_COLUMNS, Board
from bench.report.plots import plot_group_heatmap, plot_roc, plot_scores_box, write_plots
from bench.report.site import write_site as write_site  # the static page (results/site/)
from bench.report.variants import paper_value, variant_label

__all__ = [
    "COLUMNS",
    "COMPARISON_COLUMNS",
    "Board",
    "build_board",
    "build_leaderboard",
    "check_results",
    "leaderboard_csv",
    "leaderboard_markdown",
    "paper_value",
    "plot_group_heatmap",
    "plot_roc",
    "plot_scores_box",
    "variant_label",
    "write_leaderboard",
    "write_plots",
]
