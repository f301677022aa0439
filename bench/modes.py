"""Model modes: run a block with models in eval mode, then give every submodule its own mode back.

The one place fpbench saves and restores train/eval modes (methods, the oracle, the zoo, training,
attacks). Restoring only the top-level flag is not enough: `model.train(True)` also switches a
submodule the caller had frozen in eval mode (a BatchNorm kept at its statistics while the rest
trains) back to train mode, so its statistics would drift on the next forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def _module_modes(*models: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Every (sub)module of `models` with its `training` flag, parents before children."""
    return [(module, module.training) for model in models for module in model.modules()]


def _restore_modes(saved: list[tuple[nn.Module, bool]]) -> None:
    """Give each module of `_module_modes(...)` its saved flag back (children after parents, so they win)."""
    for module, training in saved:
        module.train(training)


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put `models` in eval mode for the block; afterwards every submodule has its previous mode again.

    Args:
        models: the models to switch; the same module may appear in several of them.
    """
    saved = _module_modes(*models)
    for model in models:
        model.eval()
    try:
        yield
    finally:
        _restore_modes(saved)
