"""Cell primitives of the board's renderers: literal Markdown text, numbers at fixed places, the HTML
bits the page's cells share. No board, no column: :mod:`bench.report.columns` builds cells from these.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any
from urllib.parse import quote

import pandas as pd

from bench.report.row_figures import tie_interval

MISSING = "—"  # an unranked row's rank, a comparison that was not made
WARNING = "⚠"  # marks a row whose fingerprint missed its generation target

_ALWAYS = re.compile(r"([\\|`<>*~])")  # escaped wherever they stand
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # `_` that may open/close emphasis
_LINK = re.compile(r"\](?=[(\[:])")  # `]` that may close a link, an image or a reference
_NEWLINES = re.compile(r"[\r\n]+")


def md_text(text: Any) -> str:
    """``text`` (a name from a recipe or a result file) as literal Markdown in a table cell.

    Backslashes, ``|``, backticks, ``<``, ``>``, ``*`` and ``~`` are always escaped; ``_`` only where
    it could start or end emphasis (not inside a word, so ``adv_tra`` stays as it is); ``[`` and ``]``
    only where they could form a link or image (so ``adv_tra[score=agreement]`` stays as it is);
    newlines become spaces. Plain names come out unchanged.
    """
    out = _NEWLINES.sub(" ", str(text))
    out = _ALWAYS.sub(r"\\\1", out)
    out = _UNDERSCORE.sub(r"\\_", out)
    if _LINK.search(out):
        out = out.replace("[", "\\[").replace("]", "\\]")
    return out


def md_code(text: Any) -> str:
    """``text`` as a Markdown code span that no backtick inside it can close, one line, table-safe."""
    body = _NEWLINES.sub(" ", str(text)).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def md_link(text: Any, target: str) -> str:
    """A Markdown link whose text is escaped and whose target is percent-encoded (plain paths unchanged)."""
    return f"[{md_text(text)}]({quote(target, safe='/._-~')})"


def nan(value: Any) -> float:
    """``value`` as a float, None (a missing number on the page) as NaN."""
    return math.nan if value is None else float(value)


def fmt(value: float | None, decimals: int = 3) -> str:
    """``value`` with ``decimals`` places; "" for None or NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{decimals}f}"


def dash(value: float | None, decimals: int = 3) -> str:
    """:func:`fmt`, with :data:`MISSING` for None or NaN."""
    return fmt(value, decimals) or MISSING


def with_spread(mean: float, std: float) -> str:
    """``0.953 ± 0.012``, or the mean alone without a std; ``n/a`` without a mean."""
    if math.isnan(mean):
        return "n/a"
    return fmt(mean) if math.isnan(std) else f"{fmt(mean)} ± {fmt(std)}"


def ci_text(low: float, high: float, over: str) -> str:
    """``0.714–1.000`` (over trials) or ``0.930–1.000 †`` (one trial: over suspects); "" when none."""
    if math.isnan(low) or math.isnan(high):
        return ""
    return f"{fmt(low)}–{fmt(high)}" + (" †" if over == "suspects" else "")


def rank_text(rank: Any) -> str:
    """The rank as text; :data:`MISSING` for an unranked row."""
    return MISSING if rank is None or pd.isna(rank) else str(int(rank))


def p_text(p_value: float, n_boot: int) -> str:
    """``0.412``; a p-value of 0 as ``<1/n`` (the bootstrap cannot resolve smaller)."""
    if math.isnan(p_value):
        return MISSING
    return f"<{1 / n_boot:.2g}" if p_value == 0 else f"{p_value:.3f}"


def ties_text(row: dict[str, Any]) -> str:
    """`` (ties 0.930–0.975)`` when the row's tie interval is wider than 0.01, else ""."""
    ties = tie_interval(row)
    return "" if ties is None else f" (ties {fmt(ties[0])}–{fmt(ties[1])})"


def auc_text(row: dict[str, Any]) -> str:
    """``0.953 ± 0.012``, then ``(ties 0.930–0.975)`` when the tie interval is wider than 0.01."""
    return with_spread(row["auc"], row["auc_std"]) + ties_text(row)


def breakable(label: str) -> str:
    """Escaped HTML text that may wrap after its commas (long variant labels)."""
    return html.escape(label).replace(",", ",<wbr>")


def href(rel: str) -> str:
    """Link from ``site/index.html`` to ``rel`` (a POSIX path relative to the results dir)."""
    return "../" + quote(rel)
