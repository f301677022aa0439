"""Console logging for fpbench's processes: the CLI's and its zoo worker processes' (one setup for both).

fpbench's own progress lines at INFO (WARNING with `-q`), as bare messages; the training libraries'
banners (Lightning's "GPU available", its tips, the fit-stopped line) and known harmless warnings
silenced, so a log shows fpbench's lines only.
"""

from __future__ import annotations

import logging
import warnings

NOISY_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")
HARMLESS_WARNINGS = (
    ".*does not have many workers.*",
    ".*GPU available but not used.*",
    ".*number of training batches.*",
    ".*treespec, LeafSpec.*",  # Lightning vs newer torch, harmless
)


class _QuietLibraries(logging.Filter):
    """Drop the training libraries' INFO banners whatever level their loggers hold: Lightning sets its own
    logger back to INFO when it is imported, which the CLI does after this setup has run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(NOISY_LOGGERS)


def setup_logging(quiet: bool, worker: bool = False) -> None:
    """Configure the root logger and silence the libraries' banners.

    Args:
        quiet: only warnings and errors (`fpbench -q`).
        worker: a zoo worker process (`bench.zoo.processes`): the driver has already said what the
            data is, so the datamodules' INFO lines are left out too.
    """
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    for noisy in NOISY_LOGGERS + (("datamodules",) if worker else ()):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
            handler.addFilter(_QuietLibraries())
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
