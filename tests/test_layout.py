"""The shape of the code: one package per phase, the road running one way.

Read from the source with ``ast`` (every import counts, also those inside functions): no module over
400 lines, no function over 80, no import cycle among ``recipes`` modules, and none among its
sub-packages."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "recipes"
PACKAGES = ("plugins", "config", "planning", "data", "training", "run", "outputs", "builtin", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The recipes modules a module imports (``from a.b import c`` counts a.b.c when c is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(n for n in names if n in modules and n.startswith("recipes"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in PACKAGES else None


def test_no_import_cycle_among_modules():
    graph = _graph()
    # a package's __init__ is imported by every module in it; cycles through it are not real
    graph = {m: {d for d in deps if d.count(".") > 1 or d not in (f"recipes.{p}" for p in PACKAGES)}
             for m, deps in graph.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_import_cycle_among_packages():
    packages: dict[str, set[str]] = {}
    for module, deps in _graph().items():
        source = _package(module)
        if source is None:
            continue
        packages.setdefault(source, set()).update(
            target for target in map(_package, deps) if target is not None and target != source)
    assert _cycle(packages) is None, " -> ".join(_cycle(packages))



# the road, bottom to top: each package imports only packages before it
ORDER = ("plugins", "config", "data", "planning", "training", "run", "outputs", "builtin", "cli")


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} imports {dep}" for module, deps in graph.items() for dep in deps
                  if _package(module) and _package(dep) and ORDER.index(_package(dep)) > ORDER.index(_package(module)))


def test_imports_run_one_way_in_the_documented_order():
    graph = _graph()
    assert sorted(ORDER) == sorted(PACKAGES)
    assert not _upward(graph), _upward(graph)
    # the contract at the very bottom imports no phase (the registry loads the built-ins by their module
    # name, as it loads entry points: that is the plugin mechanism, not an import of a phase)
    assert not [dep for dep in graph["recipes.plugins.hookspecs"] if _package(dep) not in (None, "plugins")]
    # control: the check sees an import that runs upward
    assert _upward({"recipes.data.store": {"recipes.run.manifest"}}) == ["recipes.data.store imports recipes.run.manifest"]


def test_no_module_over_400_lines_and_no_function_over_80():
    long_modules, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def test_every_package_says_what_it_does():
    for package in PACKAGES:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()) == 1, package


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
