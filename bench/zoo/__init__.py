"""Model zoos: planning, building and loading the source, positive, negative and pool models."""

from bench.zoo.store import TamperedCheckpointError, ZooError, ZooStore, load_model

__all__ = ["TamperedCheckpointError", "ZooError", "ZooStore", "load_model"]
