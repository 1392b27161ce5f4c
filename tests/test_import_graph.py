"""The import graph of harness/: no cycles, and nothing imports upward (DESIGN.md, Layout).

Read with `ast` (nothing is imported): every `import harness...` / `from harness... import` of every
module, at module level and inside functions; `if TYPE_CHECKING:` blocks are left out (they never
run). A pathway, a runtime or the probe machinery that imports "upward" would show up here."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"

# Deferred (function-level) imports that still close a cycle, each with why it is left and what
# removes it. Every entry must still exist (a removed edge is deleted here too).
KNOWN_DEFERRED_EDGES = {
    # trust.py imports ArtifactError from artifacts.py; artifacts.py calls trust's ONNX external-data
    # check inside load_artifact. Removed by moving ArtifactError (and its subclasses) to core.py.
    ("harness.artifacts", "harness.trust"),
    # The model registry loads the embedded defaults on first lookup. Removed as pathways/base.py
    # did: importing harness.models.base already runs harness/models/__init__.py, which imports them.
    ("harness.models.base", "harness.models"),
}

# Layers: a module of the key's prefix never imports one of the values' prefixes.
NEVER_IMPORTS = {
    "harness.core": ("harness",),  # imports nothing of qconform's
    "harness.probes": ("harness.pathways", "harness.runtimes", "harness.session", "harness.plugin"),
    "harness.runtimes": ("harness.pathways", "harness.session", "harness.plugin", "harness.cli", "harness.importer", "harness.probes"),
    "harness.pathways": ("harness.session", "harness.plugin", "harness.cli", "harness.importer", "harness.config", "harness.store", "harness.report", "harness.probes"),
    "harness.payloads": ("harness.pathways", "harness.importer", "harness.config", "harness.cli"),
}


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
    graph = import_graph()
    for source, target in KNOWN_DEFERRED_EDGES:
        assert target in graph[source], f"{source} no longer imports {target}: remove it from KNOWN_DEFERRED_EDGES"
        graph[source] = graph[source] - {target}
    assert cycles(graph) == []


def test_the_probe_circle_is_gone():
    """probes.py ran the pathways' operations and imported pathways/tensorrt.py, which imported probes."""
    graph = import_graph()
    assert not any(t.startswith("harness.pathways") for t in graph["harness.probes"]), graph["harness.probes"]
    assert all("harness.probes" not in graph[m] for m in graph if m.startswith("harness.pathways"))


def test_nothing_imports_upward():
    graph = import_graph()
    problems = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        for layer, forbidden in NEVER_IMPORTS.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]
    assert problems == []


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
