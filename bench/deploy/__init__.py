"""Deployment wrappers (evasion at serving time): the registry `DEPLOYMENTS` and every wrapper.

Importing this package registers every wrapper, so the registry is complete (docs/deployment.md).
"""

from bench.deploy import (  # noqa: F401  (imported to register their wrappers)
    bits,
    blur,
    crop,
    jpeg,
    noise,
    query_aware,
    random_labels,
    round,
    top1,
    topk,
)
from bench.deploy.base import (
    DEPLOYMENTS,
    Answer,
    Deployment,
    InputTransform,
    OutputRestriction,
    build_deployment,
    chain_label,
    parse_chain,
)
from bench.deploy.loop import SplitCache, deploy_suspect, oracle_opener, suspect_chain
from bench.deploy.suspect import DeployedSuspect

# Wrappers of installed packages (entry points; docs/extending.md, "From your own package"), on the first read.
DEPLOYMENTS.use_entry_points("fpbench.deployments", Deployment)

__all__ = ["DEPLOYMENTS", "Answer", "DeployedSuspect", "Deployment", "InputTransform", "OutputRestriction",
           "SplitCache", "build_deployment", "chain_label", "deploy_suspect", "oracle_opener", "parse_chain", "suspect_chain"]
