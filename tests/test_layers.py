"""The package's layers, read from its source: imports only run downward, and the core never
reaches Ray.

Every import statement in ``dspex/`` is read with ``ast`` (imports inside functions included,
``if TYPE_CHECKING:`` blocks excluded), and three rules are checked:

- a module imports only modules of its own layer or below (`LAYERS`, bottom first);
- the graph of dspex's top-level subpackages has no cycle;
- no module of the functional core imports a module that imports ``ray``, directly or through
  other dspex modules.

A package's lazy re-export table (a module-level ``_EXPORTS`` dict of name -> module) counts as
imports of that package for the layer rule: ``dspex.optimizers.X`` must not lead into the
runtime. ``dspex/__init__.py`` is the public facade over every layer and is not itself one;
neither are the modules that only give DSPy's import paths (`DSPY_PATHS`).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dspex

PACKAGE_DIR = Path(dspex.__file__).resolve().parent

# Bottom first. A module may import from its own layer or from a lower one.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "utils", "observability", "privacy"}),
    frozenset({"signatures", "clients"}),
    frozenset({"primitives"}),
    frozenset({"sandbox"}),  # the Python sandbox: errors/utils below it, modules use it
    frozenset({"adapters", "experimental"}),  # experimental: re-exports of adapter types
    frozenset({"modules", "retrievers", "testing", "streaming"}),  # retrievers: searched by modules.Retrieve
    frozenset({"evaluate"}),
    frozenset({"optimizers"}),
    frozenset({"runtime"}),
    frozenset({"simlm"}),
    frozenset({"dashboard"}),
    frozenset({"cli"}),
)

# The functional core: plain Python values and functions that run without Ray.
CORE: frozenset[str] = frozenset(
    {
        "signatures",
        "clients",
        "primitives",
        "adapters",
        "experimental",
        "modules",
        "retrievers",
        "evaluate",
        "optimizers",
        "observability",
        "privacy",
        "errors",
        "utils",
        "testing",
        "streaming",
        "sandbox",
    }
)

DSPY_PATHS: frozenset[str] = frozenset(
    {
        "dspex.predict",
        "dspex.teleprompt",
        "dspex.utils.dummies",
        "dspex.dsp",
        "dspex.primitives.python_interpreter",
        "dspex.primitives.code_interpreter",
    }
)
"""Modules (a package: with all its modules) that exist only so DSPy code ports by changing
the import (``from dspy.teleprompt import COPRO``): they re-export what lives in a layer,
sit above every layer like the facade, define nothing and are imported by no dspex module
(their own package's lazy table aside)."""


def is_dspy_path(module: str) -> bool:
    return any(module == path or module.startswith(path + ".") for path in DSPY_PATHS)

FACADE = "dspex"


@dataclass(frozen=True)
class Edge:
    """One import: `source` imports `target` at `line` (or names it in its lazy table)."""

    source: str
    target: str
    line: int
    lazy_table: bool = False

    def __str__(self) -> str:
        where = "lazy table" if self.lazy_table else f"line {self.line}"
        return f"{self.source} -> {self.target} ({where})"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch runs
            continue
        stack.extend(ast.iter_child_nodes(node))


def _lazy_table(tree: ast.Module) -> dict[str, str]:
    """A module-level ``_EXPORTS = {name: module}`` table, if the module has one."""
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and node.value is not None:
            table = ast.literal_eval(node.value)
            return {str(k): str(v) for k, v in table.items()}
    return {}


class ImportGraph:
    """Imports between dspex modules, plus which modules import ``ray`` themselves."""

    def __init__(self) -> None:
        self.files = module_files()
        self.trees = {name: ast.parse(path.read_text(), str(path)) for name, path in self.files.items()}
        self.facade_table = _lazy_table(self.trees[FACADE])
        self.edges: list[Edge] = []
        self.imports_ray: dict[str, int] = {}  # module -> line of its first ray import
        for name, tree in self.trees.items():
            self._read(name, tree)

    def _read(self, name: str, tree: ast.Module) -> None:
        is_package = self.files[name].name == "__init__.py"
        for node in _import_nodes(tree):
            for target in self._targets(name, is_package, node):
                if target == "ray" or target.startswith("ray."):
                    self.imports_ray.setdefault(name, node.lineno)
                elif target == FACADE or target.startswith(FACADE + "."):
                    resolved = self._resolve(target)
                    if resolved is not None and resolved != name:
                        self.edges.append(Edge(name, resolved, node.lineno))
        if name != FACADE:
            for module in _lazy_table(tree).values():
                self.edges.append(Edge(name, module, 0, lazy_table=True))

    def _targets(self, name: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            package = name if is_package else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        targets = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.files:
                targets.append(submodule)
            elif base == FACADE and alias.name in self.facade_table:
                # `from dspex import Predict` runs the facade's lazy import of its module.
                targets.append(self.facade_table[alias.name])
            else:
                targets.append(base)
        return targets

    def _resolve(self, target: str) -> str | None:
        """The dspex module `target` names (a missing attribute path maps to its module)."""
        while target and target not in self.files:
            target = target.rpartition(".")[0]
        return target or None

    def real_edges(self) -> list[Edge]:
        """Edges that run code: statements, not lazy tables; pending removals left out."""
        return [e for e in self.edges if not e.lazy_table]

    def ray_importers(self) -> dict[str, list[str]]:
        """Each module that imports ray, directly or through dspex modules, with one chain."""
        imported_by: dict[str, set[str]] = {}
        for edge in self.real_edges():
            imported_by.setdefault(edge.target, set()).add(edge.source)
            # Importing a.b.c runs the __init__ of a.b and a first.
            parent = edge.target.rpartition(".")[0]
            while parent and parent != FACADE:
                imported_by.setdefault(parent, set()).add(edge.source)
                parent = parent.rpartition(".")[0]
        chains = {name: [name, "ray"] for name in self.imports_ray}
        frontier = list(chains)
        while frontier:
            module = frontier.pop()
            for importer in imported_by.get(module, ()):
                if importer not in chains:
                    chains[importer] = [importer, *chains[module]]
                    frontier.append(importer)
        return chains


def top_level(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def layer_of(module: str) -> int | None:
    package = top_level(module)
    for index, members in enumerate(LAYERS):
        if package in members:
            return index
    return None


GRAPH = ImportGraph()


def test_every_subpackage_has_a_layer() -> None:
    placed = {FACADE, *set().union(*LAYERS)}
    unplaced = sorted({top_level(m) for m in GRAPH.files if not is_dspy_path(m)} - placed)
    assert not unplaced, f"add these top-level packages to a layer in LAYERS: {unplaced}"


def test_imports_only_run_downward() -> None:
    upward = [
        str(edge)
        for edge in GRAPH.edges
        if top_level(edge.source) != FACADE
        and not is_dspy_path(edge.source)
        and (layer_of(edge.target) or 0) > (layer_of(edge.source) or 0)
    ]
    assert not upward, "imports of a higher layer:\n" + "\n".join(sorted(set(upward)))


def test_subpackages_form_no_cycle() -> None:
    graph: dict[str, dict[str, Edge]] = {}
    for edge in GRAPH.edges:
        if is_dspy_path(edge.source):
            continue
        source, target = top_level(edge.source), top_level(edge.target)
        if FACADE not in (source, target) and source != target:
            graph.setdefault(source, {}).setdefault(target, edge)
    cycles = _cycles(graph)
    described = [
        " -> ".join(cycle) + "\n    " + "\n    ".join(
            str(graph[a][b]) for a, b in itertools.pairwise(cycle)
        )
        for cycle in cycles
    ]
    assert not cycles, "import cycles between subpackages:\n" + "\n".join(described)


def _cycles(graph: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """One cycle through each strongly connected group of subpackages (Tarjan, then a walk)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for group in groups:
        start = min(group)
        path, seen = [start], {start}
        while True:
            nxt = next(n for n in sorted(graph[path[-1]]) if n in group)
            if nxt in seen:
                cycles.append([*path[path.index(nxt):], nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return cycles


def test_core_never_reaches_ray() -> None:
    chains = GRAPH.ray_importers()
    offending = sorted(
        " -> ".join(chain)
        for module, chain in chains.items()
        if top_level(module) in CORE
    )
    assert not offending, "core modules that import ray:\n" + "\n".join(offending)


def test_dspy_paths_only_re_export_and_nothing_imports_them() -> None:
    assert all(any(is_dspy_path(m) for m in GRAPH.files) for m in DSPY_PATHS)
    importers = sorted(
        str(edge)
        for edge in GRAPH.edges
        if is_dspy_path(edge.target)
        and not is_dspy_path(edge.source)
        and top_level(edge.source) != FACADE
        and not (edge.lazy_table and edge.target.startswith(edge.source + "."))
    )
    assert not importers, "dspex modules importing a DSPy-path alias:\n" + "\n".join(importers)
    defining = sorted(
        f"{name}: {node.name}"
        for name, tree in GRAPH.trees.items()
        if is_dspy_path(name)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    )
    assert not defining, "DSPy-path aliases must only re-export:\n" + "\n".join(defining)
