"""Shared fixtures: the smoke recipe and its zoo, built once per test session and reused."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "recipes" / "smoke.yaml"

os.environ.setdefault("WANDB_MODE", "disabled")  # belt and braces: tests never talk to W&B
os.environ.setdefault("WANDB_SILENT", "true")


def sigint_default() -> None:
    """`preexec_fn` of a child a test interrupts: Ctrl-C at its default, even when the test run itself was
    started with SIGINT ignored (a background job of a non-interactive shell, `nohup make test &`), which
    every child would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def smoke_overrides(root: Path, *extra: str) -> list[str]:
    """Point every path of the smoke recipe into `root`, W&B off, no progress bars."""
    return [f"paths.zoo_dir={root / 'zoo'}", f"paths.results_dir={root / 'results'}",
            f"paths.cache_dir={root / 'cache'}", f"paths.data_dir={root / 'data'}",
            "tracking.wandb.mode=disabled", "compute.trainer.enable_progress_bar=false",
            "eval.progress=false", *extra]


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="session")
def smoke_cfg(smoke_root: Path):
    from bench.config import load_recipe

    return load_recipe(SMOKE, smoke_overrides(smoke_root))


@pytest.fixture(scope="session")
def smoke_zoo(smoke_cfg):
    """The smoke zoo (source, every attack, every negative kind), built once for the session."""
    from bench.zoo.build import build_zoo

    return build_zoo(smoke_cfg, progress=False)
