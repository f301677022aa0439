"""Training progress that reads well in a log file: one line per epoch instead of a redrawn bar.

Lightning's bar redraws itself many times an epoch; on a terminal that is one moving line, but
written to a file (`make quickstart > log`, CI, a batch job) every redraw is kept, which made a
1.6 MB log after six models. `progress_callbacks` keeps Lightning's bar on a terminal and, when
standard output is not one, swaps it for `EpochLines`: one line per epoch with the epoch's loss,
accuracy and seconds, at INFO level (so `-q` silences it like every other progress line).
"""

from __future__ import annotations

import logging
import sys
import time

import pytorch_lightning as pl

from bench.entry import on_terminal

log = logging.getLogger("bench.training")


class EpochLines(pl.Callback):
    """Log `epoch 3/7: loss 0.412, acc 0.861 (2.1 s)` once each training epoch has ended.

    Lightning runs callbacks' `on_train_epoch_end` before the module's, where `ClassifierModule` logs its
    epoch metrics, so an epoch's line is written when the next epoch starts, or when the fit ends.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._ended: tuple[int, float] | None = None  # (epoch, seconds) of the epoch whose line is due

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = (trainer.current_epoch, time.perf_counter() - self._started)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        ended, self._ended = self._ended, None
        if ended is None or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = ", ".join(f"{name.split('/')[-1]} {float(metrics[name]):.3f}" for name in ("train/loss", "train/acc")
                          if name in metrics)
        log.info("  epoch %d/%d: %s (%.1f s)", ended[0] + 1, trainer.max_epochs, shown or "done", ended[1])


def progress_callbacks(progress: bool, terminal: bool | None = None) -> tuple[bool, list[pl.Callback]]:
    """(enable Lightning's bar, extra callbacks) for a fit that should show `progress`."""
    if not progress:
        return False, []
    if on_terminal(sys.stdout) if terminal is None else terminal:  # stdout: where Lightning's bar draws
        return True, []
    return False, [EpochLines()]
