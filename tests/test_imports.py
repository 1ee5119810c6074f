"""No import circle among toolkit modules, counting every import (lazy ones inside functions and
`if __name__ == "__main__":` blocks too): data flows forward, and a newcomer can read the modules
in an order."""

import ast
import os

TOOLKIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toolkit")


def module_name(path: str) -> str:
    relative = os.path.relpath(path, os.path.dirname(TOOLKIT))[: -len(".py")].split(os.sep)
    return ".".join(relative[:-1] if relative[-1] == "__init__" else relative)


def toolkit_modules() -> dict:
    """{module name: file path} of every module under toolkit/."""
    found = {}
    for directory, _, files in os.walk(TOOLKIT):
        for f in files:
            if f.endswith(".py"):
                found[module_name(os.path.join(directory, f))] = os.path.join(directory, f)
    return found


def imported(path: str, known: set) -> set:
    """The toolkit modules a file imports, wherever the import statement sits."""
    names = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from toolkit import atomic`
    return {n for n in names if n in known}


def import_graph() -> dict:
    modules = toolkit_modules()
    return {name: imported(path, set(modules)) - {name} for name, path in modules.items()}


def find_circle(graph: dict) -> list:
    """One import circle as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return []


def test_the_checker_finds_a_planted_circle():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []


def test_the_graph_sees_lazy_and_from_imports():
    graph = import_graph()
    assert "toolkit.export.run" in graph["toolkit.export.__main__"]  # from toolkit.export.run import ...
    assert "toolkit.export.run" in graph["toolkit.parity"]  # inside main()
    assert "toolkit.data.records" in graph["toolkit.export.gate"]  # from toolkit.data import records


def test_no_import_circle_in_toolkit():
    circle = find_circle(import_graph())
    assert not circle, "import circle: " + " -> ".join(circle)
