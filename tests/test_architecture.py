"""The house's seams, checked on the source (docs/architecture.md describes them).

* the import graph of ``airtable_cached`` has no cycle;
* back-end packages (``store``, ``engine``, ``sync``, ``rules``, ``formula``) never import a
  front-end (``api``, ``orm``, ``http``, ``run``), the wiring (``runtime``) or the commands (``ops``);
* each back-end package imports only the layers beneath it;
* SQL runs only in ``airtable_cached/store/``, and no connection (``.conn``) is touched outside it;
* nothing outside ``engine/`` reaches into the engine's private parts (``engine._anything``);
* the engine, the sync and the front-ends reach a store only through ``store/contract.py`` (and the
  store's shared modules), never a store's own package;
* functions stay small: the median under 10 lines, none over 60 (the formula tokenizer excepted).

Imports inside functions and under ``TYPE_CHECKING`` count: a dependency is a dependency.
"""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "airtable_cached"
FRONT_ENDS = {"api", "orm", "http", "run"}

#: What each back-end package may import besides itself, errors, config and types (shared by all).
ALLOWED = {
    "rules": set(),
    "formula": {"rules"},
    "store": {"rules", "formula"},
    "engine": {"store", "rules", "formula"},
    "sync": {"store", "rules", "formula", "engine"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    found: set[str] = set()
    package = name if name in _packages(known) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # a submodule by name, else a name from the module itself
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def _packages(known: set[str]) -> set[str]:
    return {m.rpartition(".")[0] for m in known if "." in m}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, tree, known) for name, tree in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_import_graph_has_no_cycle(graph):
    assert _cycles(graph) == []


def test_no_back_end_module_imports_a_front_end_the_wiring_or_the_commands(graph):
    wrong = sorted(
        (module, imported)
        for module, imports in graph.items()
        if _top(module) in ALLOWED
        for imported in imports
        if _top(imported) in FRONT_ENDS | {"runtime", "ops"}
    )
    assert wrong == []


def test_each_back_end_package_imports_only_the_layers_beneath_it(graph):
    wrong = sorted(
        (module, imported)
        for module, imports in graph.items()
        if _top(module) in ALLOWED
        for imported in imports
        if _top(imported) not in ALLOWED[_top(module)] | {_top(module), "errors", "config", "types"}
    )
    assert wrong == []


#: What the engine, the sync and the front-ends may import of ``store/``: the contract and the shared
#: modules, never a store's own (``store/sqlite/``, ``store/postgres/``): they are handed a store.
STORE_SEAM = {"airtable_cached.store.contract", "airtable_cached.store.types", "airtable_cached.store.checksum",
              "airtable_cached.store.claims"}


def test_the_engine_the_sync_and_the_front_ends_use_a_store_only_through_its_contract(graph):
    wrong = sorted(
        (module, imported)
        for module, imports in graph.items()
        if _top(module) in {"engine", "sync"} | FRONT_ENDS
        for imported in imports
        if _top(imported) == "store" and imported not in STORE_SEAM
    )
    assert wrong == []


def _calls_sql(tree: ast.Module) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"execute", "executemany", "executescript"}
    ]


def test_sql_runs_only_in_the_store():
    outside = {
        name: lines
        for name, tree in _modules().items()
        if _top(name) not in {"store", "testing"} and (lines := _calls_sql(tree))
    }
    assert outside == {}


def _attributes(tree: ast.Module) -> list[ast.Attribute]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)]


def test_no_connection_is_touched_outside_the_store():
    outside = {
        name: lines
        for name, tree in _modules().items()
        if _top(name) != "store" and (lines := [a.lineno for a in _attributes(tree) if a.attr == "conn"])
    }
    assert outside == {}


def _called_engine(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "engine") or (isinstance(node, ast.Attribute) and node.attr == "engine")


def test_nothing_outside_the_engine_reaches_into_its_private_parts():
    outside = {
        name: lines
        for name, tree in _modules().items()
        if _top(name) != "engine"
        and (lines := [a.lineno for a in _attributes(tree) if a.attr.startswith("_") and _called_engine(a.value)])
    }
    assert outside == {}


def _function_lengths() -> dict[str, int]:
    lengths = {}
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lengths[f"{name}.{node.name}:{node.lineno}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_functions_stay_small():
    lengths = _function_lengths()
    assert statistics.median(lengths.values()) < 10
    too_long = {f: n for f, n in lengths.items() if n > 60 and not f.startswith("airtable_cached.formula.parser.tokenize")}
    assert too_long == {}
