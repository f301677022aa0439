"""`ConfigError`, the one error a bad recipe, override or zoo entry raises (the CLI exits 2 on it).

A leaf: it imports nothing of fpbench, so every layer (the zoo planner, the archives, the recipe loader)
raises the same class without importing the layers above it (docs/architecture.md, "Import direction").
`bench.config.ConfigError` is this class, re-exported for callers that import it from there.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe or override is invalid; raised before any work (the CLI exits 2)."""
