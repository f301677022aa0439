"""Multiplicity control and the rank rule of a board. Rules and reasons: ``docs/statistics.md``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

RANK_LEGEND = ("Rank = 1 + the number of rows significantly better than this row, so every row not told "
               "apart from the best has rank 1 and rows with identical scores always share a rank.")


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control, uniformly stronger than Bonferroni).

    The i-th smallest of m p-values becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; equal p-values
    are ordered by name, so the result does not depend on the mapping's order. Reject at level alpha
    exactly the hypotheses whose adjusted p-value is <= alpha.

    Args:
        p_values: Raw p-value per comparison name, each in [0, 1].

    Returns:
        Adjusted p-value per name, in the input's order: monotone in the raw p-values, capped at 1.

    Raises:
        ValueError: On a p-value that is NaN or outside [0, 1].
    """
    bad = {k: v for k, v in p_values.items() if not 0 <= float(v) <= 1}  # NaN fails both comparisons
    if bad:
        raise ValueError(f"p-values must be numbers in [0, 1]; got {bad}.")
    ordered = sorted(p_values.items(), key=lambda item: (item[1], item[0]))
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - i) * float(p)))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}


def ranks(names: Iterable[str], better: Callable[[str, str], bool]) -> dict[str, int]:
    """Rank = 1 + the number of rows significantly better than this one (:data:`RANK_LEGEND`).

    Every row not shown worse than any other has rank 1; ranks can skip (1, 1, 3), like competition
    ranking, and a row's rank never depends on how the others' ties were broken. Two rows whose
    comparisons agree (e.g. identical scores) share a rank.

    Args:
        names: Row names, unique.
        better: ``better(x, y)`` is True when row x is significantly better than row y.

    Returns:
        Rank per name, in the input's order.

    Raises:
        ValueError: On a repeated name, or a pair that ``better`` says is each better than the other.
    """
    rows = list(names)
    if len(set(rows)) != len(rows):
        raise ValueError(f"row names repeat: {sorted({r for r in rows if rows.count(r) > 1})}; names must be unique.")
    beaten_by = {row: [other for other in rows if other != row and better(other, row)] for row in rows}
    for row, winners in beaten_by.items():
        clash = [w for w in winners if row in beaten_by[w]]
        if clash:
            raise ValueError(f"better() says {row!r} and {clash[0]!r} are each better than the other; "
                             "a significance relation must be antisymmetric.")
    return {row: 1 + len(beaten_by[row]) for row in rows}

