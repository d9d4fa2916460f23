"""The rooms of pciback (its sub-packages and top-level modules) import one another without a
cycle, function-level and type-checking imports included: a room may be read, changed and
tested knowing only the rooms below it.

The few imports that still close a cycle are listed in BACK_EDGES, each with why it is there;
a new one fails this test, and so does a listed one that no longer closes a cycle (the list only
shrinks). `python -m tests.test_import_cycles` prints every cycle with the imports making it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "pciback"

# (importer, imported) -> why the import stays although it closes a cycle.
BACK_EDGES = {
    ("engine", "hooks"): (
        "engine.policy imports pciback.hooks for the implementations to register themselves "
        "before it checks them against the compiled policy; the hooks are written against "
        "engine.hookapi"
    ),
    ("ports", "engine"): (
        "ports.sysfs, the real host's bus rather than an interface, walks capabilities with "
        "engine.chain's walk, the one every chain walker uses; the engine reads devices "
        "through ports.bus"
    ),
    ("control", "audit"): (
        "the stub pool restores what a guest can have changed, which audit.restore computes "
        "from the policy over a simulated copy of the device (function-level)"
    ),
    ("daemon", "sim"): (
        "the daemon opens the simulated host when the configuration asks for it (open_sim) "
        "and checks an operator's quirk on a simulated copy (quirk_ignored), both "
        "function-level; SimHost is a façade over the daemon"
    ),
    ("daemon", "xen"): (
        "the daemon opens a real dom0 when the configuration asks for it (open_xen, "
        "function-level); the Xen data path extends the daemon's"
    ),
    ("daemon", "trace"): (
        "the data path records a guest's ops (trace.format, trace.recording); trace replay "
        "serves them again on the simulated host, and the recorder speaks the control socket"
    ),
}

Edges = dict[str, dict[str, list[str]]]  # importer -> imported -> ["path:line", ...]


def _modules() -> Iterator[tuple[str, Path]]:
    """Every module of the package, with generated/ (installed as pciback.generated)."""
    trees = [(PACKAGE, REPO / PACKAGE), (f"{PACKAGE}.generated", REPO / "generated")]
    for prefix, root in trees:
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((prefix, *parts)), path


def _room(module: str, rooms: set[str]) -> str | None:
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2 or parts[1] not in rooms:
        return None
    return parts[1]


def _imported(node: ast.AST, module: str, path: Path) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, *([node.module] if node.module else [])])
    # `from pciback import cli` names a module as much as `import pciback.cli` does.
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def room_graph() -> Edges:
    modules = list(_modules())
    rooms = {name.split(".")[1] for name, _ in modules if name.count(".") >= 1}
    edges: Edges = defaultdict(lambda: defaultdict(list))
    for module, path in modules:
        source = _room(module, rooms)
        if source is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for name in _imported(node, module, path):
                target = _room(name, rooms)
                if target is not None and target != source:
                    where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                    if where not in edges[source][target]:
                        edges[source][target].append(where)
    return edges


def _reaches(edges: Edges, start: str, goal: str) -> bool:
    seen, stack = {start}, [start]
    while stack:
        for nxt in edges.get(stack.pop(), {}):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def cycles(edges: Edges) -> list[list[str]]:
    """The strongly connected rooms (Tarjan), each sorted; only those of two rooms or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(room: str) -> None:
        index[room] = low[room] = len(index)
        stack.append(room)
        for nxt in edges.get(room, {}):
            if nxt not in index:
                visit(nxt)
                low[room] = min(low[room], low[nxt])
            elif nxt in stack:
                low[room] = min(low[room], index[nxt])
        if low[room] == index[room]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == room:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for room in sorted(edges):
        if room not in index:
            visit(room)
    return sorted(found)


def _without_back_edges(edges: Edges) -> Edges:
    return {
        source: {t: w for t, w in targets.items() if (source, t) not in BACK_EDGES}
        for source, targets in edges.items()
    }


def _describe(edges: Edges, group: list[str]) -> str:
    lines = [" <-> ".join(group)]
    for source in group:
        for target, where in sorted(edges.get(source, {}).items()):
            if target in group:
                lines.append(f"  {source} -> {target}: {', '.join(where)}")
    return "\n".join(lines)


def test_no_import_cycle_between_rooms_but_the_listed_ones() -> None:
    edges = room_graph()
    remaining = _without_back_edges(edges)
    assert [_describe(remaining, g) for g in cycles(remaining)] == []


def test_every_listed_back_edge_still_closes_a_cycle() -> None:
    edges = room_graph()
    stale = [
        f"{source} -> {target}"
        for source, target in BACK_EDGES
        if target not in edges.get(source, {}) or not _reaches(edges, target, source)
    ]
    assert stale == [], "no longer a cycle: remove it from BACK_EDGES"


if __name__ == "__main__":
    graph = room_graph()
    for group in cycles(graph):
        print(_describe(graph, group))
