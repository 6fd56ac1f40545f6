"""The package's shape, checked: dependencies point one way (foundation ← algorithms ← plots
← apps, the contracts in ``pyproject.toml`` checked by import-linter), no import cycle
between modules, no module-level mutable state.

See docs/architecture.md for the layers and why each rule holds.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("atmospec", "spectractor_bridge")


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_import_contracts_hold():
    """import-linter: the layers, algorithms free of plots and apps, acyclic siblings."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed (pip install -e '.[test]')"
    run = subprocess.run([exe, str(ROOT / "pyproject.toml"), "--no-cache"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph.modules:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(
                        graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_no_import_cycles():
    """No module imports itself back through others (imports inside functions count)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    # A package's __init__ importing its own submodules is how a package exposes its names,
    # not a cycle of dependencies: leave those edges out.
    for module in list(graph.modules):
        for imported in list(graph.find_modules_directly_imported_by(module)):
            if imported.startswith(module + "."):
                graph.remove_import(importer=module, imported=imported)
    assert _cycles(graph) == []


_MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "Counter", "deque"}


def _is_mutable(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp
                  | ast.SetComp):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return name in _MUTABLE_CALLS
    return False


def _module_state_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT)
    problems = []
    for node in tree.body:
        targets: list[ast.expr] = []
        value = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        for target in targets:
            name = getattr(target, "id", None)
            if name == "__all__":
                continue  # the list of public names, by convention; never mutated
            if _is_mutable(value):
                problems.append(f"{rel}:{node.lineno}: module-level mutable {name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            problems.append(f"{rel}:{node.lineno}: global {', '.join(node.names)}")
    return problems


def test_no_module_level_mutable_state():
    """Registries and tables are read-only (tuples, frozensets, MappingProxyType); no
    function rebinds a global (Spectractor's ``parameters`` module is what this avoids)."""
    problems = [p for path in _sources() for p in _module_state_problems(path)]
    assert problems == []


@pytest.mark.parametrize("source", ["X = {}", "X: dict = {}", "X = [1]", "X = set()",
                                    "X = defaultdict(list)", "def f():\n    global X"])
def test_mutable_state_checker_catches(tmp_path, source, monkeypatch):
    """The checker above fails on each kind of mutable module state."""
    path = tmp_path / "m.py"
    path.write_text(source + "\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _module_state_problems(path)


def test_cycle_finder_finds_a_cycle():
    """The cycle search above is not vacuous."""
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]
