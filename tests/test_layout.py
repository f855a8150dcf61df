"""The house: one way through the modules of quant/, and functions a reader can follow."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60  # the argparse builders (a declaration, not logic) aside


def _imports() -> dict[str, set[str]]:
    """module -> the quant modules it imports, at its top or inside any function."""
    graph = {}
    for f in (ROOT / "quant").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("quant."):
                deps.add(node.module.split(".")[1])
        graph[f.stem] = {d.split(".")[0] for d in deps}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = _imports()
    circles = []

    def walk(start, node, path):
        for n in sorted(graph.get(node, ())):
            if n == start:
                circles.append(" -> ".join(path + [n]))
            elif n not in path and n in graph:
                walk(start, n, path + [n])

    for m in sorted(graph):
        walk(m, m, [m])
    assert not circles, circles


def test_no_function_in_quant_is_longer_than_a_screen():
    long = []
    for f in (ROOT / "quant").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and not node.name.startswith(("build_parser", "_parser")):
                    long.append(f"{f.stem}.{node.name}: {n} lines")
    assert not long, long
