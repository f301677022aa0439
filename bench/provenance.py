"""Provenance of a result: the package versions, the git commit and the hardware it was computed with.

Informational fields of the result file (``versions``, ``git``, ``hardware``): read cheaply
(package metadata, two ``git`` calls, ``/proc/cpuinfo``), never needed to read a result back.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench import DISTRIBUTION

_DISTRIBUTIONS = {
    "fpbench": DISTRIBUTION,
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


def _cpu_model() -> str | None:
    """The CPU's marketing name: ``/proc/cpuinfo`` on Linux, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else every CPU)."""
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_capability() -> str:
    """The vector kernels torch's CPU code runs with here ("AVX512", "AVX2", "DEFAULT"; `ATEN_CPU_CAPABILITY` lowers it)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def collect_hardware() -> dict[str, Any]:
    """What the result was computed on: CPU model and cores, GPUs, torch's thread count.

    CPU training is not bit-reproducible across processors, so two results that differ may differ
    only because they ran on different hardware; this field lets a reader see it.

    Returns:
        ``{"cpu": str | None, "cpu_count": int | None, "cpus_available": int | None, "gpus": [names],
        "torch_threads": int, "machine": str, "system": str}``; ``gpus`` is empty without CUDA.
    """
    import torch

    gpus: list[str] = []
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": usable_cpus(),
        "gpus": gpus,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "system": platform.system(),
    }
