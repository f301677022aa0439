"""The oracle enforces the access level a method declares: labels, probabilities, the manifest role."""

from __future__ import annotations

import ast

import pytest
import torch
from torch import nn

from bench.methods import METHODS
from bench.oracle import ACCESS_LEVELS, AccessError, Oracle
from tests.conftest import REPO


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


X = torch.rand(5, 1, 2, 2)


def test_label_access_hides_probabilities_and_the_role():
    oracle = Oracle(_model(), access="label", manifest_role="positive")
    assert oracle.labels(X).shape == (5,)
    with pytest.raises(AccessError, match="access='label'"):
        oracle.probs(X)
    with pytest.raises(AccessError, match="manifest"):
        _ = oracle.manifest_role
    assert oracle.queries == 5  # refused calls are not queries


def test_probs_access_hides_the_role():
    oracle = Oracle(_model(), access="probs", manifest_role="negative")
    assert torch.allclose(oracle.probs(X).sum(1), torch.ones(5))
    with pytest.raises(AccessError, match="access='probs'"):
        _ = oracle.manifest_role


def test_manifest_access_shows_the_role_and_needs_one():
    assert Oracle(_model(), access="manifest", manifest_role="negative").manifest_role == "negative"
    with pytest.raises(RuntimeError, match="without the suspect's manifest role"):
        _ = Oracle(_model(), access="manifest").manifest_role
    with pytest.raises(ValueError, match="Allowed: label, probs, manifest"):
        Oracle(_model(), access="weights")


def test_only_the_guard_declares_manifest_access():
    declared = {name: METHODS.get(name).access for name in METHODS.names()}
    assert set(declared.values()) <= set(ACCESS_LEVELS)
    assert [name for name, access in declared.items() if access == "manifest"] == ["oracle_label"]


def test_the_evaluation_loop_names_no_method():
    """The loop treats every method alike: no registered method's name appears in its code."""
    tree = ast.parse((REPO / "bench" / "evaluate.py").read_text())
    names = set(METHODS.names())
    literals = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names]
    assert not literals, f"bench/evaluate.py special-cases method(s) {literals}; declare it in the method instead"
