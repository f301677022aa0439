"""Everything computed from result files: the board, its tables, plots and page, and ``--check``.

Re-exported here, the names a script needs: :func:`build_board` (the :class:`Board` and its
``COMPARISON_COLUMNS``), :func:`write_leaderboard` with :func:`leaderboard_markdown` and
:func:`leaderboard_csv`, :func:`check_results`, the plots (:func:`write_plots` and the three it
draws), :func:`write_site` (the HTML page), :func:`variant_label` and :func:`paper_value`. The
package's three layers (model, columns, renderers) and their modules: docs/architecture.md,
"Results, statistics, reports".
"""

from bench.report.leaderboard import (
    build_board,
    check_results,
    leaderboard_csv,
    leaderboard_markdown,
    write_leaderboard,
)
from bench.report.model import COMPARISON_COLUMNS, Board
from bench.report.plots import plot_group_heatmap, plot_roc, plot_scores_box, write_plots
from bench.report.site import write_site as write_site  # the static page (results/site/)
from bench.report.variants import paper_value, variant_label

__all__ = [
    "COMPARISON_COLUMNS",
    "Board",
    "build_board",
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
