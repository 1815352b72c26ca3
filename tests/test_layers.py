"""The package's import graph keeps its layers: the Flower glue on top (``server_app``, the
in-process runner), the strategy below it, the server recipe below that, the leaf modules at the
bottom; nothing imports back up, and no modules import each other in a loop.

Every import counts, also those inside functions (a lazy import is still a dependency); only
``if TYPE_CHECKING:`` blocks are skipped."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("feda2v_flwr", "strategies")

# Layers from the bottom; a module is in the first layer whose prefix it has, else in "leaf".
COMPOSITION_ROOTS = ("feda2v_flwr.server_app", "feda2v_flwr.inprocess")  # they build the strategy
ENTRY_POINTS = (
    "feda2v_flwr.client_app",
    "feda2v_flwr.launch",
    "feda2v_flwr.preflight",
    "feda2v_flwr.deploy",
    "feda2v_flwr.export",
    "feda2v_flwr.checkpoint_cli",
    "feda2v_flwr.images.cli",
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """{module: the modules of ``packages`` it imports}, read from the source under ``root``."""
    files = {module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from . import x / from .y import z
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                candidates = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names
                ]
            targets |= {_known(c, files) for c in candidates} - {None, name}
        graph[name] = targets
    return graph


def _imports(tree: ast.AST):
    """Every import statement, at any depth, outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def _known(name: str, files: dict) -> str | None:
    """``name`` or its closest enclosing module among ``files`` (None: not ours)."""
    while name and name not in files:
        name = name.rpartition(".")[0]
    return name or None


def layer(module: str) -> str:
    if module.startswith(COMPOSITION_ROOTS):
        return "composition root"
    if module.startswith(ENTRY_POINTS):
        return "entry point"
    if module.startswith("strategies"):
        return "strategy"
    if module.startswith("feda2v_flwr.server"):
        return "server recipe"
    return "leaf"


# Which layers each layer may import (its own included).
ALLOWED = {
    "composition root": {"composition root", "entry point", "strategy", "server recipe", "leaf"},
    "entry point": {"entry point", "server recipe", "leaf"},
    "strategy": {"strategy", "server recipe", "leaf"},
    "server recipe": {"server recipe", "leaf"},
    "leaf": {"leaf"},
}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} ({layer(a)}) imports {b} ({layer(b)})"
        for a, targets in graph.items()
        for b in targets
        if layer(b) not in ALLOWED[layer(a)]
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_nothing_imports_back_up_into_the_strategy_or_the_server_app():
    graph = import_graph(PROJECT)
    assert "strategies.feda2v" in graph and "feda2v_flwr.server.recipe" in graph
    assert upward_imports(graph) == []


def test_no_modules_import_each_other_in_a_loop():
    assert cycles(import_graph(PROJECT)) == []


def test_the_checks_find_an_upward_import_and_a_loop(tmp_path):
    """The two checks above on a made-up tree that breaks both rules (so they can fail)."""
    files = {
        "feda2v_flwr/__init__.py": "",
        "feda2v_flwr/payload.py": "from feda2v_flwr.replies import ReplyChecker\n",
        "feda2v_flwr/replies.py": "def f():\n    from feda2v_flwr import payload\n",
        "feda2v_flwr/server/__init__.py": "",
        "feda2v_flwr/server/recipe.py": "import typing\nif typing.TYPE_CHECKING:\n    import strategies.feda2v\n",
        "feda2v_flwr/server/run_log.py": "from . import recipe\nimport strategies.feda2v\n",
        "strategies/__init__.py": "",
        "strategies/feda2v.py": "from feda2v_flwr.server import run_log\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["feda2v_flwr.server.run_log"] == {"feda2v_flwr.server.recipe", "strategies.feda2v"}
    assert upward_imports(graph) == [
        "feda2v_flwr.server.run_log (server recipe) imports strategies.feda2v (strategy)"
    ]  # the TYPE_CHECKING import of recipe.py does not count
    assert cycles(graph) == [
        ["feda2v_flwr.payload", "feda2v_flwr.replies"],
        ["feda2v_flwr.server.run_log", "strategies.feda2v"],
    ]
