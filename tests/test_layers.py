"""The house's layers: declared for import-linter in pyproject.toml, and free of circles."""

import os
import subprocess
import sys

import grimp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_are_kept():
    """`lint-imports` with the layers of pyproject.toml: a stage importing a workflow or the
    FiftyOne adapter importing the pipeline fails here (function-local imports count)."""
    res = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import "
                          "lint_imports; sys.exit(lint_imports())"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_no_import_circles():
    """No module of dqaudit reaches itself through its imports (the package's lazy
    ``__getattr__`` in ``dqaudit/__init__.py`` aside)."""
    graph = grimp.build_graph("dqaudit")
    edges = {m: graph.find_modules_directly_imported_by(m) - {"dqaudit", m}
             for m in graph.modules if m != "dqaudit"}
    state, circles = {}, []

    def visit(module, path):
        state[module] = "open"
        path.append(module)
        for other in sorted(edges.get(module, ())):
            if state.get(other) == "open":
                circles.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other, path)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert circles == []


def test_the_tree_shows_the_layers():
    """The folders are the layers: at most 12 modules directly in dqaudit/ (the rest live in
    the layer folders lint-imports checks) and no module over 400 lines."""
    top = [f for f in os.listdir(os.path.join(REPO, "dqaudit")) if f.endswith(".py")]
    assert len(top) <= 12, sorted(top)
    long = {}
    for folder, _, files in os.walk(os.path.join(REPO, "dqaudit")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    n = sum(1 for _ in fh)
                if n > 400:
                    long[os.path.relpath(path, REPO)] = n
    assert long == {}


def test_the_plugin_reaches_dqaudit_only_through_its_services():
    """plugins/dqaudit imports dqaudit.cli.app (the App's services: only names in its
    __all__), dqaudit.config and dqaudit.errors, nothing below them, so the stages can move
    without breaking the App."""
    import ast

    import dqaudit.cli.app as services

    allowed = {"dqaudit.config", "dqaudit.errors", "dqaudit.cli.app"}
    with open(os.path.join(REPO, "plugins", "dqaudit", "__init__.py"), encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    seen, wrong = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dqaudit"):
            seen.add(node.module)
            if node.module not in allowed:
                wrong.append(node.module)
            if node.module == "dqaudit.cli.app":
                wrong += [a.name for a in node.names if a.name not in services.__all__]
        elif isinstance(node, ast.Import):
            wrong += [a.name for a in node.names if a.name.startswith("dqaudit")]
    assert wrong == [] and "dqaudit.cli.app" in seen
