"""The code in docs/extending.md runs: every marked Python block is executed, so a broken example fails here.

Markers, on the line before a ```python block:
- `<!-- test: run -->`: executed in a fresh namespace, with a temporary directory as the working directory;
- `<!-- test: module NAME.py -->`: written as `NAME.py` into that directory, which is on `sys.path`, so the
  run blocks can import it (a `factory:` architecture names a module this way).

The examples register entries (a method, an attack, an architecture, ...). `bench.registry.Registry` has
no public way to remove one (the library never needs it, and adding it is a behaviour change), so the
fixture `clean_registries` snapshots every family's internal `_items` and `_descriptions` dicts and
puts them back afterwards: the registries that other tests parametrise over stay exactly as they were.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bench.deploy import DEPLOYMENTS
from bench.methods import METHODS
from bench.nets import ARCHS
from bench.perf import BENCHMARKS
from bench.registry import Registry
from bench.zoo.attacks import ATTACKS
from datamodules import DATAMODULES
from tests.conftest import REPO

DOC = REPO / "docs" / "extending.md"
REGISTRIES: dict[str, Registry] = {"METHODS": METHODS, "ATTACKS": ATTACKS, "ARCHS": ARCHS, "DATAMODULES": DATAMODULES,
                                   "DEPLOYMENTS": DEPLOYMENTS, "BENCHMARKS": BENCHMARKS}
_BLOCK = re.compile(r"<!-- test: (run|module (\w+\.py)) -->\n```python\n(.*?)\n```", re.DOTALL)
_HEADING = re.compile(r"^## (.+)$", re.MULTILINE)
# Every extension point of docs/extending.md; each must show at least one example that runs.
SECTIONS = ("A fingerprinting method", "A removal attack", "An architecture", "A datamodule", "A deployment wrapper",
            "A report or board output", "A performance benchmark")


def doc_blocks(text: str) -> list[tuple[str, str, str | None, str]]:
    """(section heading, "run" or "module", module file name or None, code) of every marked block, in order."""
    headings = [(m.start(), m.group(1).strip()) for m in _HEADING.finditer(text)]
    out = []
    for match in _BLOCK.finditer(text):
        section = next((title for start, title in reversed(headings) if start < match.start()), "(top)")
        kind = "run" if match.group(1) == "run" else "module"
        out.append((section, kind, match.group(2), match.group(3)))
    return out


BLOCKS = doc_blocks(DOC.read_text(encoding="utf-8"))
RUN_BLOCKS = [(section, code) for section, kind, _, code in BLOCKS if kind == "run"]
MODULES = {name: code for _, kind, name, code in BLOCKS if kind == "module"}


def _snapshot() -> dict[str, tuple[dict, dict]]:
    return {name: (dict(reg._items), dict(reg._descriptions)) for name, reg in REGISTRIES.items()}


def _restore(saved: dict[str, tuple[dict, dict]]) -> None:
    for name, (items, descriptions) in saved.items():
        REGISTRIES[name]._items.clear()
        REGISTRIES[name]._items.update(items)
        REGISTRIES[name]._descriptions.clear()
        REGISTRIES[name]._descriptions.update(descriptions)


@pytest.fixture
def clean_registries() -> Iterator[None]:
    """Whatever an example registers is removed again (see the module docstring for why this reaches inside)."""
    saved, rng = _snapshot(), torch.get_rng_state()
    try:
        yield
    finally:
        _restore(saved)
        torch.set_rng_state(rng)  # examples seed torch's global RNG to build their toy models


@pytest.fixture
def example_dir(tmp_path: Path) -> Iterator[Path]:
    """A temporary working directory holding the doc's module blocks, on `sys.path` for the duration."""
    for name, code in MODULES.items():
        (tmp_path / name).write_text(code + "\n", encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in MODULES:
            sys.modules.pop(name[:-3], None)
        os.chdir(cwd)


def run_example(code: str) -> None:
    """Execute one example in a fresh namespace, compiled on its own (no `from __future__` of this file)."""
    exec(compile(code, f"{DOC.name} (example)", "exec", dont_inherit=True), {"__name__": "docs_example"})


def test_every_extension_point_has_a_runnable_example():
    shown = {section for section, _ in RUN_BLOCKS}
    missing = [s for s in SECTIONS if s not in shown]
    assert not missing, f"docs/extending.md: no `<!-- test: run -->` example under {missing}"
    assert set(_HEADING.findall(DOC.read_text(encoding="utf-8"))) >= set(SECTIONS)


@pytest.mark.parametrize("code", [c for _, c in RUN_BLOCKS], ids=[f"{i}-{s}" for i, (s, _) in enumerate(RUN_BLOCKS)])
def test_example_runs(code: str, clean_registries: None, example_dir: Path) -> None:
    run_example(code)


def test_examples_leave_the_registries_as_they_were(example_dir: Path) -> None:
    """Running every example and restoring leaves each family's names as before (the fixture can fail)."""
    before = {name: reg.names() for name, reg in REGISTRIES.items()}
    saved, rng = _snapshot(), torch.get_rng_state()
    try:
        for _, code in RUN_BLOCKS:
            run_example(code)
        grew = {name for name, reg in REGISTRIES.items() if reg.names() != before[name]}
        assert grew >= {"METHODS", "ATTACKS", "ARCHS", "DATAMODULES", "DEPLOYMENTS", "BENCHMARKS"}
    finally:
        _restore(saved)
        torch.set_rng_state(rng)
    assert {name: reg.names() for name, reg in REGISTRIES.items()} == before


def test_a_broken_example_fails():
    """The extraction finds a block the test would run, so an error in it reaches pytest."""
    text = "## A datamodule\n<!-- test: run -->\n```python\nraise RuntimeError('broken example')\n```\n"
    (section, kind, _, code), = doc_blocks(text)
    assert (section, kind) == ("A datamodule", "run")
    with pytest.raises(RuntimeError, match="broken example"):
        exec(compile(code, "example", "exec"), {})
