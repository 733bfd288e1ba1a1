"""The import graph of the core has no cycle, counting every import (at the top of a module or inside a function).

A cycle is how the old cli.py and its stage modules came to import each
other's helpers; Python resolves some cycles and breaks on others, depending
on which module is imported first (`python -m tutor.cli` against `tutor`).
"""

import ast
from pathlib import Path

import tutor

PACKAGE = Path(tutor.__file__).parent


def module_name(root: Path, path: Path) -> str:
    parts = ["tutor", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path, modules: set[str]) -> set[str]:
    """The tutor modules `path` imports: `from .x import y` counts as x.y when that is a module, else x."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def import_cycles(root: Path) -> list[str]:
    files = {module_name(root, p): p for p in root.rglob("*.py")}
    graph = {name: imports_of(root, path, set(files)) for name, path in files.items()}
    # A package's __init__ may import its own submodules (tutor.cli registers its stage modules);
    # a submodule importing its package back is the cycle to catch, so only the downward edge is dropped.
    graph = {name: {m for m in deps if not m.startswith(name + ".")} for name, deps in graph.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_the_core_has_no_import_cycle():
    assert import_cycles(PACKAGE) == []


def test_the_check_finds_a_cycle_even_through_a_function_level_import(tmp_path):
    """The check above can fail: two modules that import each other are found."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import y\n")
    (tmp_path / "c.py").write_text("from . import a\n")
    assert import_cycles(tmp_path) == ["tutor.a -> tutor.b -> tutor.a"]
