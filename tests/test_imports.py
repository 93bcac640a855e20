"""The package's layers point one way: every module imports on its own, in a fresh interpreter.

A cycle hidden behind a function-local import shows up as soon as any import moves to the top of a
file; importing each module first, alone, makes such a cycle fail here instead of in a user's session.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import planner

PACKAGE_DIR = Path(planner.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="planner.")
                 if m.name != "planner.__main__")  # running it is the CLI itself
# layers in pipeline order; a module may import its own layer or lower ones only
LAYERS = [
    {"planner.paths", "planner.metrics", "planner.schema", "planner.tables", "planner.config", "planner.cluster",
     "planner.splits"},
    {"planner.data"}, {"planner.models"}, {"planner.profile"}, {"planner.plan"}, {"planner.workloads"},
    {"planner.serving"}, {"planner.evaluation"}, {"planner.analysis"}, {"planner.theory"}, {"planner.report"},
    {"planner.commands", "planner.cli", "planner.__main__"},
]


def _layer(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return i
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


# Third-party libraries the driver loads once before forking, so each child pays only for planner's
# own modules; planner itself is never imported in the driver, so every child starts without it.
_DRIVER = """
import importlib, os, sys
for lib in ("numpy", "pandas", "scipy.stats", "pyarrow", "pydantic", "yaml", "matplotlib.pyplot", "tqdm.auto",
            "torch", "torchvision", "transformers", "onnxruntime", "sklearn"):
    try:
        importlib.import_module(lib)
    except Exception:
        pass
assert not any(m == "planner" or m.startswith("planner.") for m in sys.modules)
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            print(f"{name}: {type(exc).__name__}: {exc}", flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print("FAILED", failed)
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", _DRIVER, *MODULES], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported planner module, whether the import sits inside a function) for one source file."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("planner"):
                out.append((child.module, inner))
            elif isinstance(child, ast.Import):
                out.extend((a.name, inner) for a in child.names if a.name.startswith("planner"))
            visit(child, inner)

    visit(tree, False)
    return out


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_down_the_pipeline(module):
    path = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    mine = _layer(module)
    for imported, in_function in _imports(path):
        if imported == "planner":
            continue
        assert _layer(imported) <= mine, f"{module} (layer {mine}) imports {imported} (layer {_layer(imported)})"
        # only the command line and the model zoo import lazily: for start-up time and optional heavy
        # libraries (torch, transformers), never to dodge a cycle
        if in_function:
            assert module.startswith(("planner.commands", "planner.models", "planner.profile.sweep",
                                      "planner.profile.toy")), f"{module} imports {imported} inside a function"
