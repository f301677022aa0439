"""What this process learnt about W&B: the fallback in force, its failures and where offline runs went.

Kept apart from `bench.tracking` (which imports Lightning's W&B logger and the plots) so that the CLI can
reset and report it around every command without those imports: `fpbench list` and `show` stay fast.
`bench.tracking` re-exports every name here.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("bench.tracking")  # the messages belong to tracking, where users look for them

MODES = ("online", "offline", "disabled")  # from most to least W&B; a fallback only moves right


@dataclass
class _TrackingState:
    """What this process learnt about W&B: the fallback in force and where offline runs went."""

    fallback: str | None = None  # None: the recipe's mode; else "offline" or "disabled" after a failure
    failures: list[str] = field(default_factory=list)  # "what: Type: message", in order
    offline_dirs: list[str] = field(default_factory=list)  # tracking.wandb.dir of every offline run opened


_STATE = _TrackingState()  # one object for the process, emptied in place (modules that imported it see the reset)


def reset() -> None:
    """Forget fallbacks and offline runs (the CLI calls it at the start of each command)."""
    _STATE.fallback = None
    _STATE.failures.clear()
    _STATE.offline_dirs.clear()


def effective_mode(mode: str) -> str:
    """The recipe's `tracking.wandb.mode`, or the fallback a W&B failure put in force if that is stricter."""
    fallback = _STATE.fallback or mode
    return MODES[max(MODES.index(mode), MODES.index(fallback))]


def fall_back(what: str, err: Exception, mode: str) -> str:
    """Record a W&B failure in ``mode``, switch this process to the next mode, log one error; returns it."""
    new = "offline" if mode == "online" else "disabled"
    if MODES.index(new) > MODES.index(_STATE.fallback or "online"):
        _STATE.fallback = new
    lines = str(err).strip().splitlines()
    message = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    _STATE.failures.append(f"{what}: {message}")
    after = ("offline for the rest of this run (`wandb sync` uploads it later)" if new == "offline"
             else "disabled for the rest of this run")
    log.error("W&B failed while %s (%s, mode %s); W&B is %s. Results, zoo and leaderboard files do not depend on "
              "W&B.", what, message, mode, after)
    return new


def sync_lines() -> list[str]:
    """What to tell the user at the end of a command: W&B failures and how to upload the offline runs."""
    lines = []
    if _STATE.failures:
        lines.append(f"W&B failed {len(_STATE.failures)} time(s) (first: {_STATE.failures[0]}); "
                     f"it ran {_STATE.fallback} from then on, no result was lost.")
    for folder in _STATE.offline_dirs:
        runs = f"{shlex.quote(str(Path(folder) / 'wandb'))}/offline-run-*"  # quoted for a shell, the glob left to it
        lines.append(f"W&B runs were logged offline under {Path(folder) / 'wandb'}; upload them with "
                     f"(an account is needed): wandb sync {runs}")
    return lines
