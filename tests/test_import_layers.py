"""The import picture of src/assay: the results layer at the base imports no torch, the
report reads results only, and no assay modules import each other in a loop."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import assay
import assay.report

SRC = Path(assay.__file__).parent
REPORT_MODULES = sorted(["assay.report"] + [f"assay.report.{m.name}"
                                            for m in pkgutil.iter_modules(assay.report.__path__)])


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package)."""
    found = {}
    for path in SRC.rglob("*.py"):
        parts = ["assay", *path.relative_to(SRC).with_suffix("").parts]
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """What module ``name`` imports anywhere in its file (local imports too): absolute
    dotted names, ``from X import Y`` as ``X.Y`` when that is a module of assay."""
    path, package = MODULES[name]
    here = name.split(".") if package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("module", REPORT_MODULES + ["assay.results", "assay.registry"])
def test_importing_the_report_or_the_results_loads_no_torch(module):
    code = f"import {module}, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


# The torch-free modules of assay the report may use: the results, the registry its formats
# are kept in, and the errors and warnings that both raise.
REPORT_MAY_IMPORT = {"assay.results", "assay.registry", "assay.errors"}


def test_the_report_imports_only_the_results_the_stdlib_matplotlib_and_numpy():
    allowed_outside = set(sys.stdlib_module_names) | {"matplotlib", "numpy"}
    assert len(REPORT_MODULES) >= 4
    for module in REPORT_MODULES:
        bad = sorted(i for i in _imports(module)
                     if not (i in REPORT_MAY_IMPORT or i.startswith("assay.report")
                             or (_top(i) != "assay" and _top(i) in allowed_outside)))
        assert not bad, f"{module} imports {bad}"


def test_the_results_module_imports_no_torch_and_from_assay_only_its_errors():
    imports = _imports("assay.results")
    assert {i for i in imports if _top(i) == "assay"} <= {"assay.errors"}
    assert not {i for i in imports if _top(i) not in sys.stdlib_module_names
                and _top(i) != "assay"}, imports
    assert all(_top(i) in sys.stdlib_module_names for i in _imports("assay.errors"))


def test_the_registry_imports_the_stdlib_and_from_assay_only_its_errors():
    imports = _imports("assay.registry")
    assert {i for i in imports if _top(i) == "assay"} <= {"assay.errors"}
    assert all(_top(i) in sys.stdlib_module_names for i in imports if _top(i) != "assay")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The loops of ``graph`` (Tarjan's strongly connected components of two or more
    nodes, or a node that imports itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_among_assay_modules():
    graph = {m: {i for i in _imports(m) if i in MODULES} for m in MODULES}
    assert not _cycles(graph), f"modules that import each other: {_cycles(graph)}"


def test_the_cycle_finder_sees_loops():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_are_resolved():
    # the parser resolves relative imports, so the loop test above is not vacuous
    assert "assay.core.dataset" in _imports("assay.core.loaders")
    assert "assay.results" in _imports("assay.report.writers")
