"""The import graph of `adjoint_lab`: layers point one way, and no subpackages import each other
in a cycle. Every import counts, including those inside functions (a lazy import hides a cycle
from Python, not from a reader)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "adjoint_lab"

# What each unit of the package may import (besides itself): core <- data, train <- ssm, cnode,
# parabolic <- tasks, app. `config` is a leaf above `core`; run.py, __main__ and the
# `experiments` entry points belong to the app.
_MODELS = {"core", "data", "train", "config"}
_APP = _MODELS | {"ssm", "cnode", "parabolic", "tasks", "app", "run"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "config": {"core"},
    "data": {"core"},
    "train": {"core", "config"},
    "ssm": _MODELS,
    "cnode": _MODELS,
    "parabolic": _MODELS,
    "tasks": _MODELS | {"ssm", "cnode", "parabolic"},
    "app": _MODELS | {"ssm", "cnode", "parabolic", "tasks", "configs"},
    "run": _APP - {"run"},
    "__main__": _APP,
    "experiments": _APP,
    # The yaml tree (package data) and the root package import nothing of ours: importing
    # `adjoint_lab.core` runs the root `__init__` first.
    "configs": set(),
    "": set(),
}


def module_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports (relative imports resolved)."""
    top = package.name

    def name_of(path: Path) -> str:
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    files = {name_of(path): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in files.items():
        here = (module if path.name == "__init__.py" else module.rpartition(".")[0]).split(".")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                source = ".".join(base + ([node.module] if node.module else []))
                # `from x import y`: y may be a submodule of x, or a name defined in x.
                targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                # The root package only holds the version: `from .. import core` depends on
                # core, not on the root.
                if not target.startswith(f"{top}."):
                    continue
                while target not in files:
                    target = target.rpartition(".")[0]
                if target != module:
                    graph[module].add(target)
    for module in files:
        graph.setdefault(module, set())
    return dict(graph)


def unit_of(module: str) -> str:
    """The subpackage (or top-level module) a module belongs to; "" for the root package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        units[unit_of(module)] |= {unit_of(t) for t in targets} - {unit_of(module)}
    return dict(units)


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(units: dict[str, set[str]]) -> list[str]:
    problems = []
    for unit, targets in sorted(units.items()):
        if unit not in ALLOWED:
            problems.append(f"{unit or '<root>'}: not in ALLOWED; give the new unit its layer")
            continue
        for target in sorted(targets - ALLOWED[unit]):
            problems.append(f"{unit or '<root>'} imports {target}: against the layer order")
    return problems


def test_subpackages_import_only_downwards():
    assert violations(unit_graph(module_graph(PACKAGE))) == []


def test_no_cycle_between_subpackages():
    assert cycles(unit_graph(module_graph(PACKAGE))) == []


def test_no_cycle_between_sibling_modules():
    assert [sorted(c) for c in cycles(module_graph(PACKAGE))] == []


@pytest.fixture
def package_with_a_lazy_upward_import(tmp_path: Path) -> Path:
    """The shape of the old `config` -> `tasks` import: hidden in a function."""
    root = tmp_path / "adjoint_lab"
    files = {
        "__init__.py": "",
        "core/__init__.py": "",
        "config/__init__.py": "from .store import register as register\n",
        "config/schema.py": "from ..core import x\n",
        "config/store.py": "def register():\n    from ..tasks import TASKS\n    return TASKS\n",
        "tasks/__init__.py": "from ..config.schema import Experiment\nTASKS = {}\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checks_catch_a_lazy_upward_import(package_with_a_lazy_upward_import):
    graph = module_graph(package_with_a_lazy_upward_import)
    assert "adjoint_lab.tasks" in graph["adjoint_lab.config.store"]
    units = unit_graph(graph)
    assert violations(units) == ["config imports tasks: against the layer order"]
    assert cycles(units) == [{"config", "tasks"}]
