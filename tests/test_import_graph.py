"""The package's shape: no import cycle between its modules (imports inside functions count too), and no
module at the package root but the entry ones; each stage of a run is a package (README "Layout").

    python -m pytest tests/test_import_graph.py -q
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "prefinetune"
ROOT_MODULES = {"__init__.py", "__main__.py"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _owner(name: str, modules: dict) -> str | None:
    """The module `name` (a module, or a name inside one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its text."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefinetune"):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("prefinetune")]
            else:
                continue
            graph[module] |= {t for n in names if (t := _owner(n, modules)) and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert len(graph) > 50 and "prefinetune.run.worker" in graph["prefinetune.run.driver"]
    assert cycles(graph) == []


def test_no_module_at_the_package_root_but_the_entry_ones():
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ROOT_MODULES)
    assert loose == []


def test_the_run_knows_nothing_of_the_layers_above_it():
    """Fine-tuning is a layer above the run: it reaches the driver and the worker loop through their hooks
    (prefinetune/run/hooks.py); nothing under prefinetune/run imports it, nor the command line."""
    graph = import_graph()
    above = ("prefinetune.finetune", "prefinetune.cli")
    reached = {m: sorted(t for t in targets if t.startswith(above))
               for m, targets in graph.items() if m.startswith("prefinetune.run")}
    assert {m: t for m, t in reached.items() if t} == {}
