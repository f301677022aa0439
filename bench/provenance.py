"""Provenance of a result: the package versions and the git commit it was computed with.

Informational fields of the result file (``versions``, ``git``): read cheaply (package metadata,
two ``git`` calls), never needed to read a result back.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

_DISTRIBUTIONS = {
    "fpbench": "fpbench",
    "torch": "torch",
    "torchvision": "torchvision",
    "pytorch_lightning": "pytorch-lightning",
    "torchmetrics": "torchmetrics",
    "numpy": "numpy",
    "scikit_learn": "scikit-learn",
    "pandas": "pandas",
    "safetensors": "safetensors",
    "omegaconf": "omegaconf",
    "timm": "timm",
}


def collect_versions() -> dict[str, str | None]:
    """Versions of Python and the packages results depend on (``None`` for ones not installed).

    Returns:
        ``{"python": "3.11.7", "torch": "...", "pytorch_lightning": "...", ...}`` read from package
        metadata, so nothing heavy is imported.
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in _DISTRIBUTIONS.items():
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def _git(path: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30, check=False)


def git_info(path: str | Path = ".") -> dict[str, Any]:
    """The commit checked out at ``path`` and whether tracked files differ from it.

    Published results under ``results/`` are excluded from the dirty check: writing them is what
    a run does, so only changes to the code and recipes count.

    Args:
        path: A folder inside the checkout.

    Returns:
        ``{"commit": sha | None, "dirty": bool | None}``; both ``None`` outside a git checkout or
        without a ``git`` executable.
    """
    try:
        head = _git(path, "rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        diff = _git(path, "diff", "--quiet", "HEAD", "--", ":(top)", ":(exclude,top)results")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    dirty = {0: False, 1: True}.get(diff.returncode)
    return {"commit": head.stdout.strip(), "dirty": dirty}
