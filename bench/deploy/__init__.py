"""Deployment wrappers (evasion at serving time): the registry `DEPLOYMENTS` and every wrapper.

Importing this package imports every module it holds, sorted by name (`import_submodules`), so
`DEPLOYMENTS` is complete and a new wrapper is one new file that touches no existing one (docs/extending.md,
"A deployment wrapper"). The modules named in `HELPERS` register nothing: `base.py` (the contract),
`suspect.py` (a model behind its chain), `suspects.py` (what the evaluation loop deploys and queries) and
`contract.py` (the checks every wrapper passes); they are imported where they are used.
"""

from __future__ import annotations

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
from bench.deploy.suspect import DeployedSuspect
from bench.deploy.suspects import SplitCache, deploy_suspect, oracle_opener, suspect_chain
from bench.registry import import_submodules

HELPERS = ("base", "contract", "suspect", "suspects")  # modules that register nothing
import_submodules(__name__, __path__, HELPERS)

# Wrappers of installed packages (entry points; docs/extending.md, "From your own package"), on the first read.
DEPLOYMENTS.use_entry_points("fpbench.deployments", Deployment)

__all__ = ["DEPLOYMENTS", "Answer", "DeployedSuspect", "Deployment", "InputTransform", "OutputRestriction",
           "SplitCache", "build_deployment", "chain_label", "deploy_suspect", "oracle_opener", "parse_chain", "suspect_chain"]
