"""The shape of the package: no import circle, layers that only import downward, light package
__init__s, few modules at the top, no module over 400 lines or function over 80, every file name
in toolkit.layout. Imports are counted wherever the statement sits (inside functions and
`if __name__ == "__main__":` blocks too)."""

import ast
import os
import subprocess
import sys

import pytest

TOOLKIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toolkit")

# Lower layers never import higher ones: common < data, models < infer < export < train. The
# bottom layer holds the shared vocabulary (config, layout, common/); the entry points (cli, flags,
# the __main__ modules and the top-level commands) sit above everything and nothing imports them.
LAYERS = {"toolkit": 0, "toolkit.config": 0, "toolkit.jobs": 0, "toolkit.layout": 0, "toolkit.common": 0,
          "toolkit.data": 1, "toolkit.models": 1, "toolkit.recipes": 1, "toolkit.deploy": 1, "toolkit.ray": 1,
          "toolkit.infer": 2, "toolkit.export": 3, "toolkit.train": 4}
ENTRY_POINTS = {"toolkit.cli", "toolkit.flags", "toolkit.parity", "toolkit.evaluate", "toolkit.data.convert"}


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
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from toolkit.common import atomic`
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


def is_entry_point(name: str) -> bool:
    return name in ENTRY_POINTS or name.endswith(".__main__")


def layer(name: str) -> int:
    """The layer of a module: that of the longest LAYERS prefix it has."""
    prefixes = [p for p in LAYERS if name == p or name.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)]


def upward_imports(graph: dict) -> list:
    """'a -> b' for every library module a importing an entry point or a module of a higher layer."""
    bad = []
    for name, targets in graph.items():
        if is_entry_point(name):
            continue
        for target in targets:
            if target in ("toolkit",):  # the package itself: __version__
                continue
            if is_entry_point(target) or layer(target) > layer(name):
                bad.append(f"{name} -> {target}")
    return sorted(bad)


def test_the_checkers_find_what_they_look_for():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []
    planted = {"toolkit.infer.predict": {"toolkit.export.run", "toolkit.data.records"}, "toolkit.data.records": {"toolkit.cli"},
               "toolkit.train.run": {"toolkit.export.run"}, "toolkit.export.__main__": {"toolkit.train.run"}}
    assert upward_imports(planted) == ["toolkit.data.records -> toolkit.cli", "toolkit.infer.predict -> toolkit.export.run"]


def test_the_graph_sees_lazy_and_from_imports():
    graph = import_graph()
    assert "toolkit.export.run" in graph["toolkit.export.__main__"]  # inside main()
    assert "toolkit.export.verify" in graph["toolkit.parity"]  # inside main()
    assert "toolkit.data.records" in graph["toolkit.export.gate"]  # from toolkit.data import records


def test_no_import_circle_in_toolkit():
    circle = find_circle(import_graph())
    assert not circle, "import circle: " + " -> ".join(circle)


def test_layers_import_only_downward_and_nothing_imports_an_entry_point():
    assert upward_imports(import_graph()) == []


def test_the_export_imports_no_training_module():
    reach, todo, graph = set(), ["toolkit.export.run", "toolkit.export.verify"], import_graph()
    while todo:
        for target in graph[todo.pop()] - reach:
            reach.add(target)
            todo.append(target)
    assert not [m for m in reach if m.startswith("toolkit.train")]


@pytest.mark.parametrize("package", ["toolkit", "toolkit.common", "toolkit.data", "toolkit.models", "toolkit.train",
                                     "toolkit.export", "toolkit.infer", "toolkit.config", "toolkit.layout", "toolkit.cli",
                                     "toolkit.deploy"])
def test_package_inits_and_the_shared_vocabulary_do_not_import_tensorflow(package):
    code = f"import sys, {package}; print(sorted(m for m in ('tensorflow', 'keras', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=os.path.dirname(TOOLKIT))
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_at_most_ten_modules_directly_under_toolkit():
    top = sorted(f for f in os.listdir(TOOLKIT) if f.endswith(".py"))
    assert len(top) <= 10, top


def test_no_module_over_400_lines_and_no_function_over_80():
    long_modules, long_functions = [], []
    for name, path in toolkit_modules().items():
        source = open(path).read()
        if source.count("\n") > 400:
            long_modules.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_modules and not long_functions, long_modules + long_functions


def _string_constants(tree) -> list:
    """(line, text) of every string constant and f-string piece, docstrings left out."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def layout_names() -> set:
    """Every file or folder name toolkit.layout defines, but those that are also words of the code:
    config sections ("data", "export") and the SavedModel format's name ("saved_model")."""
    from toolkit import layout

    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    names |= {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, dict) for v in v.values()}
    return names - {layout.CONVERTED_DATA, layout.EXPORT, layout.SAVED_MODEL, layout.PREVIOUS_RUN, layout.DAMAGED_CHECKPOINTS,
                    layout.TRITON_VERSION}


def hand_made_names(source: str, names: set) -> list:
    """(line, text) of the string constants that are a layout name, or build a path to one
    ("{dir}/summary.json"); help texts and messages may mention the names in prose."""
    return [(line, text) for line, text in _string_constants(ast.parse(source))
            if text in names or any(f"/{n}" in text and not f"/{n} " in text for n in names if "." in n)]


def test_the_file_name_check_finds_a_name_written_by_hand():
    names = layout_names()
    planted = 'import os\nx = os.path.join(d, "summary.json")\ny = f"{d}/run.json"\nz = "see summary.json for figures"\n'
    assert [line for line, _ in hand_made_names(planted, names)] == [2, 3]


def test_every_file_name_a_run_or_an_export_writes_is_named_in_layout_only():
    names = layout_names()
    assert {"run.json", "summary.json", "model.weights.h5", "export.json", "model.onnx", "labels.txt", "checkpoints"} <= names
    found = [f"{name}:{line}: {text!r}" for name, path in toolkit_modules().items() if name != "toolkit.layout"
             for line, text in hand_made_names(open(path).read(), names)]
    assert not found, found
