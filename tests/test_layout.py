"""The package's layout: few top-level modules, a docstring per package, imports in one
direction and no import cycle (imports inside functions count; ``if TYPE_CHECKING:`` does not)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import sparsebench

PACKAGE = Path(sparsebench.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(module: str, path: Path) -> set[str]:
    """The sparsebench modules ``module`` imports anywhere in its body, an imported package's
    ``__init__`` included (importing ``a.b.c`` runs ``a.b``), its own ancestors excepted."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if not name or name == module:
            return
        parts = name.split(".")
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in MODULES and not module.startswith(prefix + ".") and prefix != module:
                found.add(prefix)

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                add(alias.name)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".")
            else:
                base = node.module or ""
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


GRAPH = {module: _imported(module, path) for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_among_the_packages_modules():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle_of_three():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_a_package_init_that_imports_its_module_which_imports_it_back_is_a_cycle():
    # The shape the model registry had: models/__init__ imported lenet, which imported
    # register from models/__init__.
    graph = {"sb.models": {"sb.models.lenet"}, "sb.models.lenet": {"sb.models"}}
    assert _cycles(graph) == [["sb.models", "sb.models.lenet"]]


# What each layer may import of sparsebench (beside itself). The commands (train, sweep, report,
# cli, __main__, the package) and paper/ sit on top and may import anything.
MAY_IMPORT = {
    "storage": set(),
    "config": {"storage"},
    "data": {"torch_versions"},
    "models": set(),
    # methods: a method's parameter defaults, for runs written before a parameter existed
    "reporting": {"storage", "config", "training", "methods"},
    "launch": {"storage", "config", "training", "resolve", "protocols", "distributed"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_imports_point_one_way(layer):
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items() if _layer(module) == layer
        for target in targets
        if _layer(target) not in MAY_IMPORT[layer] | {layer}
    )
    assert wrong == []


def test_training_imports_neither_launch_nor_reporting():
    wrong = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() if _layer(m) == "training"
                   for t in ts if _layer(t) in ("launch", "reporting", "paper"))
    assert wrong == []


def test_few_modules_at_the_top_and_a_docstring_per_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 14, top
    for init in PACKAGE.rglob("__init__.py"):
        package = _module_name(init)
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 25, f"{package} has no docstring saying what it holds"


def test_a_slurm_job_unpickles_its_run_job_without_torch():
    # RunJob is what a SLURM job unpickles first: importing it must not pull torch in (a job
    # whose torch is broken still reports why). Checked in a fresh interpreter.
    import subprocess
    import sys

    code = ("import sys; import sparsebench.launch.executors as e; "
            "assert e.RunJob; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_module_imports():
    for module in sorted(MODULES):
        if module.endswith("__main__"):
            continue
        importlib.import_module(module)
