"""The process entry of the `fpbench` console script and of `python -m bench`.

`bench.cli` imports torch and every registry (a command that does work then imports Lightning, W&B and
the report layer), which takes seconds; its ``main`` answers Ctrl-C during a command (what was kept,
how to resume), but an interrupt during those imports came before any handler and ended in a 27-line
traceback (or, inside numpy's C extension, in an unrelated ``ImportError``). This module imports
nothing heavy, so its handler is in force from the first instant of the command: an interrupt at any
moment prints one line and exits 130.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

INTERRUPTED = "fpbench: interrupted."  # the first line bench.cli prints for an interrupt during a command too
BAR_SECONDS_OFF_TERMINAL = 30  # progress-bar redraws in a log file: at most one per this many seconds
INTERRUPT_EXIT = 130  # 128 + SIGINT: what a shell reports for a command ended by Ctrl-C


class _ImportInterrupted(Exception):
    """Ctrl-C arrived while `bench.cli` was being imported (whatever the import then raised, if anything)."""


class _SigintRecorder:
    """The SIGINT handler while nothing has run yet: say so in one line and end the process at once.

    It does not raise KeyboardInterrupt into the imports: a library may turn it into another error
    (numpy's extension reports an ``ImportError``), swallow it, or, when it lands inside torch's native
    initialisation, abort the process (exit -6 with a stack dump, seen on a loaded machine). Ending the
    process from the handler (``os._exit``) is safe there: no command has started, nothing is written.
    ``fired`` stays for a caller that replaced the exit (tests).
    """

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.fired = True
        code = _say_interrupted()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing more to say
                stream.flush()
        os._exit(code)


def _guarded(load: Callable[[], T]) -> T:
    """``load()`` with SIGINT recorded: the imports it does may take seconds.

    Raises:
        _ImportInterrupted: when a SIGINT arrived during it (whatever it then raised, if anything).
    """
    recorder = _SigintRecorder()
    installed = False
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # ignored or replaced by the caller: leave it
        with contextlib.suppress(ValueError):  # outside the main thread no handler can be set
            signal.signal(signal.SIGINT, recorder)
            installed = True
    try:
        value = load()
    except BaseException as err:
        if recorder.fired or isinstance(err, KeyboardInterrupt):
            raise _ImportInterrupted from err
        raise
    finally:
        if installed and signal.getsignal(signal.SIGINT) is recorder:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if recorder.fired:  # swallowed by a library: the user still asked to stop
        raise _ImportInterrupted
    return value


def _load_cli() -> Callable[[Sequence[str] | None], int]:
    # optional: imported here on purpose, so that a Ctrl-C during its seconds of imports is caught
    from bench.cli import main as cli_main

    return cli_main


def _import_cli() -> Callable[[Sequence[str] | None], int]:
    """``bench.cli.main``, imported with SIGINT recorded (`_guarded`)."""
    return _guarded(_load_cli)


def _say_interrupted() -> int:
    with contextlib.suppress(ValueError):  # the process is ending: a Ctrl-C in shutdown would print its own traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(INTERRUPTED, file=sys.stderr)
    return INTERRUPT_EXIT


QUICK_FLAGS = ("-h", "--help", "--version")


def _answer_without_imports(argv: list[str]) -> int | None:
    """Help, the version, and a missing or unknown command, from the light parser (`bench.cli_parser`):
    a user is told in a fraction of a second, not after seconds of torch/Lightning/W&B imports.

    Returns:
        The exit code when answered here (argparse's: 0 for help/version, 2 for a usage error), else None.
    """
    # optional: imported here, inside the SIGINT guard (argparse and numpy: a fraction of a second)
    from bench.cli_parser import EXAMPLES, build_parser

    words = [a for a in argv if not a.startswith("-")]
    if argv and not any(a in QUICK_FLAGS for a in argv) and words and words[0] in EXAMPLES:
        return None  # a command: bench.cli parses it (overrides, -q anywhere) and runs it
    try:
        build_parser().parse_args(argv)
    except SystemExit as done:  # what argparse does for --help, --version and a usage error
        return int(done.code or 0)
    return None


def on_terminal(stream: object) -> bool:
    """True when `stream` is a terminal (False without `isatty`, or when it is closed)."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def calm_bars_off_terminal(stream: object = None) -> bool:
    """When stderr (where tqdm draws) is not a terminal, let bars redraw at most every `BAR_SECONDS_OFF_TERMINAL`.

    In a log file every redraw is kept; a bar of a few seconds then leaves two lines (start, end). A
    `TQDM_MININTERVAL` the user set is kept. Lightning's own bar is swapped for epoch lines
    (`bench.epoch_lines`). Returns True when it changed the setting.
    """
    if on_terminal(sys.stderr if stream is None else stream) or "TQDM_MININTERVAL" in os.environ:
        return False
    os.environ["TQDM_MININTERVAL"] = str(BAR_SECONDS_OFF_TERMINAL)  # read by every tqdm bar (tqdm's TQDM_* settings)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Import `bench.cli` and run its ``main``; an interrupt anywhere exits 130 with one line on stderr.

    An interrupt during a command is answered by `bench.cli.main` itself (what was kept, how to
    resume); this catches the rest: one during the imports or argument parsing, or a second Ctrl-C
    while that answer is being written. After an interrupt during the imports the process ends at
    once (``os._exit``): nothing has run yet, and half-imported modules can fail in their exit hooks.

    Args:
        argv: The arguments after the program name (None: ``sys.argv[1:]``).

    Returns:
        The exit code (130 after an interrupt).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    calm_bars_off_terminal()
    try:
        quick = _guarded(lambda: _answer_without_imports(args))
        if quick is not None:
            return quick
        cli_main = _import_cli()
    except (_ImportInterrupted, KeyboardInterrupt):  # KeyboardInterrupt: one just after the import
        code = _say_interrupted()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed or broken stream: nothing more to say
                stream.flush()
        os._exit(code)
    try:
        return cli_main(argv)
    except KeyboardInterrupt:
        return _say_interrupted()
