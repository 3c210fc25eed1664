"""The import graph of the application's packages: no cycles, and DESIGN.md's "may import" rules.

Read from the source with `ast` (nothing is imported), every import counts: at module level, inside
functions and under TYPE_CHECKING alike, since each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rpc", "schemas", "procedures", "workers", "db", "cli", "devstack")

# DESIGN.md, "Layout": which packages each one must never import.
FORBIDDEN = {
    "workers": {"procedures"},
    "rpc": {"schemas", "procedures", "workers", "db", "cli", "devstack"},
    "schemas": {"rpc", "procedures", "workers", "db", "cli", "devstack"},
    "procedures": {"cli", "devstack"},
    "db": {"cli", "devstack"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {
    _module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
}


def _imported(module: str, path: Path) -> Iterator[str]:
    """The modules of ours that `module` imports: `from a import b` is a.b when that is a module, else a."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from . import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` depends on a.b.c; a name of ours not found as a module is its nearest package.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target


def module_graph() -> dict[str, set[str]]:
    return {module: set(_imported(module, path)) for module, path in MODULES.items()}


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for module, imports in module_graph().items():
        top = module.split(".")[0]
        graph[top] |= {target.split(".")[0] for target in imports} - {top}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that returns to its start, or None."""
    state: dict[str, str] = {}  # "visiting" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "visiting"
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "visiting":
                return [*path[path.index(successor) :], successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_reader_sees_every_package_and_their_imports():
    graph = package_graph()
    assert set(graph) == set(PACKAGES)
    # A few edges the code certainly has: a reader that saw none would pass every rule below.
    assert {"rpc", "schemas", "db", "workers"} <= graph["procedures"]
    assert "db" in graph["workers"] and "procedures" in graph["cli"]
    assert "rpc.errors" in module_graph()["rpc.procedure"] or "rpc.errors" in module_graph()["rpc.invocation"]


def test_no_module_imports_itself_through_others():
    assert find_cycle(module_graph()) is None


def test_no_package_imports_itself_through_others():
    assert find_cycle(package_graph()) is None


def test_each_package_imports_only_what_design_allows():
    graph = package_graph()
    broken = {package: sorted(graph[package] & forbidden) for package, forbidden in FORBIDDEN.items()}
    assert {package: imports for package, imports in broken.items() if imports} == {}


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
