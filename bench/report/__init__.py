"""Reports from result files: plots (``plots``) and the leaderboard (``leaderboard``)."""

from bench.report.leaderboard import (
    COLUMNS,
    PAPER_TABLE2,
    build_leaderboard,
    check_results,
    leaderboard_csv,
    leaderboard_markdown,
    paper_value,
    write_leaderboard,
)
from bench.report.plots import plot_group_heatmap, plot_roc, plot_scores_box, write_plots
from bench.report.site import write_site as write_site  # the static page (results/site/)

__all__ = [
    "COLUMNS",
    "PAPER_TABLE2",
    "build_leaderboard",
    "check_results",
    "leaderboard_csv",
    "leaderboard_markdown",
    "paper_value",
    "plot_group_heatmap",
    "plot_roc",
    "plot_scores_box",
    "write_leaderboard",
    "write_plots",
]
