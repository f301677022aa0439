"""Configuration checks shared by fingerprinting methods and removal attacks.

Every check raises `ValueError` naming the key (`<method or attack>.<field>`), the bad value and
what is allowed, e.g. `prune.rate=1.0 must be in [0, 1).` or `cae.seeds='every' is not one of
correct, all.`. Config dataclasses call them in `__post_init__`, so a recipe fails before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def check(where: str, value: Any, ok: bool, allowed: str) -> None:
    """Raise unless `ok`: `"{where}={value!r} must be {allowed}."`.

    Args:
        where: the key, e.g. "cae.candidates".
        value: the value given.
        ok: the outcome of the check.
        allowed: what the value must be, e.g. ">= n_fingerprints, or null".
    """
    if not ok:
        raise ValueError(f"{where}={value!r} must be {allowed}.")


def check_choice(where: str, value: Any, allowed: Sequence[str]) -> None:
    """Raise unless `value` is one of `allowed`: `"{where}={value!r} is not one of a, b."`."""
    if value not in allowed:
        raise ValueError(f"{where}={value!r} is not one of {', '.join(allowed)}.")


def check_range(where: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise unless `value` lies in the interval; the message shows it, e.g. `"in [0, 1)"`.

    Args:
        where: the key, e.g. "prune.rate".
        value: the value given.
        low, high: the bounds (None: unbounded on that side).
        low_open, high_open: exclude the bound itself.
    """
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        interval = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        check(where, value, False, f"in {interval}")
