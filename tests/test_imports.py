"""The package structure (docs/architecture.md, "Import direction"): every module imports on its own, the import graph is one-way.

Checks over every module under `bench/` and `datamodules/`:
- each imports first thing, with no other first-party module loaded (a cycle hidden by import
  order breaks there; one subprocess, our modules dropped from `sys.modules` before each);
- statically (`ast`), the graph of module-level imports has no cycle, and no function imports a
  bench/datamodules module unless a comment on that import (or the line above) marks it
  `# optional: <why>` (an optional dependency such as Ray or timm stands behind it);
- dependencies run one way, at any depth of the module-level graph, type-only imports and the
  parent packages an import runs included: nothing under `bench/zoo/` reaches `bench.methods`,
  `bench.deploy` or `bench.config`; the result modules never reach `bench.report`; and a fresh
  `import bench.zoo.plan_base` loads none of the layers above the zoo.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("bench", "datamodules")
OPTIONAL_MARK = "# optional"  # the comment that allows an import inside a function


@dataclass(frozen=True)
class Import:
    """One import statement of `module`, resolved to the first-party modules it loads."""

    module: str
    targets: tuple[str, ...]
    line: int
    in_function: bool
    marked_optional: bool


def module_files(root: Path = REPO) -> dict[str, Path]:
    """Dotted name -> file, for every module of the first-party packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of `from <node.module> import ...` written inside `module`."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The first-party module that `name` (a module or an attribute of one) lives in; None if third-party."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> tuple[str, ...]:
    if isinstance(node, ast.Import):
        found = [_resolve(alias.name, modules) for alias in node.names]
    else:
        base = _absolute(module, modules[module].name == "__init__.py", node)
        # `from pkg import sub` loads the submodule; `from pkg import name` reads pkg itself
        found = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _resolve(base, modules) for a in node.names]
    return tuple(sorted({t for t in found if t and t != module}))


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def parse_imports(module: str, path: Path, modules: dict[str, Path], type_only: bool = False) -> list[Import]:
    """Every first-party import of a module; `if TYPE_CHECKING:` blocks are skipped (never run) unless
    `type_only` (a type-only import is still a dependency of the module's meaning)."""
    lines = path.read_text().splitlines()
    out: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                kept = [*child.body, *child.orelse] if type_only else child.orelse  # `else:` runs
                visit(ast.Module(body=kept, type_ignores=[]), in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = _targets(module, child, modules)
                if targets:
                    near = lines[max(child.lineno - 2, 0):child.end_lineno]
                    out.append(Import(module, targets, child.lineno, in_function,
                                      any(OPTIONAL_MARK in line for line in near)))
                continue
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return out


def all_imports(root: Path = REPO, type_only: bool = False) -> list[Import]:
    modules = module_files(root)
    return [imp for name, path in modules.items() for imp in parse_imports(name, path, modules, type_only)]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as a path [a, b, ..., a], or None (iterative DFS, sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def module_graph(imports: list[Import]) -> dict[str, set[str]]:
    """What each module loads while it is being imported (module-level imports only)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.module, set())
        if not imp.in_function:
            graph[imp.module].update(imp.targets)
    return graph


# -- the checks on the repository ------------------------------------------------------------------
def test_module_level_imports_have_no_cycle():
    cycle = find_cycle(module_graph(all_imports()))
    assert cycle is None, f"Import cycle: {' -> '.join(cycle)}. Move what both need into a module both import."


def test_no_function_level_import_of_a_first_party_module():
    hidden = [f"{imp.module} (line {imp.line}): {', '.join(imp.targets)}"
              for imp in all_imports() if imp.in_function and not imp.marked_optional]
    assert not hidden, ("Imports of bench/datamodules modules inside functions (they hide cycles); move them to the "
                        f"top of the module, or mark an optional dependency with '{OPTIONAL_MARK}: <why>':\n"
                        + "\n".join(hidden))


def _packages(module: str) -> list[str]:
    """The packages Python runs before `module` itself: `bench.zoo.plan` -> bench, bench.zoo."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def dependency_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module-level imports, type-only ones included, each with the parent packages that importing it runs."""
    graph = module_graph(all_imports(root, type_only=True))
    return {name: {p for t in graph.get(name, ()) for p in (*_packages(t), t) if p != name} | set(_packages(name))
            for name in module_files(root)}


def forbidden_path(graph: dict[str, set[str]], start: str, forbidden: tuple[str, ...]) -> list[str] | None:
    """The shortest import chain from `start` to a module of a `forbidden` package, or None (breadth first)."""
    before: dict[str, str | None] = {start: None}
    queue = [start]
    for name in queue:
        if name != start and any(name == f or name.startswith(f + ".") for f in forbidden):
            chain = [name]
            while before[chain[-1]] is not None:
                chain.append(before[chain[-1]])
            return chain[::-1]
        for target in sorted(graph.get(name, ())):
            if target not in before:
                before[target] = name
                queue.append(target)
    return None


ABOVE_THE_ZOO = ("bench.methods", "bench.deploy", "bench.config")
RESULT_MODULES = ("bench.results", "bench.published", "bench.io", "bench.metrics", "bench.stats")
ZOO_MODULES = sorted(m for m in module_files() if m == "bench.zoo" or m.startswith("bench.zoo."))
LOW_MODULES = sorted(m for m in module_files() if any(m == r or m.startswith(r + ".") for r in RESULT_MODULES))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return dependency_graph()


@pytest.mark.parametrize("module", ZOO_MODULES)
def test_the_zoo_never_reaches_methods_deployments_or_the_recipe_loader(graph, module):
    chain = forbidden_path(graph, module, ABOVE_THE_ZOO)
    assert chain is None, (f"{module} imports {chain[-1]} through {' -> '.join(chain)} (type-only imports count): the "
                           "zoo must not depend on bench.methods, bench.deploy or bench.config (docs/architecture.md, "
                           "'Import direction'). Import ConfigError from bench.errors and ModelSpec from "
                           "bench.model_spec, or move what both layers need into a module below both.")


@pytest.mark.parametrize("module", LOW_MODULES)
def test_results_never_reach_the_reports(graph, module):
    chain = forbidden_path(graph, module, ("bench.report",))
    assert chain is None, (f"{module} imports {chain[-1]} through {' -> '.join(chain)} (type-only imports count): "
                           "results are below reports (docs/architecture.md, 'Import direction'); move what both "
                           "need below both (e.g. bench.trial_keys).")


def test_importing_the_zoo_planner_loads_no_layer_above_it():
    """The running interpreter agrees with the static graph: `import bench.zoo.plan_base` alone, afresh."""
    code = ("import json, sys\nimport bench.zoo.plan_base\n"
            "print('LOADED ' + json.dumps(sorted(m for m in sys.modules if m.startswith('bench.'))))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "LOADED " in proc.stdout, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.rsplit("LOADED ", 1)[1])
    above = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in (*ABOVE_THE_ZOO, "bench.report"))]
    assert "bench.zoo.plan_base" in loaded and not above, f"import bench.zoo.plan_base loaded {above}"


FRESH_IMPORTS = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("bench", "datamodules")]:
        del sys.modules[loaded]  # third-party modules (torch, ...) stay: only ours are imported afresh
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
print("FAILED " + json.dumps(failed))
"""


def fresh_import_failures(modules: list[str], root: Path = REPO) -> dict[str, str]:
    """Import each module first thing, with no first-party module loaded before it; name -> traceback."""
    env = {**os.environ, "PYTHONPATH": str(root), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-c", FRESH_IMPORTS, *modules], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "FAILED " in proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout.rsplit("FAILED ", 1)[1])


def test_every_module_imports_first_in_a_fresh_state():
    """Each module imported first must load: a cycle that import order hides fails here."""
    failed = fresh_import_failures(sorted(module_files()))
    assert not failed, "\n".join(f"import {name} failed:\n{trace}" for name, trace in failed.items())


# -- the checker itself, on small made-up packages -------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_a_cycle_through_package_imports(tmp_path):
    root = _write(tmp_path, {"bench/__init__.py": "", "bench/a.py": "from bench.b import x\n",
                             "bench/b.py": "from bench import c\n", "bench/c.py": "import bench.a\n",
                             "datamodules/__init__.py": ""})
    assert find_cycle(module_graph(all_imports(root))) == ["bench.a", "bench.b", "bench.c", "bench.a"]


def test_checker_sees_hidden_imports_and_skips_type_checking(tmp_path):
    root = _write(tmp_path, {
        "bench/__init__.py": "", "datamodules/__init__.py": "",
        "bench/a.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.b import B\n"
                       "def f():\n    from bench.b import g\n    return g\n"
                       "def h():\n    import bench.c  # optional: needs the c extra\n"),
        "bench/b.py": "from bench.a import f\n", "bench/c.py": ""})
    imports = all_imports(root)
    assert find_cycle(module_graph(imports)) is None  # the only b -> a edge is not closed at module level
    hidden = [(i.module, i.line) for i in imports if i.in_function and not i.marked_optional]
    assert hidden == [("bench.a", 5)]


def test_fresh_import_reports_a_cycle_that_import_order_hides(tmp_path):
    """a imports b, which needs a name a defines after that import: `import bench.a` first breaks
    (`import bench.b` first happens to work, so only a fresh import of each module catches it)."""
    root = _write(tmp_path, {"bench/__init__.py": "", "datamodules/__init__.py": "",
                             "bench/a.py": "import bench.b\nVALUE = 1\n", "bench/b.py": "from bench.a import VALUE\n"})
    failed = fresh_import_failures(["bench.a", "bench.b"], root)
    assert list(failed) == ["bench.a"] and "ImportError" in failed["bench.a"]


def test_checker_finds_a_forbidden_module_through_type_only_imports_and_packages(tmp_path):
    """a -> (type-only) b -> c.d, whose package c imports e: a reaches e, and the chain names every step."""
    root = _write(tmp_path, {
        "bench/__init__.py": "", "datamodules/__init__.py": "",
        "bench/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.b import B\n",
        "bench/b.py": "from bench.c.d import D\n", "bench/c/__init__.py": "import bench.e\n", "bench/c/d.py": "",
        "bench/e.py": "", "bench/f.py": "import bench.c.d\n"})
    graph = dependency_graph(root)
    assert forbidden_path(graph, "bench.a", ("bench.e",)) == ["bench.a", "bench.b", "bench.c", "bench.e"]
    assert forbidden_path(graph, "bench.c.d", ("bench.e",)) == ["bench.c.d", "bench.c", "bench.e"]  # its own package
    assert forbidden_path(graph, "bench.f", ("bench.a", "bench.b")) is None
    assert forbidden_path(module_graph(all_imports(root)), "bench.a", ("bench.e",)) is None  # without type-only imports
