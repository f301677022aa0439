"""Progress that reads well in a log (bench.progress): a bar on a terminal, rate-limited lines elsewhere."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from bench.entry import on_terminal
from bench.progress import Progress, counted, duration, progress_line, short_list

LOGGER = "bench.progress"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_the_line_counts_and_estimates_the_rest() -> None:
    assert progress_line("zoo models", 12, 29, 41.0) == "zoo models: 12/29 done, 41 s elapsed, ETA 58 s"  # 41/12*17
    assert progress_line("zoo models", 0, 29, 3.0) == "zoo models: 0/29 done, 3 s elapsed, ETA ?"
    assert progress_line("verifying suspects [adv_tra]", 18, 18, 7.4) == "verifying suspects [adv_tra]: 18/18 done, 7 s elapsed"
    assert progress_line("x", 1, 3, 600.0) == "x: 1/3 done, 10 min elapsed, ETA 20 min"


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (89.0, "89 s"), (600.0, "10 min"), (9000.0, "2.5 h")])
def test_durations_read_as_a_person_says_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_off_a_terminal_lines_are_rate_limited_and_the_last_always_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock, stream = FakeClock(), io.StringIO()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with Progress(6, "zoo models", terminal=False, stream=stream, clock=clock, every=10.0) as progress:
            for step in (1.0, 2.0, 12.0, 13.0, 25.0, 26.0):  # seconds after the start at which a job finishes
                clock.now = 100.0 + step
                progress.update()
    assert _lines(caplog) == [
        "zoo models: 3/6 done, 12 s elapsed, ETA 12 s",  # 10 s after the start: the first line
        "zoo models: 5/6 done, 25 s elapsed, ETA 5 s",  # 10 s after the previous line, not before
        "zoo models: 6/6 done, 26 s elapsed",  # the last, 1 s later, logged anyway
    ]
    assert stream.getvalue() == ""  # no bar drawn


def test_jobs_finishing_together_count_at_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        progress = Progress(4, "zoo models", terminal=False, clock=clock)
        clock.now += 30.0
        progress.update(3)  # three workers returned in one wait
        clock.now += 1.0
        progress.update(1)
    assert _lines(caplog) == ["zoo models: 3/4 done, 30 s elapsed, ETA 10 s", "zoo models: 4/4 done, 31 s elapsed"]


def test_on_a_terminal_it_is_a_tqdm_bar(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with Progress(3, "zoo models", unit="model", terminal=True, stream=stream) as progress:
            progress.update(3)
    drawn = stream.getvalue()
    assert "\r" in drawn and "zoo models" in drawn and "3/3" in drawn and "model" in drawn
    assert _lines(caplog) == []  # the bar, not lines


def test_a_bar_can_be_declined_on_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    """The in-process zoo build logs lines on a terminal too: Lightning's bar is drawing there."""
    stream, clock = io.StringIO(), FakeClock()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with Progress(1, "zoo models", bar=False, terminal=True, stream=stream, clock=clock) as progress:
            progress.update()
    assert stream.getvalue() == "" and _lines(caplog) == ["zoo models: 1/1 done, 0 s elapsed"]


@pytest.mark.parametrize("terminal", [True, False])
def test_disabled_shows_nothing(terminal: bool, caplog: pytest.LogCaptureFixture) -> None:
    stream, clock = io.StringIO(), FakeClock()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        with Progress(2, "zoo models", enabled=False, terminal=terminal, stream=stream, clock=clock) as progress:
            clock.now += 60.0
            progress.update(2)
    assert stream.getvalue() == "" and _lines(caplog) == []
    assert progress.done == 2  # still counted


def test_counted_yields_everything_and_counts_each_item_once_its_work_is_done(caplog: pytest.LogCaptureFixture) -> None:
    clock, seen, lines_before = FakeClock(), [], []
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for item in counted(["a", "b", "c"], "verifying suspects [random]", terminal=False, clock=clock):
            lines_before.append(len(_lines(caplog)))  # an item is not counted while its work runs
            seen.append(item)
            clock.now += 11.0  # each item's work takes longer than the line interval
    assert seen == ["a", "b", "c"] and lines_before == [0, 1, 2]
    assert _lines(caplog) == ["verifying suspects [random]: 1/3 done, 11 s elapsed, ETA 22 s",
                              "verifying suspects [random]: 2/3 done, 22 s elapsed, ETA 11 s",
                              "verifying suspects [random]: 3/3 done, 33 s elapsed"]


def test_counted_closes_its_bar_when_the_loop_fails() -> None:
    stream = io.StringIO()
    with pytest.raises(RuntimeError, match="boom"):
        for _ in counted([1, 2, 3], "zoo models", terminal=True, stream=stream):
            raise RuntimeError("boom")
    assert "0/3" in stream.getvalue() and stream.getvalue().endswith("\n")  # tqdm ends a closed bar's line


def test_short_list_keeps_a_label_on_one_line() -> None:
    assert short_list(["adv_tra", "akh"], "methods") == "adv_tra, akh"
    assert short_list(["a", "b", "c", "d", "e", "f", "g"], "methods") == "7 methods"


def _messages(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> str:
    captured = capsys.readouterr()
    return caplog.text + captured.out + captured.err


def test_a_verification_logged_to_a_file_has_one_overall_line_and_no_redraws(smoke_cfg, smoke_zoo, tmp_path, caplog,
                                                                            capsys) -> None:
    """`fpbench run > log`: the real verification loop counts suspects in lines, never with `\\r` redraws."""
    from bench.config import load_recipe
    from bench.evaluate import run_benchmark
    from tests.conftest import SMOKE, smoke_overrides

    assert not on_terminal(sys.stderr)  # captured: what a log file is
    cfg = load_recipe(SMOKE, [*smoke_overrides(tmp_path), f"paths.zoo_dir={smoke_cfg.paths.zoo_dir}",
                              "methods=[random]", "eval.budgets=[]", "eval.progress=true"])
    with caplog.at_level(logging.INFO):
        run_benchmark(cfg, progress=True)
    suspects = len(smoke_zoo.plan.by_role("positive", "negative"))
    lines = [line for line in _lines(caplog) if line.startswith("verifying suspects [random]: ")]
    assert lines and lines[-1].startswith(f"verifying suspects [random]: {suspects}/{suspects} done, ")
    assert "\r" not in _messages(caplog, capsys)


def test_an_in_process_zoo_build_logs_the_overall_count(tmp_path: Path, caplog, capsys) -> None:
    """The in-process build (compute.workers=1): a line per model started, the overall count as models finish."""
    from bench.config import load_recipe
    from bench.zoo.build import build_zoo
    from tests.conftest import SMOKE, smoke_overrides

    tiny = ["zoo.source.epochs=1", "zoo.negatives=[{kind: SAST, seed: 1, epochs: 1}]",
            "zoo.positives=[{attack: quantize, dtype: int8}]", "compute.workers=1"]
    with caplog.at_level(logging.INFO):
        report = build_zoo(load_recipe(SMOKE, smoke_overrides(tmp_path, *tiny)), progress=True)
    assert len(report.built) == 3
    lines = [line for line in _lines(caplog) if line.startswith("zoo models: ")]
    assert lines and lines[-1].startswith("zoo models: 3/3 done, ")
    assert "\r" not in _messages(caplog, capsys)


def test_library_banners_are_dropped_even_after_lightning_resets_its_level() -> None:
    """Lightning sets its logger back to INFO on import (after the CLI's setup): its banners still stay out
    of the log, its warnings and fpbench's own lines do not."""
    import io
    import logging

    from bench.log_setup import setup_logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    try:
        setup_logging(quiet=False)
        lightning.setLevel(logging.INFO)  # what `import pytorch_lightning` does
        lightning.info("GPU available: False, used: False")
        lightning.warning("a real warning")
        logging.getLogger("bench.zoo.build").warning("fpbench line")
    finally:
        root.removeHandler(handler)
        lightning.setLevel(logging.NOTSET)
    text = stream.getvalue()
    assert "GPU available" not in text and "a real warning" in text and "fpbench line" in text
