"""A count of finished jobs that reads well both on a terminal and in a log file.

Zoo builds (`bench.zoo.build`, `bench.zoo.processes`) and verification (`bench.evaluate`) count
their finished jobs with `Progress`. On a terminal it is a tqdm bar. Written to a file
(`make quickstart > log`, CI, a batch job) a bar keeps every redraw, each a `\\r` fragment, so there
it logs one line per finished job at INFO level (so `-q` silences it, like `bench.epoch_lines`),
at most one every `LINE_SECONDS` and always the last:

    zoo models: 12/29 done, 41 s elapsed, ETA 58 s

The ETA is elapsed / done * remaining ("ETA ?" before the first job finishes). The clock and the
terminal flag are arguments, so the lines are deterministic under test (tests/test_progress.py).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TextIO, TypeVar

from bench.entry import on_terminal

T = TypeVar("T")

log = logging.getLogger(__name__)

LINE_SECONDS = 10.0  # off a terminal: at most one line this often (a 4-minute run leaves ~25, not hundreds)


def duration(seconds: float) -> str:
    """`41 s`, `12 min`, `2.5 h`: a duration as a person reads it in a log line."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(desc: str, done: int, total: int, elapsed: float) -> str:
    """`desc: done/total done, elapsed, ETA` (no ETA once everything is done; `ETA ?` before the first)."""
    text = f"{desc}: {done}/{total} done, {duration(elapsed)} elapsed"
    if done >= total:
        return text
    return f"{text}, ETA {duration(elapsed / done * (total - done)) if done else '?'}"


def draws_bars(stream: object) -> bool:
    """True where a tqdm bar redraws in place: a terminal, or a Jupyter kernel (tqdm.auto's widget)."""
    return on_terminal(stream) or "ipykernel" in sys.modules


class Progress:
    """Count finished jobs: a tqdm bar on a terminal, rate-limited INFO lines anywhere else.

    Use it as a context manager, calling `update(n)` as jobs finish; `counted` wraps a loop.

    Args:
        total: jobs to run.
        desc: what is counted, the line's start (`zoo models`, `verifying suspects [adv_tra]`).
        unit: the bar's unit (`model`).
        enabled: False shows nothing at all (`progress=False`, `eval.progress=false`).
        bar: False logs lines on a terminal too (the in-process zoo build, where Lightning's bar draws).
        terminal: whether `stream` is a terminal; None asks it (`draws_bars`).
        stream: where the bar draws (None: standard error, tqdm's default).
        clock: seconds, monotonic (injected by tests).
        every: off a terminal, the fewest seconds between two lines (the last line is always logged).
    """

    def __init__(self, total: int, desc: str, *, unit: str = "it", enabled: bool = True, bar: bool = True,
                 terminal: bool | None = None, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, every: float = LINE_SECONDS) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self._clock, self._every = clock, every
        self._started = self._last_line = clock()
        self._enabled = enabled
        self._bar: Any = None
        shown = sys.stderr if stream is None else stream
        if enabled and bar and (draws_bars(shown) if terminal is None else terminal):
            from tqdm.auto import tqdm  # only where a bar is drawn

            self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=stream)

    def update(self, n: int = 1) -> None:
        """`n` more jobs finished (failed ones included): redraw the bar, or log a line if one is due."""
        self.done += n
        if not self._enabled or n <= 0:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        if self.done >= self.total or now - self._last_line >= self._every:
            self._last_line = now
            log.info("%s", progress_line(self.desc, self.done, self.total, now - self._started))

    def close(self) -> None:
        """Close the bar (off a terminal there is nothing to close: the last line was logged by `update`)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def counted(items: Sequence[T], desc: str, *, unit: str = "it", enabled: bool = True, terminal: bool | None = None,
            stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> Iterator[T]:
    """Yield `items`, counting one as finished when the loop asks for the next (`Progress`).

    Args:
        items: what the loop runs over.
        desc: what is counted (`verifying suspects [adv_tra]`).
        unit: the bar's unit.
        enabled: False shows nothing.
        terminal, stream, clock: as for `Progress` (tests inject them).
    """
    with Progress(len(items), desc, unit=unit, enabled=enabled, terminal=terminal, stream=stream,
                  clock=clock) as progress:
        for item in items:
            yield item
            progress.update()


def short_list(names: Sequence[str], noun: str, most: int = 3) -> str:
    """`adv_tra, akh` for a few names, `7 methods` (`noun`) for more: a label that fits on a line."""
    return ", ".join(names) if len(names) <= most else f"{len(names)} {noun}"
