"""fpbench: a PyTorch Lightning benchmark for DNN model fingerprinting methods.

The Python API (`bench.api`, docs/byo.md "Python API") is available here, loaded on first use so that
`import bench` stays cheap: `bench.load_recipe`, `bench.build_zoo`, `bench.fingerprint`,
`bench.verify`, `bench.benchmark`, `bench.import_fingerprint`, `bench.load_fingerprint`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
# The distribution pip installs (pyproject.toml's [project] name; "fpbench" on PyPI is an unrelated project):
# what package-metadata reads (`fpbench --version`, provenance) ask for.
DISTRIBUTION = "fpbench-dnn"

API = ("benchmark", "build_zoo", "fingerprint", "import_fingerprint", "load_fingerprint", "load_recipe", "verify")
__all__ = ["DISTRIBUTION", "__version__", *API]


def __getattr__(name: str) -> Any:
    """`bench.<api function>`: imports `bench.api` (torch, Lightning, the registries) only when first asked."""
    if name in API:
        return getattr(importlib.import_module("bench.api"), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
