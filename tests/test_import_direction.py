"""The package's imports run one way: no circles, and no stage imports a later one.

The stages, in the order data flows (retrain/__init__.py's map). A module may import from
its own stage and from earlier ones. `export` comes before `evaluation` and `predict`
because checking an export runs it through predict's classifier.
"""

import ast
import os

import pytest

import retrain

pytestmark = pytest.mark.timeout(60)

STAGES = ["errors", "runtime", "data", "features", "training", "export", "predict", "evaluation", "audit",
          "config", "preflight", "pipeline", "compare", "api", "cli", "__init__", "__main__"]
PACKAGE_DIR = os.path.dirname(retrain.__file__)


def _module_names():
    for root, _, file_names in os.walk(PACKAGE_DIR):
        for file_name in sorted(file_names):
            if file_name.endswith(".py"):
                relative = os.path.relpath(os.path.join(root, file_name), PACKAGE_DIR)
                yield "retrain." + relative[:-3].replace(os.sep, ".")


def _imports(module_name):
    """The retrain modules that module_name imports (at any depth of its code)."""
    path = os.path.join(PACKAGE_DIR, *module_name.split(".")[1:]) + ".py"
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("retrain"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("retrain"))
    return {name for name in found if name in MODULES or name + ".__init__" in MODULES}


MODULES = set(_module_names())


def _stage(module_name):
    parts = module_name.split(".")
    return parts[1] if parts[1] in STAGES else parts[1]


def test_every_module_belongs_to_a_stage():
    assert {_stage(name) for name in MODULES} <= set(STAGES)


def test_no_module_imports_a_later_stage():
    backward = sorted(
        f"{name} imports {imported}" for name in MODULES for imported in _imports(name)
        if imported != "retrain" and STAGES.index(_stage(imported)) > STAGES.index(_stage(name)))
    assert backward == []


def test_there_is_no_import_circle():
    graph = {name: _imports(name) - {"retrain", "retrain.__init__"} for name in MODULES}
    visiting, done, circles = [], set(), []

    def visit(name):
        if name in visiting:
            circles.append(visiting[visiting.index(name):] + [name])
            return
        if name in done:
            return
        visiting.append(name)
        for imported in sorted(graph.get(name, ())):
            visit(imported if imported in graph else imported + ".__init__")
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert circles == []
