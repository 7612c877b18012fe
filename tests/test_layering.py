"""The layering the architecture promises, checked on the source: dependencies point one way
(service -> workers -> models), the worker runs without FastAPI, and no two modules import each other
(directly or round a loop), counting imports inside functions too; imports only for type checking are not
dependencies and are left out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = ("models", "workers", "service")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.Module) -> list[str]:
    """Every absolute import in the module, at any depth, except under ``if TYPE_CHECKING:``."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Module -> the project modules and third-party top-level packages it imports."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for imported in _imported_names(ast.parse(path.read_text(), str(path))):
            candidate = imported
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            targets.add(candidate or imported.split(".")[0])
        targets.discard(name)
        edges[name] = targets
    return edges


def _layer(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize(("lower", "forbidden"), [("models", {"workers", "service", "fastapi", "starlette"}),
                                                  ("workers", {"service", "fastapi", "starlette"})])
def test_dependencies_point_one_way(graph: dict[str, set[str]], lower: str, forbidden: set[str]) -> None:
    wrong = sorted(f"{module} imports {target}" for module, targets in graph.items() if _layer(module) == lower
                   for target in targets if _layer(target) in forbidden)
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    """Tarjan's strongly connected components over project modules: every component must be one module."""
    project = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(project[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(project):
        if node not in index:
            connect(node)
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)
