"""The package's import graph has no cycles, counting imports inside functions too.

An import moved into a function to dodge a cycle still counts here, so the only way to pass is a
layering where each module imports only modules below it (docs/architecture.md).
"""
from __future__ import annotations

import ast
from pathlib import Path

import serkit

PACKAGE_DIR = Path(serkit.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def serkit_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every serkit module that ``path`` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {target for target in found if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = serkit_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    graph = {"serkit.a": {"serkit.b"}, "serkit.b": {"serkit.c"}, "serkit.c": {"serkit.a"}, "serkit.d": set()}
    assert find_cycle(graph) == ["serkit.a", "serkit.b", "serkit.c", "serkit.a"]
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef late():\n    from serkit import errors\n    from serkit.safe_yaml import load\n")
    known = {"serkit.errors", "serkit.safe_yaml", "serkit.m"}
    assert imported_modules("serkit.m", source, known) == {"serkit.errors", "serkit.safe_yaml"}


def test_the_graph_covers_every_module():
    graph = import_graph()
    assert "serkit.model.registry" in graph and "serkit.bin.train" in graph
    assert "serkit.errors" in graph["serkit.safe_yaml"]
    assert any(graph.values()), "no import found at all: the parser is broken"
