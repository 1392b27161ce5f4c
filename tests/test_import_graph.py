"""The import graph of harness/: no cycles, and nothing imports upward (DESIGN.md, Layout).

Read with `ast` (nothing is imported): every `import harness...` / `from harness... import` of every
module, at module level and inside functions; `if TYPE_CHECKING:` blocks are left out (they never
run). A pathway, a runtime or the probe machinery that imports "upward" would show up here."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"

# Floors, lowest first: a module imports only from its own floor or below (DESIGN.md, Layout).
# core and schema: shared facts; judge: metrics, the metric table, Records, verdict, profiles;
# artifacts: manifest, trust, identity, payload readers; measure: layout checks, localization,
# goldens, timing; models; runtimes; pathways; report; run: probes, store, session, plugin;
# the commands on top.
FLOORS = [
    ("harness.core", "harness.schema", "harness.config"),
    ("harness.judge",),
    ("harness.artifacts",),
    ("harness.measure",),
    ("harness.models",),
    ("harness.runtimes",),
    ("harness.pathways",),
    ("harness.report",),
    ("harness.run",),
    ("harness.cli", "harness.importer", "harness.project_init"),
]


def floor(module: str) -> int:
    for level, prefixes in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} sits on no floor: add it to FLOORS")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(HARNESS.rglob("*.py")):
        parts = path.relative_to(HARNESS.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _statements(body: list[ast.stmt]):
    """Every statement that runs, in functions too; not under `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _statements(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            sub = getattr(node, field, None)
            if isinstance(sub, list):
                yield from _statements(sub)


def import_graph() -> dict[str, set[str]]:
    """harness module -> the harness modules it imports (a name resolves to its longest module prefix)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _statements(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        resolved = {resolve(t) for t in targets if t == "harness" or t.startswith("harness.")}
        graph[name] = {t for t in resolved if t and t != name and t != "harness"}  # harness/__init__.py is empty
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_harness_modules():
    assert cycles(import_graph()) == []


def test_the_probe_circle_is_gone():
    """probes.py ran the pathways' operations and imported pathways/tensorrt.py, which imported probes."""
    graph = import_graph()
    assert not any(t.startswith("harness.pathways") for t in graph["harness.run.probes"]), graph["harness.run.probes"]
    assert all("harness.run.probes" not in graph[m] for m in graph if m.startswith("harness.pathways"))


def test_nothing_imports_upward():
    graph = import_graph()
    problems = [f"{module} (floor {floor(module)}) imports {target} (floor {floor(target)})" for module, targets in graph.items() for target in targets if floor(target) > floor(module)]
    assert problems == [], "\n".join(problems)


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
