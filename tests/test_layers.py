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
